"""Audio for the realtime wire: WAV files in and out, resampling to 24 kHz, pcm16 and base64."""

from __future__ import annotations

import base64
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 24_000  # the protocol's pcm16 rate, input and output
BYTES_PER_SAMPLE = 2


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of mono float audio."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    g = gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 at `rate`; a clear error otherwise."""
    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if audio.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty")
    return resample(audio.mean(axis=1), file_rate, rate)


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono float32 audio as a 16-bit WAV."""
    sf.write(str(path), np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")


def to_pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] to little-endian int16 bytes."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """Little-endian int16 bytes to float32 audio."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text)


def ms_to_samples(ms: float, rate: int = SAMPLE_RATE) -> int:
    return int(round(ms * rate / 1000.0))


def samples_to_ms(samples: int, rate: int = SAMPLE_RATE) -> float:
    return samples * 1000.0 / rate
