"""Wire audio formats: pcm16 (24 kHz) and G.711 mu-law / A-law (8 kHz), plus base64 handling."""

# Samples inside the server are mono float32 in [-1, 1). G.711 follows ITU-T G.711 exactly (the
# segment tables of the reference C code, as Sun's g711.c and CPython's audioop implement it);
# numpy only, no `audioop` (removed in Python 3.13).

from __future__ import annotations

import base64
import binascii
import functools

import numpy as np

from server.protocol import errors
from server.protocol.formats import AudioFormat

__all__ = ["AudioFormat", "AudioPayloadError", "b64decode_audio", "b64encode_audio", "decode_audio",
           "encode_audio"]


class AudioPayloadError(ValueError):
    """Undecodable audio from a client; `code` is a stable protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- pcm16 -------------------------------------------------------------------------------------


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian int16 bytes -> float32 samples in [-1, 1)."""
    if len(data) % 2:
        raise AudioPayloadError(
            errors.INVALID_AUDIO_LENGTH,
            f"pcm16 audio must have an even number of bytes, got {len(data)}",
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1) -> int16, rounded to nearest and clipped."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 samples -> little-endian int16 bytes."""
    return float_to_int16(samples).astype("<i2").tobytes()


# --- G.711 ---------------------------------------------------------------------------------------

_ULAW_BIAS = 0x84  # 132 in 16-bit units: added before the segment search, removed on decode
_ULAW_CLIP = 8159  # largest 14-bit magnitude mu-law codes
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])  # 14-bit
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])  # 13-bit


@functools.cache
def _ulaw_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


@functools.cache
def _alaw_decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    big = (t + 0x108) << np.maximum(seg - 1, 0)
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, big))
    return np.where(code & 0x80, t, -t).astype(np.int16)


def _segment(value: np.ndarray, seg_end: np.ndarray) -> np.ndarray:
    """Index of the first segment end >= value (8 when above all), per sample."""
    return np.searchsorted(seg_end, value, side="left")


@functools.cache
def _ulaw_encode_table() -> np.ndarray:
    """uint8 code for every int16 value (index = value + 32768)."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # G.711 mu-law works on 14 bits
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(mag, _ULAW_SEG_END)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


@functools.cache
def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # G.711 A-law works on 13 bits
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(mag, _ALAW_SEG_END)
    shift = np.where(seg < 2, 1, seg)
    aval = (seg << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, aval)
    return (code ^ mask).astype(np.uint8)


def ulaw_to_int16(data: bytes) -> np.ndarray:
    return _ulaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]


def alaw_to_int16(data: bytes) -> np.ndarray:
    return _alaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]


def int16_to_ulaw(samples: np.ndarray) -> bytes:
    idx = np.asarray(samples, dtype=np.int32) + 32768
    return _ulaw_encode_table()[idx].tobytes()


def int16_to_alaw(samples: np.ndarray) -> bytes:
    idx = np.asarray(samples, dtype=np.int32) + 32768
    return _alaw_encode_table()[idx].tobytes()


# --- format dispatch -------------------------------------------------------------------------


def decode_audio(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Wire bytes -> float32 samples at `fmt.sample_rate`."""
    if fmt is AudioFormat.PCM16:
        return pcm16_to_float(data)
    pcm = ulaw_to_int16(data) if fmt is AudioFormat.PCMU else alaw_to_int16(data)
    return pcm.astype(np.float32) / np.float32(32768.0)


def encode_audio(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """float32 samples at `fmt.sample_rate` -> wire bytes."""
    pcm = float_to_int16(samples)
    if fmt is AudioFormat.PCM16:
        return pcm.astype("<i2").tobytes()
    return int16_to_ulaw(pcm) if fmt is AudioFormat.PCMU else int16_to_alaw(pcm)


def b64decode_bytes(text: str) -> bytes:
    """Strict base64 (standard alphabet, padding required; line breaks as MIME encoders insert
    them are allowed); a clear error on anything else."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        if isinstance(text, str) and any(c in text for c in "\r\n\t "):
            return b64decode_bytes("".join(text.split()))
        raise AudioPayloadError(errors.INVALID_BASE64, f"audio is not valid base64: {exc}") from exc


def b64decode_audio(text: str, fmt: AudioFormat) -> np.ndarray:
    """base64 text of `fmt` audio -> float32 samples at `fmt.sample_rate`."""
    return decode_audio(b64decode_bytes(text), fmt)


def b64encode_audio(samples: np.ndarray, fmt: AudioFormat) -> str:
    """float32 samples at `fmt.sample_rate` -> base64 text of `fmt` audio."""
    return base64.b64encode(encode_audio(samples, fmt)).decode("ascii")
