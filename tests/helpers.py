"""Helpers shared by the test packages: checkpoints, speech from espeak-ng, the oracle, ports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
ORACLE_PYTHON = REPO / ".venv-oracle" / "bin" / "python"


def write_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Write a tiny checkpoint through the CLI users run (`make-checkpoint --tiny`)."""
    from server.cli import main

    main(["make-checkpoint", "--tiny", str(directory), "--seed", str(seed)])
    return directory


def speech(text: str, sample_rate: int = 16_000, voice: str = "en") -> np.ndarray:
    """espeak-ng speech of `text` as mono float32 at `sample_rate` (sox does the resampling)."""
    raw = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True
    ).stdout
    pcm = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "raw", "-r", str(sample_rate), "-c", "1", "-b", "16",
         "-e", "signed-integer", "-"],
        input=raw, check=True, capture_output=True,
    ).stdout
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_oracle(script: str, args: dict, timeout: float = 600) -> dict:
    """Run `tests/oracle/<script>` in the reference environment with JSON args; JSON result."""
    proc = subprocess.run(
        [str(ORACLE_PYTHON), str(REPO / "tests" / "oracle" / script), json.dumps(args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"oracle script {script} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
