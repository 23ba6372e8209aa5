"""Stateful polyphase FIR resampler (Kaiser-windowed sinc) for streaming audio between rates."""

# Output is aligned with the input: the filter's group delay is compensated, so output sample k
# is the input signal at time k / out_rate (this costs `latency_samples` input samples of
# look-ahead before an output sample can be produced). Feeding a signal in chunks of any size
# gives exactly the samples of one pass; `flush()` returns the tail at the end of a stream.

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy import signal

#: Attenuation of the stopband (dB): components above the lower Nyquist frequency are
#: suppressed by at least this much (aliases and images alike).
STOPBAND_DB = 80.0
#: The passband ends at this fraction of the lower Nyquist frequency (flat within 0.01 dB).
PASSBAND_FRACTION = 0.85


@cache
def _design(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase matrix (up, taps_per_phase) and the group delay in upsampled samples."""
    # Work at the upsampled rate; frequencies as fractions of its Nyquist (1.0).
    stop = 1.0 / max(up, down)
    width = stop * (1.0 - PASSBAND_FRACTION)
    numtaps, beta = signal.kaiserord(STOPBAND_DB, width)
    numtaps = max(numtaps, 3) | 1  # odd: a whole-sample group delay
    cutoff = stop - width / 2
    taps = signal.firwin(numtaps, cutoff, window=("kaiser", beta)) * up  # gain up: zero stuffing
    per_phase = math.ceil(numtaps / up)
    padded = np.zeros(per_phase * up)
    padded[:numtaps] = taps
    # phases[p, m] = h[p + m * up]
    return padded.reshape(per_phase, up).T.astype(np.float32).copy(), (numtaps - 1) // 2


class StreamingResampler:
    """Resample a mono float32 stream from `in_rate` to `out_rate` (any rational ratio).

    `process(chunk)` returns every output sample the input so far determines; `flush()` pads
    the end with silence and returns the rest, so that the whole stream yields
    ceil(n_in * out_rate / in_rate) samples. Not thread-safe: one per stream.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        g = math.gcd(in_rate, out_rate)
        self.in_rate, self.out_rate = in_rate, out_rate
        self.up, self.down = out_rate // g, in_rate // g
        self._phases, self._delay = _design(self.up, self.down)
        self._taps = self._phases.shape[1]
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Input samples an output sample waits for beyond its own time (filter look-ahead)."""
        return math.ceil(self._delay / self.up)

    def reset(self) -> None:
        """Start a new stream (time zero, silence before it)."""
        # history[j] is input sample (self._base + j); the filter sees zeros before time 0.
        self._history = np.zeros(self._taps - 1, dtype=np.float32)
        self._base = -(self._taps - 1)
        self._n_in = 0
        self._next_out = 0
        self._flushed = False

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the output samples now computable (float32)."""
        if self._flushed:
            raise RuntimeError("process() after flush(): call reset() to start a new stream")
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self.up == self.down:
            self._n_in += chunk.size
            return chunk.copy()
        self._history = np.concatenate([self._history, chunk])
        self._n_in += chunk.size
        return self._emit(self._n_in - 1)

    def flush(self) -> np.ndarray:
        """End the stream: output up to the input's end, with silence after it."""
        if self._flushed or self.up == self.down:
            self._flushed = True
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        total = -(-self._n_in * self.up // self.down)  # ceil
        if total <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        last_needed = ((total - 1) * self.down + self._delay) // self.up
        pad = max(0, last_needed - (self._n_in - 1))
        self._history = np.concatenate([self._history, np.zeros(pad, dtype=np.float32)])
        return self._emit(last_needed, limit=total)

    def _emit(self, last_input: int, limit: int | None = None) -> np.ndarray:
        """Outputs k whose newest input index floor((k*down + delay)/up) <= last_input."""
        # largest k with k*down + delay <= last_input*up + up - 1
        k_end = (last_input * self.up + self.up - 1 - self._delay) // self.down + 1
        if limit is not None:
            k_end = min(k_end, limit)
        k = np.arange(self._next_out, max(k_end, self._next_out))
        if k.size == 0:
            return np.zeros(0, dtype=np.float32)
        pos = k * self.down + self._delay
        newest = pos // self.up - self._base  # index into history
        phase = pos % self.up
        windows = np.lib.stride_tricks.sliding_window_view(self._history, self._taps)
        # windows[i] = history[i : i + taps]; need history[newest - m] for m = 0..taps-1
        rows = windows[newest - (self._taps - 1)][:, ::-1]
        out = np.einsum("km,km->k", rows, self._phases[phase]).astype(np.float32)
        self._next_out = int(k[-1]) + 1
        # Keep only the inputs future outputs can still need.
        next_pos = self._next_out * self.down + self._delay
        keep_from = next_pos // self.up - (self._taps - 1) - self._base
        if keep_from > 0:
            self._history = self._history[keep_from:]
            self._base += keep_from
        return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot resampling of a whole signal (same result as streaming it)."""
    rs = StreamingResampler(in_rate, out_rate)
    return np.concatenate([rs.process(samples), rs.flush()])
