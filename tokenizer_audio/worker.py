"""The token2wav worker: one thread owns the models and batches many streams' chunks."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from tokenizer_audio.token2wav import Token2wav, Token2wavStreamState, VoiceData, _concat

T = TypeVar("T")
DEFAULT_MAX_BATCH = 8  # streams per DiT batch


@dataclass
class _Call:
    """Any work that must run on the worker thread (voice set-up, freeing caches)."""

    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Chunk:
    """One flow chunk of one stream: batched with other streams' chunks."""

    stream: WorkerStream
    codes: list[int]
    last: bool
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future[Any], result: Any = None,
             error: BaseException | None = None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Token2wavWorker:
    """Owns a Token2wav in one thread; streams submit chunks, awaiting futures (never blocking
    the event loop). Pending chunks of different streams run as one batch (DiT CFG rows of all
    of them together), at most one chunk per stream per batch so each stream stays in order.
    """

    def __init__(self, t2w: Token2wav | None, *, threads: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        # Do all torch work on the worker thread (loading too: pass None and `load` later): a
        # second thread running torch ops beside it keeps its own OpenMP team, and the two
        # teams contend (measured: 1.5 s flow chunks became 2.6-2.9 s).
        self.t2w = t2w
        self.threads = threads
        self.max_batch = max_batch
        self._queue: queue.Queue[_Call | _Chunk | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._streams: set[WorkerStream] = set()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []  # streams per batch run (recent), for metrics and tests

    # --- event-loop side ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="token2wav-worker", daemon=True)
            self._thread.start()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker thread, after the work queued before it."""
        if self._thread is None:
            raise RuntimeError("the token2wav worker is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, future, loop))
        return await future

    async def load(self, factory: Callable[[], Token2wav]) -> Token2wav:
        """Build the Token2wav on the worker thread and serve it."""
        self.t2w = await self.call(factory)
        return self.t2w

    def _model(self) -> Token2wav:
        if self.t2w is None:
            raise RuntimeError("the token2wav worker has no model loaded")
        return self.t2w

    async def open_stream(self, voice: VoiceData | str, seed: int = 0) -> WorkerStream:
        """A new stream; the voice's prompt caches are computed on first use, then shared."""
        state = await self.call(lambda: self._model().stream(voice, seed))
        stream = WorkerStream(self, state)
        self._streams.add(stream)
        return stream

    def _submit(self, stream: WorkerStream, codes: list[int], last: bool
                ) -> asyncio.Future[np.ndarray]:
        if self._thread is None:
            raise RuntimeError("the token2wav worker is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        with self._lock:
            self._waiting += 1
        self._queue.put(_Chunk(stream, codes, last, future, loop))
        return future

    def _forget(self, stream: WorkerStream) -> None:
        self._streams.discard(stream)
        state = stream.state

        def release() -> None:
            state.release()

        self._queue.put(_Call(release, asyncio.get_running_loop().create_future(),
                              asyncio.get_running_loop()))

    def queue_depth(self) -> int:
        """Chunks submitted and not yet started."""
        return self._waiting

    def open_streams(self) -> int:
        return len(self._streams)

    async def close(self) -> None:
        """Stop the thread after the queued work; streams still open are released."""
        if self._thread is None:
            return
        for stream in list(self._streams):
            await stream.cancel()
        self._queue.put(None)
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join)

    # --- worker-thread side ---------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        backlog: deque[_Call | _Chunk] = deque()
        while True:
            if not backlog:
                item = self._queue.get()
                if item is None:
                    return
                backlog.append(item)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish the backlog first, then stop
                    break
                backlog.append(item)
            self._run_round(backlog)

    def _run_round(self, backlog: deque[_Call | _Chunk]) -> None:
        """Run every call and one batch of chunks (first chunk of each stream, in order)."""
        batch: list[_Chunk] = []
        seen: set[int] = set()
        keep: deque[_Call | _Chunk] = deque()
        while backlog:
            item = backlog.popleft()
            if isinstance(item, _Call):
                if batch:  # calls keep their place after the chunks queued before them
                    keep.append(item)
                    keep.extend(backlog)
                    backlog.clear()
                    break
                self._run_call(item)
                continue
            key = id(item.stream)
            if key in seen or len(batch) >= self.max_batch:
                keep.append(item)
                continue
            seen.add(key)
            batch.append(item)
        backlog.extend(keep)
        if batch:
            self._run_batch(batch)

    def _run_call(self, call: _Call) -> None:
        try:
            result = call.fn()
        except Exception as exc:  # handed to the awaiting coroutine
            call.loop.call_soon_threadsafe(_resolve, call.future, None, exc)
        else:
            call.loop.call_soon_threadsafe(_resolve, call.future, result)

    def _run_batch(self, batch: Sequence[_Chunk]) -> None:
        with self._lock:
            self._waiting -= len(batch)
        live = [job for job in batch if not job.stream.cancelled]
        for job in batch:
            if job.stream.cancelled:  # nothing to synthesize any more
                job.loop.call_soon_threadsafe(_resolve, job.future, np.zeros(0, np.float32))
        if not live:
            return
        self.batches = [*self.batches[-99:], len(live)]
        try:
            wavs = self._model().step([j.stream.state for j in live],
                                      [(j.codes, j.last) for j in live])
        except Exception as exc:
            for job in live:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, exc)
            return
        for job, wav in zip(live, wavs, strict=True):
            job.loop.call_soon_threadsafe(_resolve, job.future, wav)


class WorkerStream:
    """A Token2wavStream served by a Token2wavWorker (float32 24 kHz out)."""

    def __init__(self, worker: Token2wavWorker, state: Token2wavStreamState) -> None:
        self.worker = worker
        self.state = state
        self._closed = False
        self.cancelled = False  # read by the worker thread: skip this stream's queued chunks

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this token2wav stream is finished or cancelled")

    async def feed(self, codes: Sequence[int]) -> np.ndarray:
        """Queue codes; returns the audio of every chunk they completed (maybe none)."""
        self._check_open()
        self.state.push(codes)
        futures = []
        while (chunk := self.state.take_chunk()) is not None:
            futures.append(self.worker._submit(self, chunk[0], chunk[1]))
        if not futures:
            return np.zeros(0, dtype=np.float32)
        try:
            return _concat(await asyncio.gather(*futures))
        except BaseException:
            await self.cancel()
            raise

    async def finish(self) -> np.ndarray:
        """Synthesize the remaining codes and the held-back tail; frees the stream."""
        self._check_open()
        out = [await self.feed([])]
        chunk = self.state.take_chunk(final=True)
        if chunk is not None:
            try:
                out.append(await self.worker._submit(self, chunk[0], True))
            except BaseException:
                await self.cancel()
                raise
        self._closed = True
        self.worker._forget(self)
        return _concat(out)

    async def cancel(self) -> None:
        """Stop at once: queued chunks are skipped and the caches freed on the worker thread."""
        if self._closed:
            return
        self._closed = True
        self.cancelled = True
        self.state.buffer.clear()
        self.worker._forget(self)
