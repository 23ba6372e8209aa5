"""The clients against a real `stepaudio2-rt serve` on the tiny random checkpoint (Must show).

The random model ends a reply after any token (sampling `<|EOT|>`, after ~115 tokens at the
median) or at the server's 100-token cap (status `incomplete`) or a client's smaller
`--max-output-tokens`: a reply may be short, so checks allow for that. Timeouts are generous
because these machines are shared; the figures belong to bench/, the checks here are behaviour.
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from tests.clients.conftest import cli, speech_file, talk
from tests.clients.test_clients_browser import (
    OUTPUT,
    check_conversation,
    run_steered_conversation,
)

ENDED = ("completed", "incomplete")


@pytest.mark.browser
def test_page_against_the_real_server(real_server, tmp_path):
    mic = speech_file(tmp_path / "mic.wav", "Hello, can you tell me a story?", 0.3)
    fig = run_steered_conversation(
        real_server, mic, tmp_path / "profile", OUTPUT / "real-server-conversation.png"
    )
    check_conversation(fig, exact_turns=False)
    assert fig["randomCheckpoint"]  # the banner says the weights are random
    assert fig["model"] == "step-audio-2-mini" and fig["voice"] == "default"


def test_talk_against_the_real_server(real_server, hello_wav, tmp_path):
    ws = real_server.replace("http", "ws") + "/v1/realtime"
    out, report = tmp_path / "reply.wav", tmp_path / "talk.json"
    proc = talk(ws, hello_wav, out, report, "--speed", "4", "--max-output-tokens", "40")
    (turn,) = json.loads(report.read_text())["turns"]
    assert turn["status"] in ENDED and not turn["interrupted"]
    assert turn["latency_ms"] > 0 and "latency" in proc.stderr
    info = sf.info(out)
    assert info.samplerate == 24_000
    # The random model may end its reply after any token, even the first audio code (40 ms).
    assert info.duration >= 0.04 and abs(info.duration - turn["reply_ms_received"] / 1000) < 0.01
    audio, _ = sf.read(out)
    assert abs(audio).max() > 0.0  # token2wav made sound, not digital silence

    cut, report = tmp_path / "cut.wav", tmp_path / "cut.json"
    for _ in range(3):  # a reply that ends (randomly) before 300 ms cannot be interrupted there
        talk(ws, hello_wav, cut, report, "--interrupt-after", "300")
        first, *rest = json.loads(report.read_text())["turns"]
        if first["interrupted"] or first["reply_ms_received"] > 1000:
            break
    assert first["interrupted"] and first["status"] in (*ENDED, "cancelled")
    assert 300 <= first["truncate_audio_end_ms"] <= first["reply_ms_received"]
    assert rest and rest[-1]["status"] in ENDED
    heard_s = (first["truncate_audio_end_ms"] + sum(t["reply_ms_received"] for t in rest)) / 1000
    assert abs(sf.info(cut).duration - heard_s) < 0.01


def test_loadgen_against_the_real_server(real_server, hello_wav, tmp_path):
    out = tmp_path / "load.json"
    proc = cli(
        "loadgen",
        "--url",
        real_server.replace("http", "ws") + "/v1/realtime",
        "--users",
        "10",
        "--duration",
        "30",
        "--file",
        str(hello_wav),
        "--barge-in-rate",
        "0.2",
        "--max-output-tokens",
        "30",
        "--turn-timeout",
        "240",
        "--json",
        str(out),
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["errors_by_code"]
    assert result["turns"] >= 10 and result["latency_ms"]["count"] >= 10
