"""Test doubles and harness: a TA4 fake engine, a fake token2wav, servers and a raw client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.types import EngineDelta, EngineError, EngineRequest, TextSegment, TokenSegment
from tokenizer_audio.types import SAMPLES_PER_CODE, VoiceError


@dataclass
class FakeVocab:
    """Ids the fake engine emits; taken from a real tokenizer's SpecialTokens when available."""

    audio_base: int
    tts_pad: int
    tts_end: int
    eot: int
    audio_pad: int
    text_ids: tuple[int, ...]  # ids of the reply text, one per text slot


def ta4_reply(vocab: FakeVocab, n_codes: int, seed: int = 0) -> list[int]:
    """A spoken reply as Step-Audio 2 emits it: [text, a, a, a, a]*, `<tts_end>`, `<|EOT|>`."""
    rng = np.random.default_rng(seed)
    codes = [int(c) for c in rng.integers(0, 6561, n_codes)]
    ids: list[int] = []
    text = list(vocab.text_ids)
    for start in range(0, n_codes, 4):
        ids.append(text.pop(0) if text else vocab.tts_pad)
        group = codes[start : start + 4]
        ids.extend(vocab.audio_base + c for c in group)
        ids.extend([vocab.audio_pad] * (4 - len(group)))
    ids.extend(text)
    ids.extend([vocab.tts_end, vocab.eot])
    return ids


@dataclass
class FakeEngine:
    """Streams scripted replies, `step_s` per token, `chunk` ids per delta; abort stops it.

    `replies` is popped per request (the last one repeats); `text_reply` is used when the prompt
    does not end with `<tts_start>` (text-only or ASR requests).
    """

    vocab: FakeVocab
    replies: list[list[int]]
    text_reply: list[int] = field(default_factory=list)
    tts_start_text: str = "<tts_start>"
    tts_start_id: int | None = None
    step_s: float = 0.002
    chunk: int = 5
    fail: bool = False
    requests: list[EngineRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)

    def _wants_speech(self, request: EngineRequest) -> bool:
        last = request.prompt[-1] if request.prompt else None
        if isinstance(last, TextSegment):
            return last.text.endswith(self.tts_start_text)
        if isinstance(last, TokenSegment) and self.tts_start_id is not None:
            return bool(last.ids) and last.ids[-1] == self.tts_start_id
        return False

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineDelta]:
        self.requests.append(request)
        if self.fail:
            raise EngineError("fake engine is down")
        if self._wants_speech(request):
            ids = self.replies.pop(0) if len(self.replies) > 1 else list(self.replies[0])
        else:
            ids = list(self.text_reply) + [self.vocab.eot]
        ids = ids[: request.sampling.max_tokens]
        finish = "stop" if ids and ids[-1] == self.vocab.eot else "length"
        self.in_flight.add(request.request_id)
        try:
            first = True
            for start in range(0, len(ids), self.chunk):
                if request.request_id in self.aborted:
                    yield EngineDelta((), "abort")
                    return
                await asyncio.sleep(self.step_s * self.chunk)
                part = tuple(ids[start : start + self.chunk])
                last = start + self.chunk >= len(ids)
                yield EngineDelta(part, finish if last else None, 10 if first else None)
                first = False
        finally:
            self.in_flight.discard(request.request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def close(self) -> None:
        return None


@dataclass
class FakeStream:
    service: FakeToken2wav
    fed: list[int] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False

    async def feed(self, codes: Sequence[int]) -> np.ndarray:
        assert not self.cancelled and not self.finished
        self.fed.extend(codes)
        await asyncio.sleep(0)
        t = np.arange(len(codes) * SAMPLES_PER_CODE, dtype=np.float32)
        return (0.1 * np.sin(t * 0.05)).astype(np.float32)

    async def finish(self) -> np.ndarray:
        self.finished = True
        return np.zeros(0, dtype=np.float32)

    async def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeToken2wav:
    """960 samples per code, streams recorded for assertions; voices by name."""

    voices: dict[str, bytes] = field(default_factory=lambda: {"default": b""})
    streams: list[FakeStream] = field(default_factory=list)

    def voice_names(self) -> list[str]:
        return list(self.voices)

    @property
    def default_voice(self) -> str:
        return "default"

    async def add_voice(self, name: str, wav_bytes: bytes) -> None:
        if not wav_bytes.startswith(b"RIFF"):
            raise VoiceError("not a WAV file")
        self.voices[name] = wav_bytes

    async def open_stream(self, voice: str) -> FakeStream:
        if voice not in self.voices:
            raise VoiceError(f"unknown voice {voice!r}")
        stream = FakeStream(self)
        self.streams.append(stream)
        return stream

    def queue_depth(self) -> int:
        return 0

    async def close(self) -> None:
        return None


# --- a real uvicorn in a thread, and a small websocket client --------------------------------


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 in a background thread (lifespan included)."""

    def __init__(self, app, port: int, **config) -> None:
        import uvicorn

        from server.app import gateway_server

        self.port = port
        self.config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                     lifespan="on", ws_per_message_deflate=False, **config)
        self.server = gateway_server(self.config)
        self.thread = None

    def __enter__(self) -> ServerThread:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 600
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        assert self.thread is not None
        self.thread.join(timeout=30)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model=step-audio-2-mini"


class Client:
    """A raw realtime client over `websockets`, for asserting exact event sequences."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[dict] = []

    @classmethod
    async def connect(cls, url: str, *, headers: dict | None = None,
                      subprotocols: list[str] | None = None) -> Client:
        import websockets

        ws = await websockets.connect(url, additional_headers=headers,
                                      subprotocols=subprotocols, max_size=None)
        return cls(ws)

    async def send(self, event: dict | str | bytes) -> None:
        import json

        await self.ws.send(event if isinstance(event, str | bytes) else json.dumps(event))

    async def recv(self, timeout: float = 30) -> dict:
        import json

        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        event = json.loads(raw)
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 60) -> list[dict]:
        """Every event up to and including the first of type `kind`."""
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - loop.time()))
            got.append(event)
            if event["type"] == kind:
                return got

    async def append_audio(self, pcm: bytes, chunk_bytes: int = 4800) -> None:
        import base64

        for start in range(0, len(pcm), chunk_bytes):
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(pcm[start:start + chunk_bytes]).decode()})

    async def close(self) -> None:
        await self.ws.close()


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def utterance(text: str, rate: int = 24_000, lead_s: float = 0.3, tail_s: float = 1.0):
    """espeak-ng speech with silence before and after (long enough for server VAD to end it)."""
    from tests.helpers import speech

    return np.concatenate([np.zeros(int(lead_s * rate), np.float32), speech(text, rate),
                           np.zeros(int(tail_s * rate), np.float32)])


class ServerProcess:
    """`python -m server.cli serve --model DIR --port P ...` as a subprocess, ready on /readyz."""

    def __init__(self, model_dir, *flags: str, ready_timeout: float = 600) -> None:
        from tests.helpers import free_port

        self.port = free_port()
        self.args = [*flags]
        self.model_dir = model_dir
        self.ready_timeout = ready_timeout
        self.proc = None

    def __enter__(self) -> ServerProcess:
        import os
        import subprocess
        import sys
        import time

        import httpx

        from tests.helpers import REPO

        self.log = open(f"/tmp/stepaudio2-serve-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--model", str(self.model_dir),
             "--port", str(self.port), "--plain-logs", *self.args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see "
                                   f"{self.log.name}:\n" + open(self.log.name).read()[-3000:])
            try:
                if httpx.get(f"{self.http}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"server not ready after {self.ready_timeout} s")

    def __exit__(self, *exc) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model=step-audio-2-mini"
