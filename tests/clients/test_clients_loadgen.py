"""`stepaudio2-rt loadgen` on the fake server: exact accounting of turns, barge-ins, errors.

The 10 users x 30 s run of the issue is in test_clients_real_server.py, on the real server.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.helpers import REPO


def test_loadgen_counts_turns_and_barge_ins(fake_server, hello_wav, tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "loadgen",
            "--url",
            fake_server.replace("http", "ws") + "/v1/realtime",
            "--users",
            "5",
            "--duration",
            "12",
            "--file",
            str(hello_wav),
            "--barge-in-rate",
            "0.4",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["errors_by_code"]
    # A turn takes ~2 s of speech + 0.5 s VAD silence + <=3 s of reply + 0.5 s pause.
    assert result["turns"] >= 5 * 2
    assert result["latency_ms"]["count"] == result["turns"]
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["interrupted_turns"] > 0
    assert result["reply_audio_s"] > 0
    # The fake server sends audio at 2x real time: no reply may stall a listener.
    assert result["underruns"] == 0
    assert "latency p50" in proc.stdout
    log = httpx.get(fake_server + "/test/log").json()
    # Every interrupted reply was truncated at a point the server had actually sent.
    cut = [t for t in log["truncates"] if t["sent_ms"] is not None]
    assert len(cut) >= result["interrupted_turns"] > 0
    assert all(0 <= t["audio_end_ms"] <= t["sent_ms"] for t in cut)


def test_loadgen_counts_a_dead_server_as_errors(hello_wav, tmp_path):
    from tests.helpers import free_port

    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "loadgen",
            "--url",
            f"ws://127.0.0.1:{free_port()}/v1/realtime",
            "--users",
            "3",
            "--duration",
            "1",
            "--file",
            str(hello_wav),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert json.loads(out.read_text())["errors_by_code"] == {"connect_failed": 3}
