"""Streaming parser of Step-Audio 2 output ids: text, speech codes, tool calls, end of turn."""

from __future__ import annotations

import codecs
import functools
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.tokenizer_build import bytes_to_unicode
from engine.tokens import N_SPEECH_CODES, SpecialTokens

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class AudioCodes:
    codes: tuple[int, ...]  # speech codes 0..6560, in order


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str  # a JSON object as text


@dataclass(frozen=True)
class ToolCallError:
    """A `<tool_call>` block that cannot be used (bad format or JSON, unknown tool, unclosed)."""

    message: str
    raw: str


@dataclass(frozen=True)
class EndOfTurn:
    reason: str  # "stop" (a stop token), or the engine's finish reason given to finish()


ParserEvent = TextDelta | AudioCodes | ToolCall | ToolCallError | EndOfTurn


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE character -> the byte it stands for."""
    return {char: byte for byte, char in bytes_to_unicode().items()}


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class OutputParser:
    """Turns streamed ids into events, token by token (spec d, i.4: never by position).

    Audio-slot ids give speech codes (pads `<audio_6561>` and above are dropped), `<tts_pad>`,
    `<tts_start>` and `<tts_end>` never become text, other special tokens are dropped, text ids
    become UTF-8 safe text deltas (a character split across tokens waits for its last byte), and
    `<tool_call>function\\n{name}\\n{json}</tool_call>` blocks in the text become ToolCall events.
    A stop id (`<|EOT|>`, `<|endoftext|>`, `<|im_end|>`) ends the turn: later ids are only kept in
    `ids_after_end`. EndOfTurn is always the last event.
    """

    def __init__(
        self, tokenizer: Any, special: SpecialTokens, *, tool_names: Iterable[str] | None = None
    ) -> None:
        self._tokenizer = tokenizer
        self._special = special
        self._tool_names = None if tool_names is None else frozenset(tool_names)
        self._byte_of = _byte_decoder()
        self._bytes_cache: dict[int, bytes | None] = {}
        self._control = frozenset({special.bot, special.audio_start, special.audio_end,
                                   special.audio_patch, special.tts_start, special.tts_end,
                                   special.tts_pad} - {None})
        self._stop = frozenset(special.stop_ids)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # text that may be the start of a tool-call tag
        self._call: str | None = None  # text inside an open `<tool_call>`
        self._events: list[ParserEvent] = []
        self.generated_ids: list[int] = []  # every id before the stop token, for history replay
        self.ids_after_end: list[int] = []
        self.stop_id: int | None = None
        self.ended = False
        self.n_text_tokens = 0
        self.n_audio_codes = 0
        self.n_audio_pads = 0
        self.n_tool_calls = 0
        self.n_dropped = 0  # control tokens (`<tts_start>`, `<tts_end>`, `<tts_pad>`, ...)

    def feed(self, ids: Iterable[int]) -> list[ParserEvent]:
        """Parse newly generated ids; returns the events they complete, in order."""
        for token_id in ids:
            token_id = int(token_id)
            if self.ended:
                self.ids_after_end.append(token_id)
                continue
            if token_id in self._stop:
                self.stop_id = token_id
                self._end("stop")
                continue
            self.generated_ids.append(token_id)
            if self._special.is_audio(token_id):
                code = token_id - self._special.audio_base
                if code < N_SPEECH_CODES:
                    self._emit_code(code)
                    self.n_audio_codes += 1
                else:
                    self.n_audio_pads += 1
            elif (data := self._token_bytes(token_id)) is None:
                self.n_dropped += 1  # never text: `<tts_pad>`, `<tts_start>`, `<tts_end>`, ...
            else:
                # A character's bytes may span text tokens with audio slots between them: the
                # incremental decoder keeps the partial sequence until its last byte arrives.
                self.n_text_tokens += 1
                self._text(self._utf8.decode(data))
        return self._take()

    def finish(self, reason: str = "stop") -> list[ParserEvent]:
        """The stream ended (`reason` = the engine's finish reason): flush and end the turn."""
        if not self.ended:
            self._end(reason)
        return self._take()

    def _end(self, reason: str) -> None:
        self._text(self._utf8.decode(b"", final=True), flush=True)
        if self._call is not None:
            self._events.append(ToolCallError(f"unterminated {TOOL_OPEN}", TOOL_OPEN + self._call))
            self._call = None
        self._events.append(EndOfTurn(reason))
        self.ended = True

    def _take(self) -> list[ParserEvent]:
        events, self._events = self._events, []
        return events

    def _token_bytes(self, token_id: int) -> bytes | None:
        """The UTF-8 bytes a text id stands for; None for control (special) tokens."""
        if token_id in self._bytes_cache:
            return self._bytes_cache[token_id]
        token = self._tokenizer.convert_ids_to_tokens(token_id)
        data: bytes | None
        if token_id in self._control:
            data = None
        elif token is None:
            data = b""  # an id without a token (unused embedding row): no text
        elif self._tokenizer.decode([token_id], skip_special_tokens=True) == "":
            data = None  # a special added token (`<|im_start|>`, ...): not reply text
        elif all(char in self._byte_of for char in token):
            data = bytes(self._byte_of[char] for char in token)
        else:  # a non-special added token such as `<think>`: its text as written
            data = token.encode("utf-8")
        self._bytes_cache[token_id] = data
        return data

    def _emit_code(self, code: int) -> None:
        last = self._events[-1] if self._events else None
        if isinstance(last, AudioCodes):
            self._events[-1] = AudioCodes(last.codes + (code,))
        else:
            self._events.append(AudioCodes((code,)))

    def _emit_text(self, text: str) -> None:
        if not text:
            return
        last = self._events[-1] if self._events else None
        if isinstance(last, TextDelta):
            self._events[-1] = TextDelta(last.text + text)
        else:
            self._events.append(TextDelta(text))

    def _text(self, text: str, *, flush: bool = False) -> None:
        """Route decoded text: plain text out, tool-call blocks to _close_call."""
        if self._call is None:
            text, self._held = self._held + text, ""
        while text:
            if self._call is None:
                start = text.find(TOOL_OPEN)
                if start < 0:
                    keep = 0 if flush else _partial_suffix(text, TOOL_OPEN)
                    self._emit_text(text[: len(text) - keep])
                    self._held = text[len(text) - keep :]
                    return
                self._emit_text(text[:start])
                self._call = ""
                text = text[start + len(TOOL_OPEN) :]
            else:
                body = self._call + text
                end = body.find(TOOL_CLOSE)
                if end < 0:
                    self._call = body
                    return
                self._close_call(body[:end])
                self._call = None
                text = body[end + len(TOOL_CLOSE) :]

    def _close_call(self, body: str) -> None:
        raw = TOOL_OPEN + body + TOOL_CLOSE
        parts = body.split("\n", 2)
        if len(parts) != 3 or parts[0].strip() != "function":
            self._events.append(
                ToolCallError("expected <tool_call>function\\n{name}\\n{json}</tool_call>", raw)
            )
            return
        name, arguments = parts[1].strip(), parts[2].strip()
        if self._tool_names is not None and name not in self._tool_names:
            self._events.append(ToolCallError(f"unknown tool {name!r}", raw))
            return
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as exc:
            self._events.append(ToolCallError(f"arguments of {name!r} are not JSON: {exc}", raw))
            return
        if not isinstance(parsed, dict):
            self._events.append(ToolCallError(f"arguments of {name!r} are not a JSON object", raw))
            return
        self.n_tool_calls += 1
        self._events.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, arguments))
