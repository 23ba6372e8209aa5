"""The remote engine: one or more vLLM OpenAI servers running our plugin, least-loaded first."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from engine.types import (
    AudioSegment,
    EngineDelta,
    EngineError,
    EngineRequest,
    FinishReason,
    PromptSegment,
)

log = logging.getLogger(__name__)

SERVED_MODEL_NAME = "step-audio-2-mini"

# Renders the message parts verbatim and in order (text as is, one <audio_patch> per audio), so
# the server's prompt ids equal the in-process ones. vLLM detects the "openai" content format
# from the loop over message content. Servers need `--trust-request-chat-template`.
CONCAT_TEMPLATE = (
    "{%- for message in messages -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- else -%}<audio_patch>{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}"
)

_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}


@dataclass
class Server:
    """One vLLM server as the balancer sees it."""

    url: str
    healthy: bool = True
    in_flight: int = 0
    last_error: str = ""



def wav_base64(samples: np.ndarray, sample_rate: int = 16_000) -> str:
    """Mono float32 WAV (lossless, so the server encodes the same samples we would)."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV",
                    subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def content_parts(
    segments: Sequence[PromptSegment], tokenizer: Any
) -> list[dict[str, Any]]:
    """Chat content parts in prompt order: rendered text runs and `input_audio` WAVs."""
    from engine.prompt import render_text

    parts: list[dict[str, Any]] = []
    run: list[PromptSegment] = []

    def flush() -> None:
        if run:
            text = render_text(tuple(run), tokenizer)
            if text:
                parts.append({"type": "text", "text": text})
            run.clear()

    for segment in segments:
        if isinstance(segment, AudioSegment):
            flush()
            parts.append({"type": "input_audio",
                          "input_audio": {"data": wav_base64(segment.samples), "format": "wav"}})
        else:
            run.append(segment)
    flush()
    return parts


class RemoteEngine:
    """`Engine` over vLLM OpenAI servers (`/v1/chat/completions`, streamed, raw token ids).

    Requests go to the healthy server with the fewest requests in flight; a background task
    polls `/health` every `health_interval` s, taking dead servers out and putting recovered
    ones back. A server dying mid-request raises EngineError in that request's stream.
    """

    def __init__(
        self,
        urls: Sequence[str],
        model_dir_or_tokenizer: str | Path | Any,
        *,
        served_model_name: str = SERVED_MODEL_NAME,
        health_interval: float = 5.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ) -> None:
        if not urls:
            raise ValueError("RemoteEngine needs at least one server URL")
        from engine.tokens import SpecialTokens, load_tokenizer

        if isinstance(model_dir_or_tokenizer, str | Path):
            tokenizer = load_tokenizer(model_dir_or_tokenizer)
        else:
            tokenizer = model_dir_or_tokenizer

        self.tokenizer = tokenizer
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        self.servers = [Server(url.rstrip("/")) for url in urls]
        self.served_model_name = served_model_name
        self.health_interval = health_interval
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect_timeout, read=read_timeout, write=read_timeout)
        )
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._health_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        urls: Sequence[str],
        model_dir_or_tokenizer: str | Path | Any,
        *,
        startup_timeout: float = 0.0,
        **kwargs: Any,
    ) -> RemoteEngine:
        """Build it, wait up to `startup_timeout` s for a healthy server, start the health loop.

        Raises EngineError naming every server's problem when none answers in time.
        """
        engine = await asyncio.to_thread(cls, urls, model_dir_or_tokenizer, **kwargs)
        deadline = asyncio.get_running_loop().time() + startup_timeout
        await engine.check_health()
        while not any(s.healthy for s in engine.servers):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(min(1.0, engine.health_interval))
            await engine.check_health()
        if not any(s.healthy for s in engine.servers):
            await engine.close()
            details = "; ".join(f"{s.url}: {s.last_error}" for s in engine.servers)
            raise EngineError(f"no vLLM server is reachable ({details})")
        engine._health_task = asyncio.create_task(engine._health_loop())
        return engine

    async def check_health(self) -> None:
        """Poll `/health` of every server once and update its state."""
        await asyncio.gather(*(self._check(server) for server in self.servers))

    async def _check(self, server: Server) -> None:
        try:
            response = await self._client.get(f"{server.url}/health", timeout=2.0)
            ok = response.status_code == 200
            error = "" if ok else f"/health returned HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok != server.healthy:
            log.warning("engine server %s is %s", server.url, "back" if ok else f"down ({error})")
        server.healthy, server.last_error = ok, error

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.check_health()
            except Exception:  # keep polling: a stopped loop would never put servers back
                log.exception("engine health check failed")

    def pick_server(self) -> Server:
        """The healthy server with the fewest requests in flight (first listed on ties)."""
        healthy = [s for s in self.servers if s.healthy]
        if not healthy:
            raise EngineError("no healthy vLLM server")
        return min(healthy, key=lambda s: s.in_flight)

    def _body(self, request: EngineRequest) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.served_model_name,
            "messages": [{"role": "user",
                          "content": content_parts(request.prompt, self.tokenizer)}],
            "chat_template": CONCAT_TEMPLATE,
            "add_generation_prompt": False,
            "skip_special_tokens": False,
            "return_token_ids": True,
            "stream": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "repetition_penalty": sampling.repetition_penalty,
            "max_tokens": sampling.max_tokens,
            "stop_token_ids": list(self.special.stop_ids),
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineDelta]:
        if request.request_id in self._readers:
            raise EngineError(f"request id {request.request_id!r} is already running")
        try:
            body = await asyncio.to_thread(self._body, request)
        except ValueError as exc:
            raise EngineError(f"bad prompt for request {request.request_id}: {exc}") from exc
        self.pick_server()  # fail fast when no server is healthy
        queue: asyncio.Queue[EngineDelta | BaseException] = asyncio.Queue()
        reader = asyncio.create_task(self._read(request.request_id, body, queue))
        self._readers[request.request_id] = reader
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    finished = True
                    return
        finally:
            self._readers.pop(request.request_id, None)
            if not finished and not reader.done():
                # The consumer stopped early: closing the stream makes vLLM abort the request.
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(
        self,
        request_id: str,
        body: dict[str, Any],
        queue: asyncio.Queue[EngineDelta | BaseException],
    ) -> None:
        """Stream one request into `queue`; it always ends with a final delta or an exception.
        A server refusing the connection is marked down and the next one is tried; cancelled by
        `abort`, the final delta says "abort"."""
        try:
            while True:
                server = self.pick_server()
                try:
                    await self._stream(server, request_id, body, queue)
                    return
                except httpx.ConnectError as exc:
                    # Nothing was sent: another server can take the request.
                    server.healthy, server.last_error = False, f"ConnectError: {exc}"
                    log.warning("engine server %s is down (%s)", server.url, exc)
        except asyncio.CancelledError:
            queue.put_nowait(EngineDelta((), "abort"))
            raise
        except EngineError as exc:
            queue.put_nowait(exc)

    async def _stream(
        self,
        server: Server,
        request_id: str,
        body: dict[str, Any],
        queue: asyncio.Queue[EngineDelta | BaseException],
    ) -> None:
        server.in_flight += 1
        prompt_tokens: int | None = None
        try:
            async with self._client.stream(
                "POST", f"{server.url}/v1/chat/completions", json=body,
                headers={"X-Request-Id": request_id},
            ) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode("utf-8", "replace")[:500]
                    raise EngineError(
                        f"{server.url} refused request {request_id} "
                        f"(HTTP {response.status_code}): {detail}"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk and not chunk.get("choices"):
                        raise EngineError(f"{server.url}: {chunk['error']}")
                    if chunk.get("prompt_token_ids") is not None:
                        prompt_tokens = len(chunk["prompt_token_ids"])
                    for choice in chunk.get("choices", []):
                        ids = tuple(choice.get("token_ids") or ())
                        raw = choice.get("finish_reason")
                        reason = None if raw is None else _FINISH_REASONS.get(raw, "error")
                        if not ids and reason is None:
                            continue  # the role chunk: its prompt size rides on the next delta
                        queue.put_nowait(EngineDelta(ids, reason, prompt_tokens))
                        prompt_tokens = None
                        if reason is not None:
                            return
            raise EngineError(f"{server.url} ended request {request_id} without a finish reason")
        except httpx.ConnectError:
            raise
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            server.healthy, server.last_error = False, f"{type(exc).__name__}: {exc}"
            log.warning("engine server %s failed during request %s (%s); taken out until its "
                        "health check passes", server.url, request_id, server.last_error)
            raise EngineError(
                f"engine server {server.url} failed during request {request_id}: {exc}"
            ) from exc
        finally:
            server.in_flight -= 1

    async def abort(self, request_id: str) -> None:
        """Close the request's HTTP stream (vLLM aborts it); its stream ends with "abort"."""
        reader = self._readers.get(request_id)
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for reader in list(self._readers.values()):
            reader.cancel()
        await self._client.aclose()
