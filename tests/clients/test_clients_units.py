"""Client building blocks: events the server's own models accept, beta names, simulated playback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.python.audio import from_pcm16, read_wav, to_pcm16, write_wav
from clients.python.playback import SimulatedPlayback
from clients.python.realtime import normalize_event, session_update, with_model
from server.protocol import SessionConfig, SessionUpdateEvent, parse_client_event


@pytest.mark.parametrize("beta", [False, True])
def test_session_update_is_understood_by_the_server_protocol(beta):
    event = session_update(
        beta=beta,
        voice="narrator",
        instructions="Be brief.",
        vad_threshold=0.7,
        silence_duration_ms=800,
        transcription=True,
        max_output_tokens=300,
    )
    parsed = parse_client_event(json.dumps({**event, "event_id": "evt_1"}))
    assert isinstance(parsed, SessionUpdateEvent), parsed
    cfg = SessionConfig().apply(parsed.session)
    assert cfg.voice == "narrator" and cfg.instructions == "Be brief."
    assert cfg.turn_detection.threshold == 0.7
    assert cfg.turn_detection.silence_duration_ms == 800
    assert cfg.input_transcription is not None
    assert cfg.max_output_tokens == 300


def test_session_update_without_vad_turns_detection_off():
    parsed = parse_client_event(json.dumps(session_update(vad=False)))
    assert isinstance(parsed, SessionUpdateEvent)
    assert SessionConfig().apply(parsed.session).turn_detection is None


def test_beta_event_names_map_to_ga_names():
    assert normalize_event({"type": "response.audio.delta", "delta": "x"}) == {
        "type": "response.output_audio.delta",
        "delta": "x",
    }
    assert normalize_event({"type": "conversation.item.created"})["type"] == (
        "conversation.item.added"
    )
    ga = {"type": "response.output_audio_transcript.delta", "delta": "hi"}
    assert normalize_event(ga) == ga


def test_url_gets_the_model_unless_given():
    assert with_model("ws://h:1/v1/realtime", "m") == "ws://h:1/v1/realtime?model=m"
    assert with_model("ws://h:1/v1/realtime?model=x", "m") == "ws://h:1/v1/realtime?model=x"


def test_playback_counts_what_was_heard_and_stalls():
    pb = SimulatedPlayback(rate=1000)
    pb.push(500, now=10.0)  # 0.5 s of audio at t=10
    assert pb.played_samples(now=10.2) == 200
    pb.push(500, now=10.4)  # in time: no underrun
    assert pb.underruns == 0
    assert pb.played_samples(now=11.5) == 1000  # all heard, never more than received
    pb.push(250, now=11.5)  # arrived 0.5 s after the buffer ran dry
    assert pb.underruns == 1 and abs(pb.stall_s - 0.5) < 1e-9
    assert pb.played_samples(now=11.6) == 1100  # resumes where it stalled
    assert pb.stop(now=11.6) == 1100
    pb.push(1000, now=11.7)  # audio after a barge-in is never heard
    assert pb.played_samples(now=20.0) == 1100 and pb.received == 1250


def test_wav_roundtrip_resamples_to_24k(tmp_path):
    t = np.arange(16_000) / 16_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_wav(tmp_path / "a.wav", tone, rate=16_000)
    audio = read_wav(tmp_path / "a.wav")
    assert len(audio) == 24_000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    pcm = to_pcm16(audio)
    assert len(pcm) == 48_000
    assert np.allclose(from_pcm16(pcm), audio, atol=1 / 16_000)
