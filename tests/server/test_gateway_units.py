"""Small pure parts of the gateway: turn states, settings, auth, truncation and prompt budget."""

from __future__ import annotations

import numpy as np
import pytest

from server import conversation as conv
from server.auth import check_key, presented_key
from server.settings import Settings
from server.state import InvalidTransition, TurnEvent, TurnState, TurnStateMachine


def test_turn_states_of_a_barge_in():
    machine = TurnStateMachine()
    steps = [TurnEvent.SPEECH_STARTED, TurnEvent.SPEECH_STOPPED, TurnEvent.COMMITTED,
             TurnEvent.RESPONSE_STARTED, TurnEvent.BARGE_IN, TurnEvent.SPEECH_STARTED,
             TurnEvent.RESPONSE_FINISHED]
    seen = [machine.apply(step) for step in steps]
    assert seen == [TurnState.USER_SPEAKING, TurnState.USER_SPEAKING, TurnState.COMMITTED,
                    TurnState.RESPONDING, TurnState.INTERRUPTED, TurnState.INTERRUPTED,
                    TurnState.USER_SPEAKING]
    with pytest.raises(InvalidTransition):
        TurnStateMachine().apply(TurnEvent.BARGE_IN)  # nothing to interrupt


def test_settings_from_env_and_flags(monkeypatch):
    monkeypatch.setenv("STEPAUDIO2_API_KEYS", "a,b")
    monkeypatch.setenv("STEPAUDIO2_ENGINE_URLS", '["http://h1:8000/", "http://h2:8000"]')
    monkeypatch.setenv("STEPAUDIO2_MAX_SESSIONS", "7")
    monkeypatch.setenv("STEPAUDIO2_TOKEN2WAV_PRECISION", "int8")
    settings = Settings(port=9000)
    assert settings.token2wav_precision == "int8"
    assert Settings(token2wav_precision="fp32").token2wav_precision == "fp32"
    with pytest.raises(ValueError, match="token2wav_precision"):
        Settings(token2wav_precision="fp8")
    assert settings.api_keys == ["a", "b"]
    assert settings.engine_urls == ["http://h1:8000", "http://h2:8000"]
    assert (settings.max_sessions, settings.port) == (7, 9000)
    assert (settings.temperature, settings.top_p, settings.repetition_penalty) == (0.7, 0.9, 1.05)
    with pytest.raises(ValueError, match="engine URL"):
        Settings(engine_urls=["ftp://x"])
    with pytest.raises(ValueError):
        Settings(audio_delta_ms=500)  # deltas must stay within 40-200 ms


def test_serve_flags_mirror_settings():
    from server.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "/m", "--api-key", "k1", "--api-key",
                                      "k2", "--engine-url", "http://e:1", "--server-tool",
                                      "datetime", "--max-sessions", "3",
                                      "--token2wav-precision", "int8"])
    assert args.api_keys == ["k1", "k2"] and args.engine_urls == ["http://e:1"]
    assert args.server_tools == ["datetime"] and args.max_sessions == 3
    assert args.token2wav_precision == "int8"
    assert args.port is None  # not given: the env var or the default applies
    fields = set(Settings.model_fields)
    from server.serve_cli import _FLAGS

    assert {dest for _, dest, _ in _FLAGS} <= fields


def test_auth_sources_and_statuses():
    assert presented_key({"authorization": "Bearer k"}, []) == "k"
    assert presented_key({}, ["realtime", "openai-insecure-api-key.k2"]) == "k2"
    assert presented_key({}, ["realtime"]) is None
    assert check_key([], None).ok
    assert check_key(["k"], None).status == 401
    assert check_key(["k"], "x").status == 403
    assert check_key(["j", "k"], "k").ok


def test_truncation_cuts_audio_codes_and_text_together():
    audio_base = 1000
    ids = []
    for group in range(10):  # TA4: 1 text id + 4 audio ids per group
        ids += [group, *(audio_base + group * 4 + k for k in range(4))]
    message = conv.AssistantMessage(
        id="m", modality="audio", full_text="abcdefghij", full_speech_ids=tuple(ids),
        full_audio_codes=40, is_audio=lambda i: i >= audio_base, tail_ids=(99,))
    message.audio_pcm16.extend(bytes(40 * 960 * 2))  # 1.6 s sent
    assert message.sent_ms == 1600
    message.truncate(400)
    assert message.audio_codes == 10 and message.text == "abcdefghij"[:10 * 10 // 40]
    assert sum(1 for i in message.speech_ids if i >= audio_base) == 10
    assert message.speech_ids[-1] == 99 and len(message.audio) == 400 * 48
    message.truncate(1600)  # a later client truncate measures from the full reply
    assert message.audio_codes == 40
    with pytest.raises(ValueError, match="past the audio"):
        message.truncate(1601)


def test_prompt_budget_keeps_newest_items():
    items = [conv.UserMessage(id=f"u{n}", parts=[conv.UserText("x" * 300)]) for n in range(10)]
    items.append(conv.UserMessage(id="audio", parts=[conv.UserAudio(np.zeros(16000 * 10))]))
    kept = conv.items_within_budget(items, 400)
    assert kept[-1].id == "audio" and kept[0].id != "u0"
    assert sum(conv.estimate_tokens(i) for i in kept) <= 400


def test_json_logs_carry_the_session_id():
    import json
    import logging

    from server.logs import JsonFormatter, session_id_var

    token = session_id_var.set("sess_abc")
    try:
        record = logging.makeLogRecord({"name": "server.session", "levelname": "INFO",
                                        "msg": "opened %s", "args": ("now",), "dialect": "ga"})
        line = json.loads(JsonFormatter().format(record))
    finally:
        session_id_var.reset(token)
    assert line["msg"] == "opened now" and line["session_id"] == "sess_abc"
    assert line["dialect"] == "ga" and line["level"] == "info"


def test_metrics_show_each_remote_engine_server():
    from engine.remote import Server
    from server.metrics import Metrics

    metrics = Metrics()
    servers = [Server("http://a:8000", healthy=True, in_flight=3),
               Server("http://b:8000", healthy=False, in_flight=0)]
    metrics.observe_engine_servers(servers)
    text = metrics.render().decode()
    assert 'stepaudio2_engine_server_up{url="http://a:8000"} 1.0' in text
    assert 'stepaudio2_engine_server_up{url="http://b:8000"} 0.0' in text
    assert 'stepaudio2_engine_server_in_flight{url="http://a:8000"} 3.0' in text
    servers[1].healthy = True  # put back after a health check: the next scrape says so
    metrics.observe_engine_servers(servers)
    assert 'stepaudio2_engine_server_up{url="http://b:8000"} 1.0' in metrics.render().decode()
