"""The token2wav seam as the gateway sees it: streams of codes in, 24 kHz float32 PCM out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

OUTPUT_SAMPLE_RATE = 24_000  # Hz, HiFT output (spec f.1)
CODES_PER_SECOND = 25  # S3 codes (spec f.1)
SAMPLES_PER_CODE = OUTPUT_SAMPLE_RATE // CODES_PER_SECOND  # 960


class VoiceError(ValueError):
    """A prompt voice cannot be used: unknown name, or a WAV that is not 3-30 s of speech."""


@runtime_checkable
class Token2wavStream(Protocol):
    """One streaming synthesis (one assistant response), in the timbre of one voice.

    Audio comes back as mono float32 at 24 kHz in [-1, 1]. A stream is fed codes 0..6560 in
    order; `finish` flushes the tail; `cancel` drops everything and frees the caches at once.
    """

    async def feed(self, codes: Sequence[int]) -> np.ndarray: ...

    async def finish(self) -> np.ndarray: ...

    async def cancel(self) -> None: ...


@runtime_checkable
class Token2wavService(Protocol):
    """What the gateway needs from token2wav: voices and streams."""

    def voice_names(self) -> list[str]: ...

    @property
    def default_voice(self) -> str: ...

    async def add_voice(self, name: str, wav_bytes: bytes) -> None:
        """Register a prompt voice from WAV bytes; raises VoiceError when it is not usable."""
        ...

    async def open_stream(self, voice: str) -> Token2wavStream:
        """A new stream for a registered voice; raises VoiceError for an unknown one."""
        ...

    def queue_depth(self) -> int:
        """Chunks waiting for the worker (for /metrics)."""
        ...

    async def close(self) -> None: ...
