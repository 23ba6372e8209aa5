"""`stepaudio2-rt talk --file`: the reply WAV, per-turn latency, barge-in with a truncate."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import soundfile as sf

from tests.clients.conftest import cli, talk
from tests.helpers import REPO


def test_talk_writes_the_reply_and_reports_latency(fake_server, hello_wav, tmp_path):
    ws = fake_server.replace("http", "ws") + "/v1/realtime"
    out, report = tmp_path / "reply.wav", tmp_path / "talk.json"
    proc = talk(ws, hello_wav, out, report, "--speed", "4", "--transcribe", timeout=60)
    audio, rate = sf.read(out)
    assert rate == 24_000
    assert abs(len(audio) / rate - 3.0) < 0.05  # the fake server's whole 3 s reply
    assert abs(audio).max() > 0.2  # a tone, not silence
    turns = json.loads(report.read_text())["turns"]
    assert len(turns) == 1
    assert turns[0]["status"] == "completed" and not turns[0]["interrupted"]
    assert turns[0]["latency_ms"] > 0
    assert "word0" in proc.stdout and "you: hello there" in proc.stdout
    assert "latency" in proc.stderr


def test_talk_interrupt_after_cuts_the_reply(fake_server, hello_wav, tmp_path):
    ws = fake_server.replace("http", "ws") + "/v1/realtime"
    out, report = tmp_path / "reply.wav", tmp_path / "talk.json"
    talk(ws, hello_wav, out, report, "--speed", "2", "--interrupt-after", "800", timeout=60)
    turns = json.loads(report.read_text())["turns"]
    assert len(turns) == 2
    first, second = turns
    assert first["interrupted"] and first["status"] == "cancelled"
    # Cut once 800 ms were heard, plus the time the server's VAD needs to flag the new speech.
    assert 800 <= first["truncate_audio_end_ms"] <= 2000
    assert first["reply_ms_heard"] == first["truncate_audio_end_ms"]
    assert second["status"] == "completed" and not second["interrupted"]
    heard = first["truncate_audio_end_ms"] / 1000 + 3.0
    assert abs(sf.info(out).duration - heard) < 0.05  # the cut first reply, then the second
    log = httpx.get(fake_server + "/test/log").json()
    assert [t["audio_end_ms"] for t in log["truncates"]][-1] == first["truncate_audio_end_ms"]


def test_talk_reports_a_refused_connection(tmp_path, hello_wav):
    from tests.helpers import free_port

    proc = cli("talk", "--url", f"ws://127.0.0.1:{free_port()}/v1/realtime", "--file",
               str(hello_wav), timeout=60)
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr


def test_talk_reports_an_unreadable_file(fake_server, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    proc = cli("talk", "--url", fake_server.replace("http", "ws") + "/v1/realtime",
               "--file", str(bad), timeout=60)
    assert proc.returncode == 2
    assert "cannot read audio file" in proc.stderr


def test_talk_mic_without_sounddevice_says_how_to_install(fake_server):
    # Hide sounddevice even where it is installed: the message is what this test is about.
    code = (
        "import sys; sys.modules['sounddevice'] = None; from server.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "talk",
            "--mic",
            "--url",
            fake_server.replace("http", "ws") + "/v1/realtime",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "sounddevice" in proc.stderr and "--file" in proc.stderr
