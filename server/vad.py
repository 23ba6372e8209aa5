"""Voice activity and turn detection: silero-vad (its bundled ONNX model) + OpenAI's server_vad."""

# `SileroVad` holds one onnxruntime session (one intra-op and one inter-op thread: more threads
# gave 25-100 ms p99 stalls on 2 cores) shared by all sessions; `TurnDetector` is per session and
# turns 16 kHz audio in chunks of any size into `SpeechStarted` / `SpeechStopped` /
# `IdleTimeout` events. All times come from sample counts, never the wall clock.

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
FRAME = 512  # samples per VAD step at 16 kHz (32 ms), as the model expects
CONTEXT = 64  # samples of the previous frame prepended to each step (silero's streaming input)
_STATE_SHAPE = (2, 1, 128)  # recurrent state of the silero v5+ model
# Speech ends only when the probability falls this far below the start threshold (silero's own
# hysteresis in its VADIterator), so a wobbling probability does not split words.
_HYSTERESIS = 0.15


class VadModelError(RuntimeError):
    """The VAD model file is missing or cannot be loaded."""


def bundled_model_path() -> Path:
    """The ONNX model inside the installed `silero_vad` package, found without importing it
    (its package imports torch utilities the server does not need)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadModelError("the silero-vad package is not installed (pip install silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise VadModelError(f"silero-vad's bundled ONNX model is missing: {path}")
    return path


class SileroVad:
    """The silero-vad ONNX model; thread-safe, shared by every stream (streams hold state)."""

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else bundled_model_path()
        if not self.path.is_file():
            raise VadModelError(f"VAD model file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VadModelError(f"cannot load VAD model {self.path}: {exc}") from exc
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise VadModelError(f"{self.path} is not a silero-vad model (inputs {sorted(names)})")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        logger.info("silero VAD loaded from %s", self.path)

    def initial_state(self) -> np.ndarray:
        return np.zeros(_STATE_SHAPE, dtype=np.float32)

    def step(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of one frame. `window`: (CONTEXT + FRAME,) float32 = the last
        CONTEXT samples before the frame followed by the frame; returns (prob, new state)."""
        out, new_state = self._session.run(
            None, {"input": window.reshape(1, -1), "state": state, "sr": self._sr}
        )
        return float(out.reshape(-1)[0]), new_state


class VadStream:
    """Frame-by-frame speech probabilities of one 16 kHz stream fed in chunks of any size."""

    def __init__(self, model: SileroVad) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._state = self.model.initial_state()
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> list[float]:
        """Probabilities of the frames completed by `samples` (in order)."""
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        probs = []
        while self._pending.size >= FRAME:
            frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            prob, self._state = self.model.step(np.concatenate([self._context, frame]), self._state)
            self._context = frame[-CONTEXT:]
            probs.append(prob)
        return probs


class VadParams(Protocol):
    """OpenAI's server_vad parameters (e.g. `server.protocol.TurnDetection.effective()`)."""

    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    idle_timeout_ms: int | None


@dataclass(frozen=True)
class ServerVadParams:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # start of the first speech frame, from the stream's first sample


@dataclass(frozen=True)
class SpeechStopped:
    """The end of a turn. `samples` (16 kHz float32) is the committed utterance: from
    `padded_start_ms` (speech start minus prefix padding) to `audio_end_ms`, which includes the
    trailing silence of `silence_duration_ms`, as OpenAI's server_vad commits it."""

    audio_start_ms: int
    audio_end_ms: int
    padded_start_ms: int
    samples: np.ndarray


@dataclass(frozen=True)
class IdleTimeout:
    """No speech for `idle_timeout_ms` of received audio (`audio_start_ms` to `audio_end_ms`)."""

    audio_start_ms: int
    audio_end_ms: int


TurnEvent = SpeechStarted | SpeechStopped | IdleTimeout


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _samples(ms: int) -> int:
    return ms * SAMPLE_RATE // 1000


class TurnDetector:
    """OpenAI `server_vad` turn detection over one session's 16 kHz input audio."""

    def __init__(self, model: SileroVad, params: VadParams | None = None) -> None:
        self._vad = VadStream(model)
        self.params: VadParams = params or ServerVadParams()
        self._pos = 0  # samples received since the stream began
        self._frames_end = 0  # samples covered by completed VAD frames
        # Audio from self._buf_start to self._pos, as appended chunks (joined lazily: a long
        # turn fed in 20 ms chunks would otherwise be copied once per chunk).
        self._chunks: list[np.ndarray] = []
        self._buf_start = 0
        self._floor = 0  # audio before this was already committed: never reused as padding
        self._speech_start: int | None = None  # sample where the current turn's speech began
        self._silence_start: int | None = None
        self._idle_from = 0

    @property
    def speaking(self) -> bool:
        return self._speech_start is not None

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio received so far."""
        return _ms(self._pos)

    def set_params(self, params: VadParams) -> None:
        """New parameters (session.update); they apply from the next frame on."""
        self.params = params

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        """Add 16 kHz float32 audio (any length); returns the events it completes, in order."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._chunks.append(samples)
        self._pos += samples.size
        events: list[TurnEvent] = []
        for prob in self._vad.feed(samples):
            frame_start = self._frames_end
            self._frames_end += FRAME
            event = self._on_frame(prob, frame_start)
            if event is not None:
                events.append(event)
        if not self.speaking:
            self._trim()
        return events

    def _on_frame(self, prob: float, frame_start: int) -> TurnEvent | None:
        p = self.params
        frame_end = frame_start + FRAME
        if self._speech_start is None:
            if prob >= p.threshold:
                self._speech_start = frame_start
                self._silence_start = None
                return SpeechStarted(audio_start_ms=_ms(frame_start))
            if p.idle_timeout_ms and frame_end - self._idle_from >= _samples(p.idle_timeout_ms):
                event = IdleTimeout(_ms(self._idle_from), _ms(frame_end))
                self._idle_from = frame_end
                return event
            return None
        if prob >= p.threshold:
            self._silence_start = None
        elif prob < max(p.threshold - _HYSTERESIS, 0.01) and self._silence_start is None:
            self._silence_start = frame_start
        if (self._silence_start is not None
                and frame_end - self._silence_start >= _samples(p.silence_duration_ms)):
            return self._stop(frame_end)
        return None

    def _stop(self, end: int) -> SpeechStopped:
        assert self._speech_start is not None
        start = self._speech_start
        padded = max(start - _samples(self.params.prefix_padding_ms), self._floor, self._buf_start)
        samples = self._joined()[padded - self._buf_start : end - self._buf_start].copy()
        event = SpeechStopped(audio_start_ms=_ms(start), audio_end_ms=_ms(end),
                              padded_start_ms=_ms(padded), samples=samples)
        self._floor = end
        self._idle_from = end
        self._speech_start = self._silence_start = None
        return event

    def force_stop(self) -> SpeechStopped | None:
        """End the current turn now (a manual commit during speech); None when none is open."""
        if self._speech_start is None:
            return None
        return self._stop(self._pos)

    def clear(self) -> None:
        """Forget the audio received so far (input_audio_buffer.clear); the timeline goes on.

        The VAD restarts too, so nothing heard before the clear can open or end a turn."""
        self._vad.reset()
        self._frames_end = self._pos
        self._speech_start = self._silence_start = None
        self._floor = self._idle_from = self._pos
        self._trim()

    def restart_idle(self) -> None:
        """Count idle time from now (e.g. when the assistant stops speaking)."""
        self._idle_from = self._pos

    def _trim(self) -> None:
        """Between turns keep only what prefix padding may still need."""
        keep_from = max(self._pos - _samples(self.params.prefix_padding_ms) - FRAME, self._floor,
                        self._buf_start)
        if keep_from > self._buf_start:
            self._chunks = [self._joined()[keep_from - self._buf_start :]]
            self._buf_start = keep_from

    def _joined(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks
                            else np.zeros(0, dtype=np.float32)]
        return self._chunks[0]
