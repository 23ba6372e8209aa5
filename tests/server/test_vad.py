"""Turn detection with silero-vad on espeak-ng speech, silence and noise (times from samples)."""

from __future__ import annotations

import numpy as np
import pytest

from server.audio_codecs import AudioFormat, b64decode_audio, b64encode_audio
from server.resample import StreamingResampler, resample
from server.vad import (
    FRAME,
    IdleTimeout,
    ServerVadParams,
    SileroVad,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    VadModelError,
    bundled_model_path,
)
from tests.helpers import speech

SR = 16_000


@pytest.fixture(scope="module")
def model() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    return speech("Hello there, how are you doing today?")


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(SR * seconds), dtype=np.float32)


def _bounds_ms(x: np.ndarray, offset_s: float) -> tuple[float, float]:
    """Onset and end (ms) of the audible part of `x`, placed at `offset_s` in a signal."""
    loud = np.nonzero(np.abs(x) > 0.02)[0]
    return offset_s * 1000 + loud[0] / SR * 1000, offset_s * 1000 + loud[-1] / SR * 1000


def _run(model, signal, chunk=320, params=None, sizes=None):
    det = TurnDetector(model, params)
    events, i, j = [], 0, 0
    while i < len(signal):
        n = sizes[j % len(sizes)] if sizes else chunk
        events += det.feed(signal[i : i + n])
        i, j = i + n, j + 1
    return events


def _kinds(events):
    return [type(e).__name__ for e in events]


def test_one_turn_with_start_near_onset_and_stop_after_silence(model, utterance):
    signal = np.concatenate([_silence(1.0), utterance, _silence(1.5)])
    onset, end = _bounds_ms(utterance, 1.0)
    events = _run(model, signal)
    assert _kinds(events) == ["SpeechStarted", "SpeechStopped"]
    started, stopped = events
    assert isinstance(started.audio_start_ms, int) and isinstance(stopped.audio_end_ms, int)
    assert abs(started.audio_start_ms - onset) <= 100
    assert end + 500 - FRAME / SR * 1000 <= stopped.audio_end_ms <= end + 500 + 250
    assert stopped.audio_start_ms == started.audio_start_ms
    # Prefix padding kept; the committed audio is exactly the input between the two marks.
    assert stopped.padded_start_ms == started.audio_start_ms - 300
    a, b = stopped.padded_start_ms * SR // 1000, stopped.audio_end_ms * SR // 1000
    np.testing.assert_array_equal(stopped.samples, signal[a:b])


def test_chunk_size_does_not_change_the_turns(model, utterance):
    signal = np.concatenate([_silence(0.7), utterance, _silence(1.0)])
    reference = _run(model, signal, chunk=320)
    for sizes in ([1, 333, 7, 4000, 511], [SR * 10]):
        events = _run(model, signal, sizes=sizes)
        assert _kinds(events) == _kinds(reference)
        for a, b in zip(events, reference, strict=True):
            assert a.audio_start_ms == b.audio_start_ms
            if isinstance(a, SpeechStopped):
                assert a.audio_end_ms == b.audio_end_ms
                np.testing.assert_array_equal(a.samples, b.samples)


def test_two_utterances_one_second_apart_are_two_turns(model, utterance):
    signal = np.concatenate([_silence(0.5), utterance, _silence(1.0), utterance, _silence(1.0)])
    events = _run(model, signal)
    assert _kinds(events) == ["SpeechStarted", "SpeechStopped"] * 2
    second_onset, _ = _bounds_ms(utterance, 0.5 + len(utterance) / SR + 1.0)
    assert abs(events[2].audio_start_ms - second_onset) <= 100
    # The second turn's padding never reaches back into the first turn's audio.
    assert events[3].padded_start_ms >= events[1].audio_end_ms


def test_a_long_silence_duration_joins_the_two_utterances(model, utterance):
    signal = np.concatenate([_silence(0.5), utterance, _silence(1.0), utterance, _silence(2.0)])
    events = _run(model, signal, params=ServerVadParams(silence_duration_ms=1500))
    assert _kinds(events) == ["SpeechStarted", "SpeechStopped"]


@pytest.mark.parametrize("kind", ["silence", "quiet noise", "loud noise", "hum"])
def test_silence_or_noise_alone_is_no_turn(model, kind):
    rng = np.random.default_rng(0)
    n = SR * 4
    signal = {
        "silence": np.zeros(n),
        "quiet noise": rng.standard_normal(n) * 0.01,
        "loud noise": rng.standard_normal(n) * 0.2,
        "hum": 0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / SR),
    }[kind].astype(np.float32)
    assert _run(model, signal) == []


def test_speech_in_noise_is_still_one_turn(model, utterance):
    signal = np.concatenate([_silence(1.0), utterance, _silence(1.5)])
    noise = np.random.default_rng(1).standard_normal(len(signal)).astype(np.float32)
    signal = signal + noise * 0.01
    assert _kinds(_run(model, signal)) == ["SpeechStarted", "SpeechStopped"]


def test_prefix_padding_is_configurable(model, utterance):
    signal = np.concatenate([_silence(1.0), utterance, _silence(1.0)])
    for prefix in (0, 300, 800):
        stopped = _run(model, signal, params=ServerVadParams(prefix_padding_ms=prefix))[1]
        assert stopped.padded_start_ms == stopped.audio_start_ms - prefix
        assert len(stopped.samples) == (stopped.audio_end_ms - stopped.padded_start_ms) * SR // 1000


def test_idle_timeout_fires_from_sample_time(model, utterance):
    events = _run(model, _silence(5.0), params=ServerVadParams(idle_timeout_ms=2000))
    assert _kinds(events) == ["IdleTimeout", "IdleTimeout"]
    assert [abs(e.audio_end_ms - t) <= FRAME * 1000 // SR for e, t in zip(
        events, (2000, 4000), strict=True)] == [True, True]
    assert events[1].audio_start_ms == events[0].audio_end_ms
    assert _run(model, _silence(5.0)) == []
    # Speech re-arms the timer: it counts from the end of the turn.
    signal = np.concatenate([utterance, _silence(3.0)])
    events = _run(model, signal, params=ServerVadParams(idle_timeout_ms=2000))
    assert _kinds(events) == ["SpeechStarted", "SpeechStopped", "IdleTimeout"]
    assert isinstance(events[2], IdleTimeout)
    assert events[2].audio_start_ms == events[1].audio_end_ms


def test_clear_drops_the_open_turn_and_force_stop_ends_it(model, utterance):
    det = TurnDetector(model)
    events = det.feed(np.concatenate([_silence(0.5), utterance[: SR]]))
    assert _kinds(events) == ["SpeechStarted"] and det.speaking
    det.clear()
    assert not det.speaking
    assert det.feed(_silence(1.5)) == []
    assert det.force_stop() is None

    det = TurnDetector(model)
    det.feed(np.concatenate([_silence(0.5), utterance[: SR]]))
    stopped = det.force_stop()
    assert isinstance(stopped, SpeechStopped)
    assert stopped.audio_end_ms == det.position_ms == 1500
    assert not det.speaking


@pytest.mark.parametrize("fmt", [AudioFormat.PCM16, AudioFormat.PCMU])
def test_wire_audio_through_resampler_to_turns(model, utterance, fmt):
    """Client audio (24 kHz pcm16 or 8 kHz mu-law, 20 ms base64 chunks) -> 16 kHz -> turns."""
    signal = np.concatenate([_silence(1.0), utterance, _silence(1.5)])
    wire = resample(signal, SR, fmt.sample_rate)
    step = fmt.sample_rate // 50
    rs, det, events = StreamingResampler(fmt.sample_rate, SR), TurnDetector(model), []
    for i in range(0, len(wire), step):
        pcm = b64decode_audio(b64encode_audio(wire[i : i + step], fmt), fmt)
        events += det.feed(rs.process(pcm))
    assert _kinds(events) == ["SpeechStarted", "SpeechStopped"]
    onset, _ = _bounds_ms(utterance, 1.0)
    assert abs(events[0].audio_start_ms - onset) <= 100


def test_started_event_comes_before_the_turn_ends(model, utterance):
    """speech_started is reported while the user is still speaking (for barge-in)."""
    det = TurnDetector(model)
    det.feed(_silence(1.0))
    first_half = det.feed(utterance[: len(utterance) // 2])
    assert [type(e) for e in first_half] == [SpeechStarted]


def test_missing_or_corrupt_model_is_a_clear_error(tmp_path):
    assert bundled_model_path().is_file()
    with pytest.raises(VadModelError, match="not found"):
        SileroVad(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not onnx")
    with pytest.raises(VadModelError, match="cannot load"):
        SileroVad(bad)


def test_session_turn_detection_settings_drive_the_detector(model, utterance):
    """The protocol's TurnDetection (semantic_vad mapped by eagerness) is the detector's input."""
    from server.protocol import TurnDetection

    signal = np.concatenate([_silence(0.5), utterance, _silence(0.8), utterance, _silence(2.0)])
    patient = TurnDetection(type="semantic_vad", eagerness="low").effective()
    eager = TurnDetection(type="semantic_vad", eagerness="high").effective()
    assert len(_run(model, signal, params=patient)) == 2  # 0.8 s pause is not the end
    assert len(_run(model, signal, params=eager)) == 4
    # session.update mid-stream: set_params applies from the next frame on.
    det = TurnDetector(model)
    det.set_params(ServerVadParams(silence_duration_ms=1500))
    assert _kinds(det.feed(signal)) == ["SpeechStarted", "SpeechStopped"]
