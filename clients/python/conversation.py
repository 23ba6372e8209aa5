"""A spoken conversation over a `RealtimeClient`: paced user audio out, turns and replies in.

Shared by `talk` and the load generator: it streams user audio in real time (or faster),
follows the server's turn events, plays each reply on a `SimulatedPlayback` (what a listener
has heard), and on barge-in stops that playback and sends `conversation.item.truncate` with the
milliseconds actually played. Latency of a turn = end of the user's speech (the moment the audio
at the server's `speech_stopped.audio_end_ms` was sent) to the first reply audio.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.python.audio import SAMPLE_RATE, b64decode, to_pcm16
from clients.python.playback import SimulatedPlayback
from clients.python.realtime import BENIGN_ERROR_CODES, RealtimeClient

CHUNK_MS = 20  # one input_audio_buffer.append per 20 ms of audio
CHUNK_SAMPLES = SAMPLE_RATE * CHUNK_MS // 1000


@dataclass
class Turn:
    """One user utterance and the reply to it."""

    index: int
    speech_end_at: float | None = None  # wall time the end of the user's speech was sent
    user_item_id: str | None = None
    response_id: str | None = None
    item_id: str | None = None  # the assistant item carrying the reply audio
    playback: SimulatedPlayback = field(default_factory=SimulatedPlayback)
    chunks: list[bytes] = field(default_factory=list)
    transcript: str = ""
    user_transcript: str = ""
    status: str | None = None  # response.done status
    reason: str | None = None  # response.done status_details.reason
    interrupted: bool = False
    truncated_ms: int | None = None  # audio_end_ms sent with the truncate

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def latency_ms(self) -> float | None:
        first = self.playback.first_audio_at
        if first is None or self.speech_end_at is None:
            return None
        return (first - self.speech_end_at) * 1000.0

    @property
    def received_ms(self) -> float:
        return self.playback.received * 1000.0 / SAMPLE_RATE

    def heard_pcm(self) -> bytes:
        """The reply audio as heard: cut where the user interrupted."""
        data = b"".join(self.chunks)
        if self.truncated_ms is not None or self.playback.stopped_at_samples is not None:
            data = data[: self.playback.played_samples() * 2]
        return data

    def summary(self) -> dict[str, Any]:
        latency = self.latency_ms
        return {
            "turn": self.index,
            "latency_ms": None if latency is None else round(latency, 1),
            "reply_ms_received": round(self.received_ms, 1),
            "reply_ms_heard": self.playback.played_ms(),
            "interrupted": self.interrupted,
            "truncate_audio_end_ms": self.truncated_ms,
            "status": self.status,
            "reason": self.reason,
            "underruns": self.playback.underruns,
            "transcript": self.transcript,
            "user_transcript": self.user_transcript,
        }


class Conversation:
    """Follows one realtime session's turns; `receive()` must run as a task beside the sender."""

    def __init__(
        self,
        client: RealtimeClient,
        *,
        speed: float = 1.0,
        keep_audio: bool = False,
        on_text: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.speed = speed
        self.keep_audio = keep_audio
        self.on_text = on_text  # (kind, text): "user", "assistant.delta", "assistant.end", "error"
        self.turns: list[Turn] = []
        self.errors: Counter[str] = Counter()
        self.error_messages: list[str] = []
        self.session: dict[str, Any] | None = None
        self.speaking = False  # between the server's speech_started and speech_stopped
        self.closed = False
        self.changed = asyncio.Event()  # set on every event; waiters clear it
        self._sent_ms: list[float] = []  # input timeline: end of each chunk (ms)...
        self._sent_at: list[float] = []  # ...and the wall time it was sent
        self._input_ms = 0.0
        self._next_send_at: float | None = None
        self._by_response: dict[str, Turn] = {}

    # -- user audio -----------------------------------------------------------------------
    async def stream(self, audio: np.ndarray) -> None:
        """Send `audio` (float32, 24 kHz) in 20 ms appends at `speed` times real time."""
        for start in range(0, len(audio), CHUNK_SAMPLES):
            await self._send_chunk(audio[start : start + CHUNK_SAMPLES])

    async def stream_silence_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Keep the microphone open (silence) until `done()`; False on timeout or close."""
        deadline = time.monotonic() + timeout
        silence = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
        while not done():
            if self.closed or time.monotonic() > deadline:
                return False
            await self._send_chunk(silence)
        return True

    async def _send_chunk(self, chunk: np.ndarray) -> None:
        now = time.monotonic()
        if self._next_send_at is None or self._next_send_at < now - 0.2:
            self._next_send_at = now  # first chunk, or we fell far behind: restart the pacing
        if self._next_send_at > now:
            await asyncio.sleep(self._next_send_at - now)
        if self.closed:
            return
        await self.client.append_audio(to_pcm16(chunk))
        self._input_ms += len(chunk) * 1000.0 / SAMPLE_RATE
        self._sent_ms.append(self._input_ms)
        self._sent_at.append(time.monotonic())
        self._next_send_at += len(chunk) / SAMPLE_RATE / self.speed

    def _wall_at_input_ms(self, ms: float) -> float:
        """When the user audio at input time `ms` was sent (now, if not known)."""
        i = bisect.bisect_left(self._sent_ms, ms)
        if i >= len(self._sent_ms):
            return time.monotonic()
        # The chunk containing `ms` was sent when its end was reached; step back the remainder.
        return self._sent_at[i] - (self._sent_ms[i] - ms) / 1000.0 / self.speed

    # -- turns ----------------------------------------------------------------------------
    @property
    def current(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def playing(self) -> Turn | None:
        """The turn whose reply is being heard right now, if any."""
        for turn in reversed(self.turns):
            pb = turn.playback
            if pb.first_audio_at is None or pb.stopped_at_samples is not None:
                continue
            if not turn.done or pb.played_samples() < pb.received:
                return turn
        return None

    def settled(self) -> bool:
        """The user is silent and every reply was generated and fully heard."""
        if self.speaking or not self.turns:
            return False
        last = self.turns[-1]
        if not last.done:
            return False
        return self.playing() is None

    def replies_done(self) -> bool:
        """The user is silent and every reply was generated (heard or not)."""
        return not self.speaking and bool(self.turns) and self.turns[-1].done

    def new_turn(self) -> Turn:
        turn = Turn(index=len(self.turns) + 1)
        self.turns.append(turn)
        return turn

    async def receive(self) -> None:
        """Handle server events until the connection closes."""
        try:
            async for event in self.client:
                await self.handle(event)
                self.changed.set()
        finally:
            self.closed = True
            self.changed.set()

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        if kind in ("session.created", "session.updated"):
            self.session = event.get("session")
        elif kind == "input_audio_buffer.speech_started":
            self.speaking = True
            await self.barge_in()
        elif kind == "input_audio_buffer.speech_stopped":
            self.speaking = False
            turn = self.new_turn()
            end_ms = event.get("audio_end_ms")
            turn.speech_end_at = (
                self._wall_at_input_ms(float(end_ms))
                if isinstance(end_ms, int | float)
                else time.monotonic()
            )
            turn.user_item_id = event.get("item_id")
        elif kind == "input_audio_buffer.committed":
            turn = self.current
            if turn is None or turn.response_id is not None:
                turn = self.new_turn()  # manual commit (no VAD): the turn starts here
                turn.speech_end_at = time.monotonic()
            turn.user_item_id = turn.user_item_id or event.get("item_id")
        elif kind == "conversation.item.input_audio_transcription.completed":
            text = str(event.get("transcript") or "")
            for turn in self.turns:
                if turn.user_item_id == event.get("item_id"):
                    turn.user_transcript = text
            self._emit("user", text)
        elif kind == "response.created":
            response = event.get("response") or {}
            turn = self.current
            if turn is None or turn.response_id is not None:
                turn = self.new_turn()
                turn.speech_end_at = time.monotonic()
            turn.response_id = response.get("id")
            if turn.response_id:
                self._by_response[turn.response_id] = turn
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            turn = self._turn_for(event)
            if turn is not None and item.get("type", "message") == "message":
                turn.item_id = item.get("id")
        elif kind == "response.output_audio.delta":
            turn = self._turn_for(event)
            if turn is None:
                return
            turn.item_id = turn.item_id or event.get("item_id")
            data = b64decode(str(event.get("delta") or ""))
            turn.playback.push(len(data) // 2)
            if self.keep_audio and turn.playback.stopped_at_samples is None:
                turn.chunks.append(data)
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            turn = self._turn_for(event)
            delta = str(event.get("delta") or "")
            if turn is not None:
                turn.transcript += delta
            self._emit("assistant.delta", delta)
        elif kind == "response.done":
            response = event.get("response") or {}
            turn = self._turn_for({"response_id": response.get("id")})
            if turn is not None:
                turn.status = str(response.get("status") or "completed")
                details = response.get("status_details") or {}
                turn.reason = details.get("reason") if isinstance(details, dict) else None
                self._emit("assistant.end", "")
        elif kind == "error":
            error = event.get("error") or {}
            code = str(error.get("code") or error.get("type") or "unknown")
            self.errors[code] += 1
            message = f"{code}: {error.get('message', '')}"
            self.error_messages.append(message)
            if code not in BENIGN_ERROR_CODES:
                self._emit("error", message)

    def _turn_for(self, event: dict[str, Any]) -> Turn | None:
        response_id = event.get("response_id")
        if response_id and response_id in self._by_response:
            return self._by_response[response_id]
        return self.current

    async def barge_in(self) -> None:
        """The user started speaking: stop the reply being heard and tell the server where."""
        turn = self.playing()
        if turn is None:
            return
        played = turn.playback.stop()
        turn.interrupted = True
        if turn.item_id:
            turn.truncated_ms = played * 1000 // SAMPLE_RATE
            await self.client.truncate(turn.item_id, turn.truncated_ms)

    def _emit(self, kind: str, text: str) -> None:
        if self.on_text is not None:
            self.on_text(kind, text)

    def benign_errors(self) -> int:
        return sum(n for code, n in self.errors.items() if code in BENIGN_ERROR_CODES)

    def fatal_errors(self) -> int:
        return sum(n for code, n in self.errors.items() if code not in BENIGN_ERROR_CODES)
