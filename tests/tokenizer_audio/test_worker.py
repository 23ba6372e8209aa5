"""Token2wav worker and service: concurrent batched streams, cancel, errors, the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tokenizer_audio.test_token2wav import codes_of, random_voice
from tokenizer_audio.checkpoint import write_token2wav
from tokenizer_audio.service import Token2wavServiceImpl, create_token2wav_service
from tokenizer_audio.token2wav import Token2wav
from tokenizer_audio.types import Token2wavService, Token2wavStream, VoiceError
from tokenizer_audio.worker import Token2wavWorker

SR = 24_000


@pytest.fixture(scope="module")
def t2w_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token2wav(tmp_path_factory.mktemp("t2w") / "token2wav", size="tiny", seed=1)


@pytest.fixture(scope="module")
def t2w(t2w_dir: Path) -> Token2wav:
    torch.set_num_threads(1)
    return Token2wav(t2w_dir, load_voices=False)


async def _play(stream: Token2wavStream, codes: list[int], step: int) -> np.ndarray:
    out = [await stream.feed(codes[i:i + step]) for i in range(0, len(codes), step)]
    out.append(await stream.finish())
    return np.concatenate(out)


def _alone(t2w: Token2wav, voice, codes: list[int]) -> np.ndarray:  # noqa: ANN001
    stream = t2w.stream(voice)
    return np.concatenate([stream.feed(codes), stream.finish()])


async def test_four_concurrent_streams_get_the_audio_they_get_alone(t2w: Token2wav) -> None:
    voices = [random_voice(20 + i, codes=40 + 10 * i) for i in range(4)]
    answers = [codes_of(30 + i, 2 * 25 + 3 + 7 * i) for i in range(4)]
    alone = [_alone(t2w, v, c) for v, c in zip(voices, answers, strict=True)]
    worker = Token2wavWorker(t2w, threads=1)
    worker.start()
    try:
        streams = [await worker.open_stream(v) for v in voices]
        assert all(isinstance(s, Token2wavStream) for s in streams)
        together = await asyncio.gather(*[_play(s, c, 9) for s, c in zip(streams, answers,
                                                                           strict=True)])
        assert max(worker.batches) > 1  # chunks of different streams did share DiT batches
        for mine, ref in zip(together, alone, strict=True):
            assert mine.shape == ref.shape
            # Batched GEMMs sum in another order: ~1e-5 measured.
            np.testing.assert_allclose(mine, ref, atol=1e-4)
        assert worker.open_streams() == 0 and worker.queue_depth() == 0
    finally:
        await worker.close()


async def test_cancel_frees_caches_and_skips_queued_chunks(t2w: Token2wav) -> None:
    worker = Token2wavWorker(t2w, threads=1)
    worker.start()
    try:
        voice = random_voice(40)
        stream = await worker.open_stream(voice)
        first = await stream.feed(codes_of(41, 28))
        assert first.size == SR - 3840 and stream.state.nbytes() > 0
        pending = asyncio.create_task(stream.feed(codes_of(42, 3 * 25)))
        await asyncio.sleep(0)
        await stream.cancel()
        audio = await pending  # queued chunks are skipped, not run
        assert audio.size < 3 * SR
        await worker.call(lambda: None)  # the release ran on the worker thread
        assert stream.state.flow is None and stream.state.nbytes() == 0
        assert worker.open_streams() == 0
        with pytest.raises(RuntimeError, match="cancelled"):
            await stream.feed([1])
        again = await worker.open_stream(voice)  # the voice's shared caches still serve others
        assert (await again.feed(codes_of(41, 28))).size == SR - 3840
        await again.cancel()
    finally:
        await worker.close()


async def test_feeding_never_blocks_the_event_loop(t2w: Token2wav) -> None:
    worker = Token2wavWorker(t2w, threads=1)
    worker.start()
    try:
        stream = await worker.open_stream(random_voice(50))
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        audio = await stream.feed(codes_of(51, 4 * 25 + 3))
        done.set()
        await task
        assert audio.size == 4 * SR - 3840
        assert ticks > 4  # the loop kept running while the worker synthesized
        await stream.cancel()
    finally:
        await worker.close()


async def test_a_failing_chunk_reaches_its_caller_and_the_worker_goes_on(
        t2w: Token2wav, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Token2wavWorker(t2w, threads=1)
    worker.start()
    try:
        stream = await worker.open_stream(random_voice(60))
        original = t2w.step

        def broken(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("DiT exploded")

        monkeypatch.setattr(t2w, "step", broken)
        with pytest.raises(RuntimeError, match="DiT exploded"):
            await stream.feed(codes_of(61, 28))
        monkeypatch.setattr(t2w, "step", original)
        with pytest.raises(RuntimeError, match="cancelled"):
            await stream.feed([1])  # the failed stream was cancelled and freed
        other = await worker.open_stream(random_voice(60))
        assert (await other.feed(codes_of(61, 28))).size == SR - 3840
        await other.cancel()
        with pytest.raises(ValueError, match="0..6560"):
            await (await worker.open_stream(random_voice(60))).feed([-1])
    finally:
        await worker.close()


async def test_service_voices_streams_and_errors(t2w_dir: Path, tmp_path: Path) -> None:
    service = await create_token2wav_service(t2w_dir, voices_dir=tmp_path, threads=1)
    try:
        assert isinstance(service, Token2wavService) and isinstance(service,
                                                                    Token2wavServiceImpl)
        assert service.default_voice in service.voice_names()
        with pytest.raises(VoiceError):
            await service.open_stream("nobody")
        with pytest.raises(VoiceError):
            await service.add_voice("noise", b"RIFF not really a wav")
        stream = await service.open_stream(service.default_voice)
        audio = await _play(stream, codes_of(70, 40), 11)
        assert audio.shape == (40 * 960,) and np.isfinite(audio).all()
        assert service.queue_depth() == 0
    finally:
        await service.close()
