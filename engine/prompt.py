"""Step-Audio 2 chat prompts: conversation messages -> prompt segments -> token ids (spec e)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.audio import placeholder_count, split_chunks
from engine.tokens import SpecialTokens
from engine.types import AudioSegment, PromptSegment, TextSegment, TokenSegment

BOT = "<|BOT|>"
EOT = "<|EOT|>"
TTS_START = "<tts_start>"
AUDIO_PATCH = "<audio_patch>"
THINK_OPEN = "\n<think>\n"  # after the role header `<|BOT|>assistant` (spec e.7, HF example)
THINK_CLOSE = "</think>\n\n"


class CallLike(Protocol):
    """A function call as replayed in history (`engine.parser.ToolCall` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> str: ...  # a JSON object as text


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str  # JSON object text, as OpenAI clients send it


@dataclass(frozen=True)
class System:
    text: str


UserPart = str | np.ndarray


@dataclass(frozen=True, eq=False)
class User:
    """A human turn: text and/or 16 kHz mono float32 audio, in the order given."""

    parts: tuple[UserPart, ...]

    def __post_init__(self) -> None:
        parts = self.parts
        if isinstance(parts, str | np.ndarray):
            parts = (parts,)
        checked: list[UserPart] = []
        for part in parts:
            if isinstance(part, str):
                checked.append(part)
                continue
            if not isinstance(part, np.ndarray):
                raise TypeError(f"a user part must be str or np.ndarray, got {type(part)}")
            if part.ndim != 1 or part.size == 0:
                raise ValueError(f"user audio must be non-empty mono [N], got {part.shape}")
            checked.append(np.asarray(part, dtype=np.float32))
        object.__setattr__(self, "parts", tuple(checked))


@dataclass(frozen=True)
class Assistant:
    """An earlier assistant turn: text, or a spoken reply replayed from its exact generated ids.

    `speech_ids` are the ids generated after `<tts_start>` (without the final stop token, as
    `OutputParser.generated_ids` keeps them). `tool_calls` are written after the content; do not
    repeat calls that `speech_ids` already contain.
    """

    text: str = ""
    speech_ids: tuple[int, ...] | None = None
    tool_calls: tuple[CallLike, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.speech_ids is not None and self.text:
            raise ValueError("an Assistant turn has either text or speech_ids, not both")


@dataclass(frozen=True)
class ToolResult:
    """A tool's output, sent back as an `input` turn like the official demos (spec e.6)."""

    name: str
    content: str


Message = System | User | Assistant | ToolResult


def _literal(text: str) -> list[PromptSegment]:
    return [TextSegment(text, literal=True)] if text else []


def _turn(role: str, content: str) -> list[PromptSegment]:
    # Header, content and close as separate pieces: the content is the client's and literal.
    return [TextSegment(f"{BOT}{role}\n"), *_literal(content), TextSegment(EOT)]


def _call_segments(call: CallLike) -> list[PromptSegment]:
    try:
        arguments = json.loads(call.arguments)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"tool call {call.name!r} has invalid JSON arguments: {exc}") from exc
    # History replay writes json.dumps(arguments) (spec e.6).
    return [
        TextSegment("<tool_call>function\n"),
        *_literal(f"{call.name}\n{json.dumps(arguments)}"),
        TextSegment("</tool_call>"),
    ]


def _user_segments(message: User) -> list[PromptSegment]:
    # Piece by piece as the HF reference does: header, each item, then the close (spec e.2).
    segments: list[PromptSegment] = [TextSegment(f"{BOT}human\n")]
    for part in message.parts:
        if isinstance(part, str):
            segments.extend(_literal(part))
        else:
            segments.extend(AudioSegment(chunk) for chunk in split_chunks(part))
    segments.append(TextSegment(EOT))
    return segments


def _assistant_segments(message: Assistant) -> list[PromptSegment]:
    calls = [segment for call in message.tool_calls for segment in _call_segments(call)]
    if message.speech_ids is None:
        head = [TextSegment(f"{BOT}assistant\n"), *_literal(message.text)]
    else:
        # Spoken reply (spec e.3): `<tts_start>` + exact generated ids + `<|EOT|>`.
        head = [
            TextSegment(f"{BOT}assistant\n{TTS_START}"),
            TokenSegment(tuple(int(i) for i in message.speech_ids)),
        ]
    return [*head, *calls, TextSegment(EOT)]


def tools_json(tools: Sequence[dict[str, Any]]) -> str:
    """The OpenAI `tools` list as the model saw it: `", "`/`": "` separators, non-ASCII kept."""
    return json.dumps(list(tools), ensure_ascii=False)


def build_prompt(
    messages: Sequence[Message],
    *,
    tools: Sequence[dict[str, Any]] | None = None,
    speech: bool,
    think: bool = False,
) -> tuple[PromptSegment, ...]:
    """Segments of a Step-Audio 2 prompt asking for the next assistant turn (spec e).

    `speech` ends the prompt with `<|BOT|>assistant\\n<tts_start>` (a spoken reply), otherwise
    with `<|BOT|>assistant\\n`. `think` opens a `<think>` block instead (Think models, spec e.7);
    continue with `think_continuation` once the model has written its thought. Tools (OpenAI
    `tools` list) are declared in a `tool_json_schemas` turn right after the leading system turn.
    """
    segments: list[PromptSegment] = []
    rest = list(messages)
    if rest and isinstance(rest[0], System):
        segments.extend(_turn("system", rest.pop(0).text))
    if tools:
        segments.extend(_turn("tool_json_schemas", tools_json(tools)))
    for message in rest:
        match message:
            case System(text=text):
                segments.extend(_turn("system", text))
            case User():
                segments.extend(_user_segments(message))
            case Assistant():
                segments.extend(_assistant_segments(message))
            case ToolResult(content=content):
                segments.extend(_turn("input", content))
            case _:
                raise TypeError(f"not a conversation message: {type(message).__name__}")
    if think:
        segments.append(TextSegment(f"{BOT}assistant{THINK_OPEN}"))
    else:
        segments.append(TextSegment(f"{BOT}assistant\n" + (TTS_START if speech else "")))
    return tuple(segments)


def think_continuation(thought_ids: Sequence[int], *, speech: bool) -> tuple[PromptSegment, ...]:
    """What to append to a think prompt once the model stopped at `</think>` (spec e.7).

    `thought_ids` are the generated thought without the closing tag; the result closes it and
    asks for the answer (`<tts_start>` when spoken).
    """
    return (
        TokenSegment(tuple(int(i) for i in thought_ids)),
        TextSegment(THINK_CLOSE + (TTS_START if speech else "")),
    )


@dataclass(frozen=True, eq=False)
class PromptIds:
    """Token ids with ONE `<audio_patch>` per audio chunk, and those chunks in order."""

    ids: list[int]
    audios: list[np.ndarray]


def tokenize_prompt(
    segments: Sequence[PromptSegment], tokenizer: Any, special: SpecialTokens
) -> PromptIds:
    """Tokenise each segment on its own (merges never cross segments; special tokens atomic).

    Raises ValueError for bad audio (not mono, empty, longer than one encoder item) or text
    that contains `<audio_patch>` itself (it would not match any audio).
    """
    ids: list[int] = []
    audios: list[np.ndarray] = []
    for segment in segments:
        match segment:
            case TextSegment(text=text, literal=True):
                # Special-token strings in client content stay text (no injected turns).
                ids.extend(tokenizer.encode(text, add_special_tokens=False,
                                            split_special_tokens=True))
            case TextSegment(text=text):
                piece = tokenizer.encode(text, add_special_tokens=False) if text else []
                if special.audio_patch in piece:
                    raise ValueError(f"prompt text contains {AUDIO_PATCH}: {text[:80]!r}")
                ids.extend(piece)
            case TokenSegment(ids=token_ids):
                if special.audio_patch in token_ids:
                    raise ValueError(f"prompt token ids contain {AUDIO_PATCH}")
                ids.extend(int(i) for i in token_ids)
            case AudioSegment(samples=samples):
                samples = np.asarray(samples, dtype=np.float32)
                if samples.ndim != 1:
                    raise ValueError(f"audio must be mono [N], got shape {samples.shape}")
                placeholder_count(len(samples))  # raises for empty or over-long chunks
                ids.append(special.audio_patch)
                audios.append(samples)
            case _:
                raise TypeError(f"not a prompt segment: {type(segment).__name__}")
    return PromptIds(ids=ids, audios=audios)


def expand_audio_placeholders(
    ids: Sequence[int], audios: Sequence[np.ndarray], special: SpecialTokens
) -> list[int]:
    """The model's view: each `<audio_patch>` -> `<audio_start>` + patch x n + `<audio_end>`."""
    n_patches = sum(1 for i in ids if i == special.audio_patch)
    if n_patches != len(audios):
        raise ValueError(f"{n_patches} {AUDIO_PATCH} placeholders for {len(audios)} audio chunks")
    out: list[int] = []
    chunks = iter(audios)
    for token_id in ids:
        if token_id == special.audio_patch:
            count = placeholder_count(len(next(chunks)))
            out.append(special.audio_start)
            out.extend([special.audio_patch] * count)
            out.append(special.audio_end)
        else:
            out.append(int(token_id))
    return out


# Anything that looks like a Step-Audio 2 special token (`<|EOT|>`, `<audio_12>`, `<tts_start>`,
# `</tool_call>`, ...).
_SPECIAL_LIKE = re.compile(r"<(?=\|[^|<>\s]+\|>|/?(?:audio|tts|tool_call|think)[A-Za-z0-9_]*>)")


def _defuse_special_tokens(text: str) -> str:
    """Client text for a server that tokenises the whole string: a zero-width space after `<`
    keeps special-token look-alikes from becoming real special tokens (tokenize_prompt does the
    same with `split_special_tokens`, so this only changes text that tried to inject them)."""
    return _SPECIAL_LIKE.sub("<\u200b", text)


def render_text(segments: Sequence[PromptSegment], tokenizer: Any) -> str:
    """The prompt as text for a remote server: special tokens as strings, audio `<audio_patch>`.

    Token segments are decoded without skipping special tokens; re-tokenising the text may
    merge their bytes differently, which is why in-process engines use `tokenize_prompt`.
    """
    parts: list[str] = []
    for segment in segments:
        match segment:
            case TextSegment(text=text, literal=True):
                parts.append(_defuse_special_tokens(text))
            case TextSegment(text=text):
                parts.append(text)
            case TokenSegment(ids=token_ids):
                parts.append(tokenizer.decode(list(token_ids), skip_special_tokens=False,
                                              clean_up_tokenization_spaces=False))
            case AudioSegment():
                parts.append(AUDIO_PATCH)
            case _:
                raise TypeError(f"not a prompt segment: {type(segment).__name__}")
    return "".join(parts)
