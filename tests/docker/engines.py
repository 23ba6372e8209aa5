"""Real processes for the scale-out test: vLLM api_servers with our plugin, a gateway, a client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.helpers import REPO, speech

SERVED_MODEL_NAME = "step-audio-2-mini"

# vLLM on the CPU (TESTING.md): in-process engine core (fast start), 1 GiB KV cache, both cores.
VLLM_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def progress(message: str) -> None:
    """One progress line on stderr (pytest shows it with -s or on failure)."""
    sys.stderr.write(f"[scale-out {time.strftime('%H:%M:%S')}] {message}\n")


class Process:
    """A subprocess with its log file, started and restarted with the same command line."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log_path, self.env = name, argv, log_path, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            # Its own process group: vLLM's engine core is a child process that dies with it.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        progress(f"started {self.name} (pid {self.proc.pid})")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL to every process of it: open connections are cut as a crash would."""
        self._signal_group(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=60)
        progress(f"killed {self.name} (SIGKILL)")

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)  # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    def wait_http_ok(self, url: str, timeout: float) -> None:
        """Poll `url` until it answers 200; fail with the log tail if the process dies first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    progress(f"{self.name} is ready")
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.5)


class VllmServer(Process):
    """`python -m vllm.entrypoints.openai.api_server` serving the checkpoint, as users run it."""

    def __init__(self, name: str, model_dir: Path, port: int, log_dir: Path) -> None:
        argv = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--served-model-name",
            SERVED_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "4096",
            "--max-num-seqs",
            "4",
            "--enforce-eager",
            # The remote engine sends its own chat template (engine/remote.py).
            "--trust-request-chat-template",
        ]
        super().__init__(name, argv, log_dir / f"{name}.log", os.environ | VLLM_ENV)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 300) -> None:
        self.wait_http_ok(f"{self.url}/health", timeout)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of a Prometheus metric's samples on this server (matching `labels`)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return metric_sum(text, name, labels)

    def finished_requests(self) -> int:
        """Requests this server finished normally (stop or length) since it started."""
        name = "vllm:request_success_total"
        return int(
            self.metric(name, {"finished_reason": "stop"})
            + self.metric(name, {"finished_reason": "length"})
        )

    def running_requests(self) -> int:
        return int(self.metric("vllm:num_requests_running"))


class Gateway(Process):
    """`python -m server.cli serve` in front of the given vLLM servers."""

    def __init__(self, model_dir: Path, port: int, engine_urls: list[str], log_dir: Path) -> None:
        argv = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--plain-logs",
        ]
        for url in engine_urls:
            argv += ["--engine-url", url]
        super().__init__("gateway", argv, log_dir / "gateway.log", os.environ | VLLM_ENV)
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/realtime?model={SERVED_MODEL_NAME}"

    def wait_ready(self, timeout: float = 300) -> None:
        self.wait_http_ok(f"{self.url}/readyz", timeout)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric_sum(httpx.get(f"{self.url}/metrics", timeout=10).text, name, labels)


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of `name` in a Prometheus text exposition whose labels match."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        found = dict(_LABEL.findall(match.group(2) or ""))
        if all(found.get(key) == value for key, value in (labels or {}).items()):
            total += float(match.group(3))
    return total


def spoken_pcm16(text: str, rate: int = 24_000, lead_s: float = 0.3, tail_s: float = 1.2) -> bytes:
    """espeak-ng speech with silence around it (the tail ends the turn under server VAD)."""
    voice = speech(text, sample_rate=rate)
    samples = np.concatenate(
        [np.zeros(int(lead_s * rate), np.float32), voice, np.zeros(int(tail_s * rate), np.float32)]
    )
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class RealtimeClient:
    """A raw OpenAI Realtime client over `websockets` that keeps every event it received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str) -> RealtimeClient:
        import websockets

        ws = await websockets.connect(url, max_size=None, open_timeout=60)
        client = cls(ws)
        first = await client.recv()
        assert first["type"] == "session.created", first
        return client

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, timeout: float = 120) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 180) -> list[dict[str, Any]]:
        """Every event up to and including the first of type `kind`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        got: list[dict[str, Any]] = []
        while True:
            event = await self.recv(max(0.01, deadline - loop.time()))
            got.append(event)
            if event["type"] == kind:
                return got

    async def update_session(self, session: dict[str, Any]) -> None:
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        events = await self.until("session.updated", timeout=60)
        errors = [e for e in events if e["type"] == "error"]
        assert not errors, errors

    async def append_audio(self, pcm: bytes, chunk_bytes: int = 9600) -> None:
        for start in range(0, len(pcm), chunk_bytes):
            chunk = base64.b64encode(pcm[start : start + chunk_bytes]).decode("ascii")
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})

    async def spoken_turn(self, pcm: bytes, timeout: float = 240) -> list[dict[str, Any]]:
        """Speak one turn (server VAD answers it); every event up to its `response.done`."""
        await self.append_audio(pcm)
        return await self.until("response.done", timeout)

    async def close(self) -> None:
        await self.ws.close()
