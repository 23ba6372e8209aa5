"""The embedded engine (vLLM AsyncLLM + plugin) on the tiny checkpoint: stream, abort, errors."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from engine.types import (
    AudioSegment,
    Engine,
    EngineDelta,
    EngineError,
    EngineRequest,
    SamplingParams,
    TextSegment,
)
from tests.helpers import speech

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(tiny_checkpoint: Path):
    from engine.factory import create_engine

    engine = await create_engine(tiny_checkpoint, max_model_len=2048, max_num_seqs=4)
    yield engine
    await engine.close()


def _request(request_id: str, max_tokens: int, audio: np.ndarray | None = None) -> EngineRequest:
    audio = speech("hello, how are you today") if audio is None else audio
    prompt = (TextSegment("<|BOT|>human\n"), AudioSegment(audio),
              TextSegment("<|EOT|><|BOT|>assistant\n<tts_start>"))
    # The official sampling settings, seeded: the tiny model's single likeliest token is <|EOT|>.
    return EngineRequest(request_id, prompt, SamplingParams(max_tokens=max_tokens, seed=7))


async def _collect(engine: Engine, request: EngineRequest) -> list[EngineDelta]:
    return [delta async for delta in engine.generate(request)]


async def test_streams_deltas_until_max_tokens(engine) -> None:
    from engine.inprocess import InProcessEngine
    from engine.prompt import expand_audio_placeholders, tokenize_prompt
    from engine.tokens import SpecialTokens

    assert isinstance(engine, InProcessEngine) and isinstance(engine, Engine)
    request = _request("stream-1", 6)
    deltas = await _collect(engine, request)
    special = SpecialTokens.from_tokenizer(engine.tokenizer)
    ids = tokenize_prompt(request.prompt, engine.tokenizer, special)
    expected_prompt = len(expand_audio_placeholders(ids.ids, ids.audios, special))
    assert deltas[0].prompt_tokens == expected_prompt
    assert all(d.prompt_tokens is None for d in deltas[1:])
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    tokens = [t for d in deltas for t in d.token_ids]
    assert deltas[-1].finish_reason == "length" and len(tokens) == 6
    # The same prompt again (now from vLLM's prefix cache, whose bf16 prefill can round
    # differently, so sampled tokens may differ) is served in full with the same prompt size.
    again = await _collect(engine, _request("stream-2", 6))
    assert again[0].prompt_tokens == expected_prompt
    assert again[-1].finish_reason == "length"
    assert sum(len(d.token_ids) for d in again) == 6


async def test_abort_mid_stream_ends_with_abort_and_engine_serves_next(engine) -> None:
    deltas: list[EngineDelta] = []
    async for delta in engine.generate(_request("abort-1", 1000)):
        deltas.append(delta)
        if len(deltas) == 2:
            await engine.abort("abort-1")
    assert deltas[-1].finish_reason == "abort"
    assert sum(len(d.token_ids) for d in deltas) < 1000
    assert engine._llm.get_num_unfinished_requests() == 0
    after = await _collect(engine, _request("abort-2", 3))
    assert after[-1].finish_reason in ("length", "stop")


async def test_consumer_that_stops_iterating_frees_the_request(engine) -> None:
    stream = engine.generate(_request("early-exit", 1000))
    async for _ in stream:
        break
    await stream.aclose()
    for _ in range(50):
        if engine._llm.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.05)
    assert engine._llm.get_num_unfinished_requests() == 0


async def test_bad_prompt_is_an_engine_error_and_engine_lives_on(engine) -> None:
    too_long = np.zeros(31 * 16_000, dtype=np.float32)
    with pytest.raises(EngineError, match="bad prompt"):
        await _collect(engine, _request("bad-1", 3, too_long))
    assert (await _collect(engine, _request("bad-2", 2)))[-1].finish_reason in ("length", "stop")


async def test_start_refuses_a_broken_checkpoint_with_a_clear_error(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from engine.inprocess import InProcessEngine
    from engine.loading import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    for shard in broken.glob("*.safetensors"):
        shard.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        await InProcessEngine.start(broken)
    with pytest.raises(CheckpointError):
        await InProcessEngine.start(tmp_path / "missing")
