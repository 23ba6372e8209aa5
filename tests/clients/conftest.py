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
