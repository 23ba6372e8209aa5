"""Wire audio format names of the protocol (beta names as values, GA names derived)."""

from __future__ import annotations

from enum import StrEnum


class AudioFormat(StrEnum):
    """Wire audio formats; values are the beta names (`input_audio_format`)."""

    PCM16 = "pcm16"
    PCMU = "g711_ulaw"
    PCMA = "g711_alaw"

    @property
    def sample_rate(self) -> int:
        return 24_000 if self is AudioFormat.PCM16 else 8_000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is AudioFormat.PCM16 else 1

    @property
    def ga_type(self) -> str:
        """The GA name: `{"type": "audio/pcm" | "audio/pcmu" | "audio/pcma"}`."""
        return {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}[self]

    @classmethod
    def from_ga_type(cls, name: str) -> AudioFormat:
        table = {"audio/pcm": cls.PCM16, "audio/pcmu": cls.PCMU, "audio/pcma": cls.PCMA}
        return table[name]
