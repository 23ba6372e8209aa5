"""Wire audio codecs: pcm16, G.711 mu-law/A-law (bit-exact with ITU tables), base64 errors."""

from __future__ import annotations

import base64
import warnings

import numpy as np
import pytest

from server.audio_codecs import (
    AudioFormat,
    AudioPayloadError,
    alaw_to_int16,
    b64decode_audio,
    b64encode_audio,
    decode_audio,
    encode_audio,
    float_to_pcm16,
    int16_to_alaw,
    int16_to_ulaw,
    pcm16_to_float,
    ulaw_to_int16,
)
from server.protocol import errors

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_pcm16_round_trip_is_exact():
    data = ALL_INT16.astype("<i2").tobytes()
    samples = pcm16_to_float(data)
    assert samples.dtype == np.float32 and samples.min() == -1.0 and samples.max() < 1.0
    assert float_to_pcm16(samples) == data


def test_pcm16_is_little_endian_and_clips():
    assert pcm16_to_float(b"\x00\x40")[0] == 0.5  # 0x4000 = 16384
    assert float_to_pcm16(np.array([2.0, -2.0, 0.0], np.float32)) == (
        np.array([32767, -32768, 0], "<i2").tobytes())


def test_odd_pcm16_byte_count_is_a_clear_error():
    with pytest.raises(AudioPayloadError) as info:
        decode_audio(b"\x00\x01\x02", AudioFormat.PCM16)
    assert info.value.code == errors.INVALID_AUDIO_LENGTH
    assert "even" in str(info.value)


@pytest.mark.parametrize("text", ["not base64!", "AAA", "AA=A", "ÄÖÜ="])
def test_bad_base64_is_a_clear_error(text):
    with pytest.raises(AudioPayloadError) as info:
        b64decode_audio(text, AudioFormat.PCM16)
    assert info.value.code == errors.INVALID_BASE64


def test_base64_with_line_breaks_is_accepted():
    data = np.arange(100, dtype="<i2").tobytes()
    text = base64.encodebytes(data).decode()  # MIME style: a newline every 76 characters
    assert "\n" in text
    np.testing.assert_array_equal(b64decode_audio(text, AudioFormat.PCM16),
                                  pcm16_to_float(data))
    with pytest.raises(AudioPayloadError):
        b64decode_audio("AA AA*", AudioFormat.PCM16)


def test_known_g711_values():
    # ITU-T G.711: mu-law 0xFF / 0x7F are +0 / -0, 0x80 / 0x00 the extremes (+-32124);
    # A-law 0xD5 / 0x55 are the smallest steps (+-8), 0xAA / 0x2A the extremes (+-32256).
    assert ulaw_to_int16(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert alaw_to_int16(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]
    assert int16_to_ulaw(np.array([0, 32767, -32768])) == b"\xff\x80\x00"
    assert int16_to_alaw(np.array([0, 32767, -32768])) == b"\xd5\xaa\x2a"


def test_g711_matches_the_reference_implementation_exhaustively():
    """CPython's audioop (Sun's reference G.711 code, in 3.11) as the oracle: every input."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    pcm = ALL_INT16.astype("<i2").tobytes()
    assert int16_to_ulaw(ALL_INT16) == audioop.lin2ulaw(pcm, 2)
    assert int16_to_alaw(ALL_INT16) == audioop.lin2alaw(pcm, 2)
    assert ulaw_to_int16(ALL_CODES).astype("<i2").tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_to_int16(ALL_CODES).astype("<i2").tobytes() == audioop.alaw2lin(ALL_CODES, 2)


@pytest.mark.parametrize(("fmt", "to_code", "from_code"),
                         [(AudioFormat.PCMU, int16_to_ulaw, ulaw_to_int16),
                          (AudioFormat.PCMA, int16_to_alaw, alaw_to_int16)])
def test_g711_codes_are_stable_and_errors_bounded(fmt, to_code, from_code):
    # Every code decodes to a value that encodes back to an equivalent code.
    decoded = from_code(ALL_CODES)
    assert (from_code(to_code(decoded)) == decoded).all()
    # Quantisation error is logarithmic: within 1/16 of the magnitude plus the smallest step.
    back = from_code(to_code(ALL_INT16)).astype(np.int32)
    err = np.abs(back - ALL_INT16.astype(np.int32))
    assert (err <= np.abs(ALL_INT16.astype(np.int32)) / 16 + 140).all()
    assert fmt.sample_rate == 8000 and fmt.bytes_per_sample == 1


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_base64_round_trip_per_format(fmt):
    t = np.arange(fmt.sample_rate // 10) / fmt.sample_rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    text = b64encode_audio(x, fmt)
    assert len(base64.b64decode(text)) == len(x) * fmt.bytes_per_sample
    y = b64decode_audio(text, fmt)
    assert y.dtype == np.float32 and len(y) == len(x)
    tol = 1 / 32768 if fmt is AudioFormat.PCM16 else 0.5 / 16 + 0.005
    assert np.abs(y - x).max() <= tol
    assert encode_audio(y, fmt) == base64.b64decode(text)


def test_format_names():
    assert [f.ga_type for f in AudioFormat] == ["audio/pcm", "audio/pcmu", "audio/pcma"]
    assert AudioFormat.from_ga_type("audio/pcmu") is AudioFormat.PCMU
    assert AudioFormat("g711_alaw") is AudioFormat.PCMA
    assert AudioFormat.PCM16.sample_rate == 24000
