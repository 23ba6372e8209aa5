"""A small asyncio client of the OpenAI Realtime protocol (GA or beta dialect), lenient in parsing.

Events are plain dicts so that the client keeps working against any compatible server, including
ones that add fields or send events this client does not know; beta event names are mapped onto
the GA names on receipt, so callers only handle one set of names.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

log = logging.getLogger(__name__)

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
DEFAULT_MODEL = "step-audio-2-mini"

# Beta event name -> GA event name (PROTOCOL.md "Dialects").
BETA_TO_GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

# Errors that are races of a normal conversation, not failures (PROTOCOL.md "Strictness").
BENIGN_ERROR_CODES = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "item_retrieve_invalid_item_id",
        "input_audio_buffer_commit_empty",
    }
)


class RealtimeConnectionError(RuntimeError):
    """The websocket could not be opened (refused, wrong URL, handshake rejected)."""


def normalize_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the event with a GA `type` (beta names mapped); other fields untouched."""
    kind = event.get("type")
    if isinstance(kind, str) and kind in BETA_TO_GA:
        event = {**event, "type": BETA_TO_GA[kind]}
    return event


def with_model(url: str, model: str) -> str:
    """Add `?model=` to a realtime URL unless it already names one."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", model)
    return urlunsplit(parts._replace(query=urlencode(query)))


def session_update(
    *,
    beta: bool = False,
    voice: str | None = None,
    instructions: str | None = None,
    vad: bool = True,
    vad_threshold: float | None = None,
    silence_duration_ms: int | None = None,
    transcription: bool = False,
    max_output_tokens: int | None = None,
) -> dict[str, Any]:
    """A `session.update` event for pcm16 at 24 kHz in the GA or the beta session shape."""
    turn_detection: dict[str, Any] | None = None
    if vad:
        turn_detection = {"type": "server_vad"}
        if vad_threshold is not None:
            turn_detection["threshold"] = vad_threshold
        if silence_duration_ms is not None:
            turn_detection["silence_duration_ms"] = silence_duration_ms
    session: dict[str, Any]
    if beta:
        session = {
            "modalities": ["audio", "text"],
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "turn_detection": turn_detection,
        }
        if voice:
            session["voice"] = voice
        if transcription:
            session["input_audio_transcription"] = {"model": DEFAULT_MODEL}
        if max_output_tokens is not None:
            session["max_response_output_tokens"] = max_output_tokens
    else:
        pcm = {"type": "audio/pcm", "rate": 24_000}
        audio_in: dict[str, Any] = {"format": pcm, "turn_detection": turn_detection}
        if transcription:
            audio_in["transcription"] = {"model": DEFAULT_MODEL}
        audio_out: dict[str, Any] = {"format": pcm}
        if voice:
            audio_out["voice"] = voice
        session = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": audio_out},
        }
        if max_output_tokens is not None:
            session["max_output_tokens"] = max_output_tokens
    if instructions:
        session["instructions"] = instructions
    return {"type": "session.update", "session": session}


class RealtimeClient:
    """One realtime websocket session: `send()` client events, iterate server events.

    Use as `async with RealtimeClient(url) as client: ...`; iterating yields normalized events
    until the server closes the connection.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        beta: bool = False,
        open_timeout: float = 15.0,
    ) -> None:
        self.url = with_model(url, model)
        self.api_key = api_key
        self.beta = beta
        self.open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._prefix = f"evt_c{int(time.time() * 1000) % 10**8:08d}"

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        headers: dict[str, str] = {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        try:
            self._ws = await websockets.connect(
                self.url,
                additional_headers=headers,
                max_size=None,
                open_timeout=self.open_timeout,
                ping_interval=None,
            )
        except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
            raise RealtimeConnectionError(f"cannot connect to {self.url}: {exc}") from exc

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def send(self, event: dict[str, Any]) -> str:
        """Send one client event (an `event_id` is added when missing); return its id."""
        if self._ws is None:
            raise RealtimeConnectionError("not connected")
        event_id = event.get("event_id") or f"{self._prefix}_{next(self._ids)}"
        await self._ws.send(json.dumps({**event, "event_id": event_id}))
        return event_id

    async def append_audio(self, pcm16: bytes) -> str:
        from clients.python.audio import b64encode

        return await self.send({"type": "input_audio_buffer.append", "audio": b64encode(pcm16)})

    async def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> str:
        return await self.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": int(audio_end_ms),
            }
        )

    async def recv(self) -> dict[str, Any]:
        """The next server event; raises `websockets.ConnectionClosed` at the end."""
        if self._ws is None:
            raise RealtimeConnectionError("not connected")
        while True:
            raw = await self._ws.recv()
            try:
                event = json.loads(raw)
            except (TypeError, ValueError):
                log.warning("ignoring a frame that is not JSON: %.80r", raw)
                continue
            if isinstance(event, dict):
                return normalize_event(event)
            log.warning("ignoring a JSON frame that is not an event object: %.80r", raw)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv()
            except websockets.ConnectionClosed:
                return

    async def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()
