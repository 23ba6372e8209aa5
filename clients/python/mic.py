"""Microphone and speakers for `talk --mic` through the optional `sounddevice` package."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import sounddevice as sd

from clients.python.audio import SAMPLE_RATE, b64decode, to_pcm16
from clients.python.conversation import CHUNK_SAMPLES
from clients.python.realtime import RealtimeClient


class Speaker:
    """A gapless output queue; counts the samples actually played for truncation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue = bytearray()
        self.played = 0  # samples of the current reply played so far

    def push(self, pcm: bytes) -> None:
        with self._lock:
            self._queue.extend(pcm)

    def flush(self) -> int:
        """Drop what is queued; return the samples of the reply that were played."""
        with self._lock:
            self._queue.clear()
            played, self.played = self.played, 0
        return played

    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue)

    def callback(self, outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        with self._lock:
            n = min(len(self._queue) // 2, frames)
            chunk = bytes(self._queue[: n * 2])
            del self._queue[: n * 2]
            self.played += n
        outdata[:n, 0] = np.frombuffer(chunk, dtype="<i2")
        outdata[n:, 0] = 0


async def talk_microphone(
    client: RealtimeClient, session_event: dict[str, Any], printer: Callable[[str, str], None]
) -> int:
    """Stream the microphone; play replies; barge-in stops playback and truncates. Ctrl-C ends."""
    loop = asyncio.get_running_loop()
    mic: asyncio.Queue[bytes] = asyncio.Queue()
    speaker = Speaker()
    reply_item: dict[str, str | None] = {"id": None}

    def on_input(indata: np.ndarray, _frames: int, _time: Any, _status: Any) -> None:
        loop.call_soon_threadsafe(mic.put_nowait, to_pcm16(indata[:, 0].copy()))

    async def send_mic() -> None:
        while True:
            await client.append_audio(await mic.get())

    async def receive() -> None:
        async for event in client:
            kind = event.get("type")
            if kind == "input_audio_buffer.speech_started" and speaker.busy() and reply_item["id"]:
                played = speaker.flush()
                await client.truncate(reply_item["id"], played * 1000 // SAMPLE_RATE)
            elif kind == "response.output_item.added":
                reply_item["id"] = (event.get("item") or {}).get("id")
                speaker.flush()
            elif kind == "response.output_audio.delta":
                speaker.push(b64decode(str(event.get("delta") or "")))
            elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
                printer("assistant.delta", str(event.get("delta") or ""))
            elif kind == "response.done":
                printer("assistant.end", "")
            elif kind == "conversation.item.input_audio_transcription.completed":
                printer("user", str(event.get("transcript") or ""))
            elif kind == "error":
                error = event.get("error") or {}
                printer("error", f"{error.get('code')}: {error.get('message')}")

    await client.send(session_event)
    print("listening: speak now (Ctrl-C to stop)", file=sys.stderr)
    with (
        sd.InputStream(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="float32",
            blocksize=CHUNK_SAMPLES,
            callback=on_input,
        ),
        sd.OutputStream(
            samplerate=SAMPLE_RATE, channels=1, dtype="int16", callback=speaker.callback
        ),
    ):
        sender = asyncio.create_task(send_mic())
        try:
            await receive()
        finally:
            sender.cancel()
    return 0
