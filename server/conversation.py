"""The conversation of one session: items as the client sees them and as the model replays them."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.prompt import Assistant, Message, System, ToolResult, User
from engine.prompt import FunctionCall as PromptCall
from server.audio_codecs import AudioPayloadError, b64decode_audio
from server.protocol import errors
from server.protocol.formats import AudioFormat
from server.protocol.items import ContentPart, FunctionCallItem, FunctionCallOutputItem, MessageItem
from server.resample import resample

INPUT_RATE = 16_000  # Hz, user audio as kept for the encoder
OUTPUT_RATE = 24_000  # Hz, assistant audio as sent
CODES_PER_SECOND = 25  # speech codes per second of assistant audio (spec f.1)
# Prompt cost estimates for the budget: the encoder gives ~12.5 positions per second of audio
# (spec c: 25 s -> 313), a text item ~1 token per 3 characters, plus each turn's framing tokens.
AUDIO_TOKENS_PER_SECOND = 12.6
CHARS_PER_TOKEN = 3
TURN_OVERHEAD_TOKENS = 6


@dataclass
class UserAudio:
    samples: np.ndarray  # float32 mono at 16 kHz
    transcript: str | None = None


@dataclass
class UserText:
    text: str


@dataclass
class UserMessage:
    id: str
    parts: list[UserAudio | UserText]
    type: Literal["message"] = "message"
    role: Literal["user"] = "user"


@dataclass
class SystemMessage:
    id: str
    text: str
    type: Literal["message"] = "message"
    role: Literal["system"] = "system"


@dataclass
class AssistantMessage:
    """A reply. Spoken replies keep the exact generated ids for replay (spec e.3) and the PCM
    actually sent to the client; a truncation point cuts the views of all three together."""

    id: str
    modality: Literal["audio", "text"]
    full_text: str = ""
    full_speech_ids: tuple[int, ...] = ()
    audio_pcm16: bytearray = field(default_factory=bytearray)  # 24 kHz int16, as sent
    full_audio_codes: int = 0
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"
    truncated_ms: int | None = None
    keep_codes: int | None = None  # speech codes kept by the truncation
    tail_ids: tuple[int, ...] = ()  # appended after a cut (e.g. `<tts_end>`)
    is_audio: Callable[[int], bool] | None = None
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"

    @property
    def sent_ms(self) -> int:
        """Milliseconds of audio sent to the client."""
        return len(self.audio_pcm16) // 2 * 1000 // OUTPUT_RATE

    @property
    def audio(self) -> bytes:
        """The audio the user heard (all that was sent, or up to the truncation point)."""
        if self.truncated_ms is None:
            return bytes(self.audio_pcm16)
        return bytes(self.audio_pcm16[: self.truncated_ms * OUTPUT_RATE // 1000 * 2])

    @property
    def audio_codes(self) -> int:
        return self.full_audio_codes if self.keep_codes is None else self.keep_codes

    @property
    def text(self) -> str:
        if self.keep_codes is None or not self.full_audio_codes:
            return self.full_text
        return self.full_text[: len(self.full_text) * self.keep_codes // self.full_audio_codes]

    @property
    def speech_ids(self) -> tuple[int, ...]:
        if self.keep_codes is None or self.is_audio is None:
            return self.full_speech_ids
        return cut_speech_ids(self.full_speech_ids, self.keep_codes, self.is_audio, self.tail_ids)

    def truncate(self, audio_end_ms: int) -> None:
        """Keep what the user heard: audio to `audio_end_ms`, codes at 25/s, text in proportion.

        Measured from the full reply, so a client's truncate may follow the server's own.
        Raises ValueError when `audio_end_ms` is past the audio sent.
        """
        if audio_end_ms < 0 or audio_end_ms > self.sent_ms:
            raise ValueError(
                f"audio_end_ms {audio_end_ms} is past the audio sent for this item "
                f"({self.sent_ms} ms)"
            )
        self.truncated_ms = audio_end_ms
        self.keep_codes = min(self.full_audio_codes, audio_end_ms * CODES_PER_SECOND // 1000)
        self.status = "incomplete"


@dataclass
class FunctionCall:
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed"] = "completed"
    message_id: str | None = None  # the reply that made the call (its ids already hold it)
    type: Literal["function_call"] = "function_call"


@dataclass
class FunctionCallOutput:
    id: str
    call_id: str
    output: str
    type: Literal["function_call_output"] = "function_call_output"


Item = UserMessage | SystemMessage | AssistantMessage | FunctionCall | FunctionCallOutput


class ItemNotFound(KeyError):
    pass


def cut_speech_ids(
    ids: Sequence[int], keep_codes: int, is_audio: Callable[[int], bool], tail: Sequence[int] = ()
) -> tuple[int, ...]:
    """The generated ids up to (and including) the `keep_codes`-th audio id, then `tail`.

    Text ids that came before the cut stay; the interleave (spec d, TA4) is preserved as
    generated, so the model's history replays exactly what was heard.
    """
    kept: list[int] = []
    seen = 0
    for token in ids:
        if is_audio(token):
            if seen >= keep_codes:
                break
            seen += 1
        kept.append(token)
    return (*kept, *tail)


class Conversation:
    """Ordered items. The client's view keeps every item; the prompt may drop the oldest."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> Item:
        try:
            return self._items[item_id]
        except KeyError:
            raise ItemNotFound(item_id) from None

    def find(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def last_id(self) -> str | None:
        return next(reversed(self._items), None) if self._items else None

    def previous_id(self, item_id: str) -> str | None:
        keys = list(self._items)
        index = keys.index(item_id)
        return keys[index - 1] if index > 0 else None

    def add(self, item: Item, previous_item_id: str | None = None) -> None:
        """Append, or insert after `previous_item_id` ("root" = at the start)."""
        if item.id in self._items:
            raise ValueError(f"duplicate item id {item.id!r}")
        if previous_item_id is None:
            self._items[item.id] = item
            return
        if previous_item_id != "root" and previous_item_id not in self._items:
            raise ItemNotFound(previous_item_id)
        reordered: dict[str, Item] = {}
        if previous_item_id == "root":
            reordered[item.id] = item
        for key, value in self._items.items():
            reordered[key] = value
            if key == previous_item_id:
                reordered[item.id] = item
        self._items = reordered

    def delete(self, item_id: str) -> Item:
        item = self.get(item_id)
        del self._items[item_id]
        return item

    def function_name(self, call_id: str) -> str | None:
        for item in self._items.values():
            if isinstance(item, FunctionCall) and item.call_id == call_id:
                return item.name
        return None


def estimate_tokens(item: Item) -> int:
    """Rough prompt cost of one item (for the prompt budget, not for billing)."""
    match item:
        case UserMessage(parts=parts):
            total = TURN_OVERHEAD_TOKENS
            for part in parts:
                if isinstance(part, UserAudio):
                    total += int(len(part.samples) / INPUT_RATE * AUDIO_TOKENS_PER_SECOND) + 2
                else:
                    total += len(part.text) // CHARS_PER_TOKEN + 1
            return total
        case AssistantMessage():
            body = len(item.speech_ids) if item.speech_ids else len(item.text) // CHARS_PER_TOKEN
            return TURN_OVERHEAD_TOKENS + body
        case SystemMessage(text=text):
            return TURN_OVERHEAD_TOKENS + len(text) // CHARS_PER_TOKEN
        case FunctionCall(arguments=arguments, name=name):
            return TURN_OVERHEAD_TOKENS + (len(arguments) + len(name)) // CHARS_PER_TOKEN
        case FunctionCallOutput(output=output):
            return TURN_OVERHEAD_TOKENS + len(output) // CHARS_PER_TOKEN
    raise TypeError(type(item))


def items_within_budget(items: Sequence[Item], budget: int) -> list[Item]:
    """The newest items whose estimated cost fits `budget`; the oldest leave first.

    A function call output never stays without its call before it (the model would not know
    what it answers), so cutting there drops the output too.
    """
    kept: list[Item] = []
    used = 0
    for item in reversed(items):
        cost = estimate_tokens(item)
        if kept and used + cost > budget:
            break
        kept.append(item)
        used += cost
    kept.reverse()
    while kept and isinstance(kept[0], FunctionCallOutput | AssistantMessage) and len(kept) > 1:
        # Start the prompt at a user turn (or a call) so the model sees a sensible history.
        if isinstance(kept[0], AssistantMessage) and not any(
            isinstance(i, UserMessage) for i in kept[1:]
        ):
            break
        kept.pop(0)
    return kept


class ItemError(ValueError):
    """A client item that cannot be used; `code` and `param` go into the error event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def from_wire(wire: Any, item_id: str, input_format: AudioFormat) -> Item:
    """A client's item (`conversation.item.create`) as kept here; audio decoded to 16 kHz.

    Raises ItemError (with a protocol error code and parameter) for unusable content.
    """
    match wire:
        case FunctionCallItem():
            if not _is_json_object(wire.arguments or "{}"):
                raise ItemError(errors.INVALID_EVENT,
                               "A function_call's arguments must be a JSON object.",
                               "item.arguments")
            return FunctionCall(id=item_id, call_id=wire.call_id, name=wire.name,
                                     arguments=wire.arguments)
        case FunctionCallOutputItem():
            return FunctionCallOutput(id=item_id, call_id=wire.call_id,
                                           output=wire.output)
        case MessageItem(role="system"):
            return SystemMessage(id=item_id,
                                      text="".join(p.text or "" for p in wire.content))
        case MessageItem(role="assistant"):
            text = "".join((p.text or p.transcript or "") for p in wire.content)
            return AssistantMessage(id=item_id, modality="text", full_text=text,
                                         status="completed")
    parts: list[UserAudio | UserText] = []
    for index, part in enumerate(wire.content):
        if part.type == "input_text":
            parts.append(UserText(part.text or ""))
            continue
        if not part.audio:
            raise ItemError(errors.INVALID_EVENT, "An input_audio part needs 'audio'.",
                           f"item.content[{index}].audio")
        try:
            samples = b64decode_audio(part.audio, input_format)
        except AudioPayloadError as exc:
            raise ItemError(exc.code, str(exc), f"item.content[{index}].audio") from None
        audio16 = resample(samples, input_format.sample_rate, INPUT_RATE)
        if audio16.size == 0:
            raise ItemError(errors.INVALID_EVENT, "The input_audio part is empty.",
                           f"item.content[{index}].audio")
        parts.append(UserAudio(audio16, transcript=part.transcript))
    return UserMessage(id=item_id, parts=parts)

def to_wire(item: Item, *, with_audio: bool = False) -> Any:
    """The item as the client sees it; `with_audio` adds the heard audio of spoken replies."""
    match item:
        case UserMessage(parts=parts):
            content = [
                ContentPart(type="input_text", text=p.text) if isinstance(p, UserText)
                else ContentPart(type="input_audio", transcript=p.transcript)
                for p in parts
            ]
            return MessageItem(id=item.id, role="user", content=content)
        case SystemMessage(text=text):
            return MessageItem(id=item.id, role="system",
                               content=[ContentPart(type="input_text", text=text)])
        case AssistantMessage():
            if item.modality == "text":
                part = ContentPart(type="output_text", text=item.text)
            else:
                audio = base64.b64encode(item.audio).decode() if with_audio else None
                part = ContentPart(type="output_audio", transcript=item.text, audio=audio)
            status = "completed" if item.status == "completed" else "incomplete"
            return MessageItem(id=item.id, role="assistant", status=status, content=[part])
        case FunctionCall():
            return FunctionCallItem(id=item.id, call_id=item.call_id, name=item.name,
                                    arguments=item.arguments)
        case FunctionCallOutput():
            return FunctionCallOutputItem(id=item.id, call_id=item.call_id,
                                          output=item.output)
    raise TypeError(type(item))


def to_messages(instructions: str, items: Sequence[Item], conversation: Conversation,
                budget: int) -> list[Message]:
    """Conversation items -> the engine's messages, oldest turns dropped past the budget."""
    kept = items_within_budget(items, budget)
    messages: list[Message] = [System(instructions)] if instructions else []
    names = {i.call_id: i.name for i in items if isinstance(i, FunctionCall)}
    for item in kept:
        match item:
            case UserMessage(parts=parts):
                pieces = [p.text if isinstance(p, UserText) else p.samples
                          for p in parts]
                pieces = [p for p in pieces if (len(p) if isinstance(p, str) else p.size)]
                if pieces:
                    messages.append(User(tuple(pieces)))
            case SystemMessage(text=text):
                messages.append(System(text))
            case AssistantMessage():
                if item.modality == "audio" and item.speech_ids:
                    messages.append(Assistant(speech_ids=item.speech_ids))
                elif item.text:
                    messages.append(Assistant(text=item.text))
            case FunctionCall():
                call = PromptCall(item.name, item.arguments or "{}")
                made_by = conversation.find(item.message_id or "")
                if isinstance(made_by, AssistantMessage) and made_by.speech_ids:
                    continue  # the spoken reply's replayed ids already hold the call
                last = messages[-1] if messages else None
                if made_by is not None and isinstance(last, Assistant):
                    messages[-1] = Assistant(text=last.text,
                                             tool_calls=(*last.tool_calls, call))
                else:
                    messages.append(Assistant(tool_calls=(call,)))
            case FunctionCallOutput():
                messages.append(ToolResult(names.get(item.call_id, ""), item.output))
    return messages
