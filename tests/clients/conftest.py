"""Fixtures of the client tests: the fake realtime server and espeak-ng speech files."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from clients.python.audio import write_wav
from tests.helpers import REPO, free_port, speech


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`stepaudio2-rt ARGS` in a subprocess, output captured."""
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def talk(ws: str, wav: Path, out: Path, report: Path, *flags: str,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """`stepaudio2-rt talk` with one WAV in, the reply WAV and a JSON report out; must succeed."""
    proc = cli("talk", "--url", ws, "--file", str(wav), "-o", str(out), "--json", str(report),
               *flags, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    """Base http URL of a fake realtime server (3 s tone replies sent at 2x real time)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.clients.fake_realtime_server", "--port", str(port)],
        cwd=REPO,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/info", proc, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def speech_file(path: Path, *parts: str | float) -> Path:
    """A 24 kHz WAV of espeak-ng sentences (str) and silences (float seconds), in order."""
    audio = [
        speech(p, sample_rate=24_000) if isinstance(p, str) else np.zeros(int(p * 24_000))
        for p in parts
    ]
    write_wav(path, np.concatenate(audio).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_file(
        tmp_path_factory.mktemp("speech") / "hello.wav", 0.3, "Hello, how are you today?", 0.2
    )


@pytest.fixture(scope="module")
def real_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base http URL of `stepaudio2-rt serve` on the tiny random checkpoint (replies capped)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--model",
            str(tiny_checkpoint),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-output-tokens",
            "100",
            "--plain-logs",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, 300)
        except (RuntimeError, TimeoutError) as exc:
            log.flush()
            tail = Path(log.name).read_text()[-3000:]
            raise RuntimeError(f"serve did not become ready: {exc}\n{tail}") from exc
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
