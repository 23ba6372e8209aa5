"""Token2wavService for the gateway: voice registry + token2wav worker, built off the loop."""

from __future__ import annotations

import sys
from pathlib import Path

from tokenizer_audio.flow import Precision
from tokenizer_audio.token2wav import Token2wav
from tokenizer_audio.types import Token2wavService, Token2wavStream, VoiceError
from tokenizer_audio.voices import VoiceRegistry
from tokenizer_audio.worker import Token2wavWorker


class Token2wavServiceImpl:
    """Voices and streams for the gateway (implements tokenizer_audio.types.Token2wavService)."""

    def __init__(self, t2w: Token2wav, worker: Token2wavWorker) -> None:
        if t2w.voices is None:
            raise ValueError("the service needs a Token2wav with a voice registry")
        self.t2w = t2w
        self.voices: VoiceRegistry = t2w.voices
        self.worker = worker

    def voice_names(self) -> list[str]:
        return self.voices.names()

    @property
    def default_voice(self) -> str:
        return self.voices.default_name

    async def add_voice(self, name: str, wav_bytes: bytes) -> None:
        """Register a voice and build its streaming prompt caches, on the worker thread (the
        only thread running torch, see Token2wavWorker), so its first stream has no set-up."""
        await self.worker.call(lambda: self.voices.add(name, wav_bytes))
        await self.worker.call(lambda: self.t2w.voice_prompt(name))

    async def open_stream(self, voice: str) -> Token2wavStream:
        if not isinstance(voice, str) or voice not in self.voices.names():
            raise VoiceError(f"unknown voice {voice!r}; known voices: "
                             f"{', '.join(self.voices.names())}")
        return await self.worker.open_stream(voice)

    def queue_depth(self) -> int:
        return self.worker.queue_depth()

    async def close(self) -> None:
        await self.worker.close()


async def create_token2wav_service(token2wav_dir: str | Path, *,
                                   voices_dir: str | Path | None = None, device: str = "cpu",
                                   threads: int | None = None,
                                   precision: Precision = "fp32",
                                   warm_default_voice: bool = True) -> Token2wavService:
    """Load token2wav/ (or a model folder holding it) on the worker's thread and start it.

    With `warm_default_voice`, the default voice's features and prompt caches are computed
    before returning, so the first conversation does not pay for them.
    """
    worker = Token2wavWorker(None, threads=threads)
    worker.start()
    try:
        t2w = await worker.load(
            lambda: Token2wav(token2wav_dir, device, precision, voices_dir=voices_dir))
    except BaseException:
        await worker.close()
        raise
    service = Token2wavServiceImpl(t2w, worker)
    if warm_default_voice:
        sys.stderr.write("token2wav: preparing the default voice\n")
        await worker.call(lambda: t2w.voice_prompt(service.default_voice))
    return service
