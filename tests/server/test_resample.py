"""Streaming resampler: chunked equals one pass, output aligned in time, no aliasing or images."""

from __future__ import annotations

import numpy as np
import pytest

from server.resample import PASSBAND_FRACTION, StreamingResampler, resample

RATES = [(24_000, 16_000), (8_000, 16_000), (24_000, 8_000)]


def _noise(rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(rate * seconds)) * 0.2).astype(
        np.float32)


def _sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def _chunked(x: np.ndarray, rs: StreamingResampler, sizes: list[int]) -> np.ndarray:
    out, i, j = [], 0, 0
    while i < len(x):
        n = sizes[j % len(sizes)]
        out.append(rs.process(x[i : i + n]))
        i, j = i + n, j + 1
    out.append(rs.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("src", "dst"), RATES)
@pytest.mark.parametrize("sizes", [["20ms"], [1, 7, 333, 2, 480, 5], [4096]])
def test_chunked_output_equals_one_pass(src, dst, sizes):
    sizes = [src // 50 if s == "20ms" else s for s in sizes]
    x = _noise(src, 0.7)
    whole = resample(x, src, dst)
    chunked = _chunked(x, StreamingResampler(src, dst), sizes)
    assert len(whole) == len(chunked) == -(-len(x) * dst // src)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_output_is_aligned_with_input_time(src, dst):
    """Group delay compensated: output k is the input signal at time k / dst."""
    x = _sine(440.0, src)
    y = resample(x, src, dst)
    expected = _sine(440.0, dst)
    core = slice(dst // 20, -dst // 20)  # away from the stream's start and end
    assert np.abs(y[core] - expected[core]).max() < 1e-3


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_passband_is_flat(src, dst):
    nyq = min(src, dst) / 2
    for freq in (100.0, 1000.0, PASSBAND_FRACTION * nyq * 0.98):
        y = resample(_sine(freq, src), src, dst)[dst // 10 : -dst // 10]
        gain_db = 20 * np.log10(np.sqrt(2) * y.std())
        assert abs(gain_db) < 0.05, (freq, gain_db)


@pytest.mark.parametrize(("src", "dst"), [(24_000, 16_000), (24_000, 8_000)])
def test_no_aliasing_when_downsampling(src, dst):
    """Tones above the new Nyquist frequency would alias into the band: they stay at least
    70 dB below the input, whatever frequency they would land on."""
    nyq = dst / 2
    for freq in (nyq * 1.02, nyq * 1.3, src / 2 * 0.97):
        y = resample(_sine(freq, src), src, dst)[dst // 10 : -dst // 10]
        level_db = 20 * np.log10(np.sqrt(2) * y.std() + 1e-12)
        assert level_db < -70, (freq, level_db)


def test_upsampling_images_are_suppressed():
    """8 -> 16 kHz: a 3 kHz tone must not leave its image at 5 kHz."""
    y = resample(_sine(3000.0, 8_000, 2.0), 8_000, 16_000)[1600:-1600]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16_000)
    tone = spectrum[np.argmin(np.abs(freqs - 3000))]
    image = spectrum[np.argmin(np.abs(freqs - 5000))]
    assert 20 * np.log10(image / tone) < -70


def test_same_rate_passes_through_and_bad_rates_fail():
    x = _noise(16_000, 0.1)
    rs = StreamingResampler(16_000, 16_000)
    np.testing.assert_array_equal(rs.process(x), x)
    assert rs.flush().size == 0
    with pytest.raises(ValueError):
        StreamingResampler(0, 16_000)


def test_process_after_flush_needs_reset():
    rs = StreamingResampler(24_000, 16_000)
    rs.process(_noise(24_000, 0.05))
    rs.flush()
    with pytest.raises(RuntimeError):
        rs.process(np.zeros(10, np.float32))
    rs.reset()
    x = _noise(24_000, 0.3, seed=3)
    np.testing.assert_allclose(np.concatenate([rs.process(x), rs.flush()]),
                               resample(x, 24_000, 16_000), atol=1e-6)


def test_latency_is_small():
    for src, dst in RATES:
        rs = StreamingResampler(src, dst)
        assert rs.latency_samples / src < 0.005  # under 5 ms of look-ahead
        # After latency_samples of look-ahead, all output up to the input's time is out.
        n = src // 10
        out = rs.process(_noise(src, 0.1))
        expected = (n - rs.latency_samples) * dst // src
        assert abs(len(out) - expected) <= 1
