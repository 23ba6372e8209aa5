"""The remote engine against a real vLLM OpenAI server (plugin, tiny checkpoint) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio

from engine.types import (
    AudioSegment,
    EngineDelta,
    EngineError,
    EngineRequest,
    SamplingParams,
    TextSegment,
)
from tests.helpers import free_port, speech

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

SERVER_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` with the plugin, as users run it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
             "--model", str(tiny_checkpoint), "--served-model-name", "step-audio-2-mini",
             "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
             "--max-num-seqs", "4", "--enforce-eager", "--trust-request-chat-template"],
            env=os.environ | SERVER_ENV, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api_server exited: {log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"api_server not up: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(server_url: str, tiny_checkpoint: Path):
    """Two URLs for the one server (127.0.0.1 and localhost): two balancer entries."""
    from engine.factory import create_engine

    alias = server_url.replace("127.0.0.1", "localhost")
    engine = await create_engine(tiny_checkpoint, engine_urls=[server_url, alias],
                                 health_interval=0.5)
    yield engine
    await engine.close()


def _prompt(audio: np.ndarray) -> tuple:
    return (TextSegment("<|BOT|>system\nYou are a helpful assistant.<|EOT|><|BOT|>human\n"),
            AudioSegment(audio), TextSegment("What did I say?<|EOT|><|BOT|>assistant\n"))


def _request(request_id: str, max_tokens: int, audio: np.ndarray | None = None) -> EngineRequest:
    audio = speech("hello from the remote test") if audio is None else audio
    # The official sampling settings, seeded: the tiny model's single likeliest token is <|EOT|>.
    return EngineRequest(request_id, _prompt(audio), SamplingParams(max_tokens=max_tokens, seed=7))


async def _collect(engine, request: EngineRequest) -> list[EngineDelta]:
    return [delta async for delta in engine.generate(request)]


async def test_server_prompt_ids_equal_in_process_ids(engine, server_url: str) -> None:
    from engine.prompt import expand_audio_placeholders, tokenize_prompt

    audios = [speech("first part"), speech("and a second, longer part of the question")]
    prompt = (TextSegment("<|BOT|>human\n"), AudioSegment(audios[0]), AudioSegment(audios[1]),
              TextSegment("Answer briefly.<|EOT|><|BOT|>assistant\n<tts_start>"))
    body = engine._body(EngineRequest("ids", prompt)) | {"stream": False, "max_tokens": 1}
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(f"{server_url}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "input_audio", "input_audio", "text"]
    ids = tokenize_prompt(prompt, engine.tokenizer, engine.special)
    expected = expand_audio_placeholders(ids.ids, ids.audios, engine.special)
    assert response.json()["prompt_token_ids"] == expected


async def test_streams_token_ids_from_audio(engine) -> None:
    deltas = await _collect(engine, _request("remote-1", 5))
    tokens = [t for d in deltas for t in d.token_ids]
    assert deltas[0].prompt_tokens and deltas[0].prompt_tokens > 20
    assert deltas[-1].finish_reason == "length" and len(tokens) == 5
    # Again, now partly from the server's prefix cache (its bf16 prefill may round differently,
    # so sampled ids may differ): served in full, with the same prompt size.
    again = await _collect(engine, _request("remote-2", 5))
    assert again[0].prompt_tokens == deltas[0].prompt_tokens
    assert again[-1].finish_reason == "length" and sum(len(d.token_ids) for d in again) == 5


async def test_least_loaded_server_gets_the_next_request_and_abort_frees_it(
    engine, server_url: str
) -> None:
    async def run(request_id: str) -> list[EngineDelta]:
        return await _collect(engine, _request(request_id, 1000))

    first = asyncio.create_task(run("busy-1"))
    while engine.servers[0].in_flight == 0:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(run("busy-2"))
    while engine.servers[1].in_flight == 0:
        await asyncio.sleep(0.01)
    assert [s.in_flight for s in engine.servers] == [1, 1]
    await asyncio.sleep(0.5)
    await engine.abort("busy-1")
    await engine.abort("busy-2")
    for task in (first, second):
        deltas = await task
        assert deltas[-1].finish_reason == "abort"
    assert [s.in_flight for s in engine.servers] == [0, 0]
    async with httpx.AsyncClient() as client:
        for _ in range(100):  # vLLM aborts a request when its HTTP stream closes
            metrics = (await client.get(f"{server_url}/metrics")).text
            running = [line for line in metrics.splitlines()
                       if line.startswith("vllm:num_requests_running")]
            if running and all(line.endswith(" 0.0") for line in running):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"server still runs aborted requests: {running}")


async def test_dead_url_is_skipped(server_url: str, tiny_checkpoint: Path) -> None:
    from engine.remote import RemoteEngine

    dead = f"http://127.0.0.1:{free_port()}"
    engine = await RemoteEngine.start([dead, server_url], tiny_checkpoint, health_interval=60)
    try:
        assert [s.healthy for s in engine.servers] == [False, True]
        deltas = await _collect(engine, _request("skip-dead", 2))
        assert deltas[-1].finish_reason == "length"
        # A server that died since the last health check: the request moves to the live one.
        engine.servers[0].healthy = True
        deltas = await _collect(engine, _request("failover", 2))
        assert deltas[-1].finish_reason == "length"
        assert engine.servers[0].healthy is False
    finally:
        await engine.close()

    with pytest.raises(EngineError, match="no vLLM server is reachable"):
        await RemoteEngine.start([dead], tiny_checkpoint)


async def test_server_dying_mid_request_raises_and_a_recovered_one_is_used_again(
    tiny_checkpoint: Path,
) -> None:
    from engine.remote import RemoteEngine

    chunk = b'data: {"choices": [{"index": 0, "token_ids": [1], "finish_reason": null}]}\n\n'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if request.startswith(b"GET /health"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        else:  # start streaming, then die without finishing the response
            length = int(request.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        writer.close()

    port = free_port()
    engine = RemoteEngine([f"http://127.0.0.1:{port}"], tiny_checkpoint, health_interval=60)
    server = None
    try:
        await engine.check_health()
        assert engine.servers[0].healthy is False  # nothing listens yet
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await engine.check_health()
        assert engine.servers[0].healthy is True  # recovered: back in the pool
        deltas: list[EngineDelta] = []
        with pytest.raises(EngineError, match="failed during request"):
            async for delta in engine.generate(_request("dies", 100)):
                deltas.append(delta)
        assert [d.token_ids for d in deltas] == [(1,)]
        assert engine.servers[0].healthy is False and engine.servers[0].in_flight == 0
        with pytest.raises(EngineError, match="no healthy vLLM server"):
            await _collect(engine, _request("none-left", 1))
    finally:
        await engine.close()
        if server is not None:
            server.close()
            await server.wait_closed()


async def test_generate_command_prints_json_from_a_server(
    server_url: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    import soundfile

    from server.cli import main

    wav = tmp_path / "question.wav"
    soundfile.write(wav, speech("what time is it", sample_rate=22_050), 22_050)
    args = ["generate", "--model", str(tiny_checkpoint), "--audio", str(wav), "--text", "Briefly.",
            "--speech", "--max-tokens", "12", "--seed", "3", "--engine-url", server_url]
    assert await asyncio.to_thread(main, args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["finish_reason"] in ("length", "stop")
    assert result["timings"]["prompt_tokens"] > 20
    generated = result["timings"]["generated_tokens"]
    assert generated == 12 if result["finish_reason"] == "length" else 0 < generated <= 12
    assert result["audio_codes"] and all(0 <= c < 6561 for c in result["audio_codes"])
    assert isinstance(result["text"], str) and result["tool_calls"] == []

    assert await asyncio.to_thread(main, [*args[:4], str(tmp_path / "missing.wav")]) == 2
    assert "no such file" in capsys.readouterr().err


async def _health_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server whose /health is fine but that refuses every completion with HTTP 400."""
    request = await reader.readuntil(b"\r\n\r\n")
    if request.startswith(b"GET /health"):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    else:
        length = int(request.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        body = b'{"error": {"message": "bad request"}}'
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def test_start_waits_for_a_late_server_and_a_refusal_keeps_it_healthy(
    tiny_checkpoint: Path,
) -> None:
    from engine.remote import RemoteEngine

    port = free_port()

    async def open_later() -> asyncio.Server:
        await asyncio.sleep(0.5)
        return await asyncio.start_server(_health_only, "127.0.0.1", port)

    opener = asyncio.create_task(open_later())
    engine = await RemoteEngine.start([f"http://127.0.0.1:{port}"], tiny_checkpoint,
                                      startup_timeout=30, health_interval=0.2)
    server = await opener
    try:
        assert engine.servers[0].healthy
        with pytest.raises(EngineError, match="HTTP 400"):
            await _collect(engine, _request("refused", 4))
        assert engine.servers[0].healthy and engine.servers[0].in_flight == 0
    finally:
        await engine.close()
        server.close()
        await server.wait_closed()
