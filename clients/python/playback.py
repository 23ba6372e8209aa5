"""A simulated loudspeaker: plays received audio in real time, so a client knows what was heard."""

from __future__ import annotations

import time

from clients.python.audio import SAMPLE_RATE

# A gap shorter than this between the end of the buffered audio and the next chunk is jitter a
# real player's output buffer absorbs; longer gaps are audible stalls (underruns).
UNDERRUN_GRACE_S = 0.02


class SimulatedPlayback:
    """Real-time playback of one response's audio, started by its first chunk.

    `played_samples(now)` is what a listener has heard so far; a chunk that arrives after the
    buffered audio ran out counts as an underrun and playback resumes from there (as a real
    player stalls and resumes).
    """

    def __init__(self, rate: int = SAMPLE_RATE, clock=time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.received = 0  # samples pushed
        self.first_audio_at: float | None = None  # wall time of the first chunk
        self.underruns = 0
        self.stall_s = 0.0
        self.stopped_at_samples: int | None = None
        self._base = 0  # samples played before _start
        self._start = 0.0  # wall time when the current continuous run began

    def push(self, samples: int, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if self.stopped_at_samples is not None:
            return  # audio after a stop (barge-in) is never heard
        if self.first_audio_at is None:
            self.first_audio_at = now
            self._start = now
        else:
            dry_at = self._start + (self.received - self._base) / self.rate
            if now - dry_at > UNDERRUN_GRACE_S:
                self.underruns += 1
                self.stall_s += now - dry_at
                self._base, self._start = self.received, now
        self.received += samples

    def played_samples(self, now: float | None = None) -> int:
        if self.stopped_at_samples is not None:
            return self.stopped_at_samples
        if self.first_audio_at is None:
            return 0
        now = self.clock() if now is None else now
        # The epsilon keeps float noise (0.2 s * rate = 199.999...) from losing a sample.
        return min(self.received, self._base + int((now - self._start) * self.rate + 1e-6))

    def played_ms(self, now: float | None = None) -> int:
        return int(self.played_samples(now) * 1000 // self.rate)

    def finished_at(self) -> float | None:
        """Wall time when everything received so far will have been played."""
        if self.first_audio_at is None:
            return None
        return self._start + (self.received - self._base) / self.rate

    def stop(self, now: float | None = None) -> int:
        """Stop at once (barge-in): freeze and return the samples actually played."""
        if self.stopped_at_samples is None:
            self.stopped_at_samples = self.played_samples(now)
        return self.stopped_at_samples
