"""The embedded engine: vLLM's AsyncLLM with our plugin, in this process's event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.types import EngineDelta, EngineError, EngineRequest, FinishReason, SamplingParams

if TYPE_CHECKING:
    from engine.tokens import SpecialTokens

log = logging.getLogger(__name__)

_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}


class InProcessEngineSettings(BaseModel):
    """vLLM sizes for the embedded engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int = Field(8192, gt=0, description="prompt + answer tokens per request")
    max_num_seqs: int = Field(8, gt=0, description="requests decoded together")
    kv_cache_gib: float | None = Field(
        None, gt=0, description="KV cache size; None: vLLM's default (VLLM_CPU_KVCACHE_SPACE)"
    )
    enforce_eager: bool = True
    seed: int = 0


def _progress(message: str) -> None:
    sys.stderr.write(f"[engine] {message}\n")
    sys.stderr.flush()


def to_vllm_sampling(sampling: SamplingParams, stop_ids: list[int]) -> Any:
    """Our sampling settings as vLLM's, streaming deltas of raw ids (no detokenizing)."""
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    return VllmSamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
        max_tokens=sampling.max_tokens,
        seed=sampling.seed,
        stop_token_ids=stop_ids,
        skip_special_tokens=False,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )


class InProcessEngine:
    """`Engine` on vLLM's AsyncLLM (engine core in a child process, so decoding never blocks
    the event loop). Build it with `await InProcessEngine.start(model_dir, ...)`."""

    def __init__(
        self, llm: Any, tokenizer: Any, special: SpecialTokens, model_dir: Path
    ) -> None:
        self._llm = llm
        self.tokenizer = tokenizer
        self.special = special
        self.model_dir = model_dir
        self._running: set[str] = set()

    @classmethod
    async def start(cls, model_dir: str | Path, **settings: Any) -> InProcessEngine:
        """Verify the checkpoint, then load it into vLLM (off the event loop)."""
        from engine.loading import verify_checkpoint

        model_dir = Path(model_dir)
        opts = InProcessEngineSettings(**settings)
        _progress(f"verifying checkpoint {model_dir}")
        await asyncio.to_thread(verify_checkpoint, model_dir)
        started = time.perf_counter()
        _progress("starting vLLM (engine core process, weights, KV cache)")
        llm, tokenizer, special = await asyncio.to_thread(_build, model_dir, opts)
        _progress(f"vLLM ready in {time.perf_counter() - started:.1f} s")
        return cls(llm, tokenizer, special, model_dir)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineDelta]:
        from engine.prompt import tokenize_prompt

        if self._llm is None:
            raise EngineError("the engine is closed")

        try:
            prompt_ids = tokenize_prompt(request.prompt, self.tokenizer, self.special)
        except ValueError as exc:
            raise EngineError(f"bad prompt for request {request.request_id}: {exc}") from exc
        prompt: dict[str, Any] = {"prompt_token_ids": list(prompt_ids.ids)}
        if prompt_ids.audios:
            from engine.audio import SAMPLE_RATE

            prompt["multi_modal_data"] = {"audio": [(a, SAMPLE_RATE) for a in prompt_ids.audios]}
        params = to_vllm_sampling(request.sampling, list(self.special.stop_ids))

        finished = False
        first = True
        self._running.add(request.request_id)
        try:
            stream = self._llm.generate(prompt, params, request.request_id)
            async for out in stream:
                completion = out.outputs[0]
                reason: FinishReason | None = None
                if out.finished:
                    reason = _FINISH_REASONS.get(str(completion.finish_reason), "error")
                yield EngineDelta(
                    token_ids=tuple(completion.token_ids),
                    finish_reason=reason,
                    prompt_tokens=len(out.prompt_token_ids or ()) if first else None,
                )
                first = False
                if out.finished:
                    finished = True
                    return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"request {request.request_id} failed: {exc}") from exc
        finally:
            self._running.discard(request.request_id)
            if not finished and self._llm is not None:
                # The consumer stopped early (barge-in, disconnect): free the slot now.
                await self._llm.abort(request.request_id)

    async def abort(self, request_id: str) -> None:
        """Stop `request_id`; its stream ends with a finish_reason "abort" delta."""
        if request_id in self._running and self._llm is not None:
            await self._llm.abort(request_id)

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)
            # Collected now, while the interpreter is whole (its __del__ shuts down again).
            del llm
            gc.collect()


# KV cache of the embedded engine on a CPU build of vLLM when nothing says otherwise. Without an
# explicit size, vLLM-cpu reserves 92 % of the machine's memory and refuses to start when other
# processes hold more than the rest.
CPU_DEFAULT_KV_CACHE_GIB = 2.0


def _kv_cache_bytes(kv_cache_gib: float | None) -> int | None:
    """The explicit KV cache size: the setting, else VLLM_CPU_KVCACHE_SPACE or a default on the
    CPU; on GPUs None leaves it to vLLM's gpu_memory_utilization."""
    from vllm.platforms import current_platform

    if kv_cache_gib is None and current_platform.is_cpu():
        kv_cache_gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or CPU_DEFAULT_KV_CACHE_GIB)
    return int(kv_cache_gib * 2**30) if kv_cache_gib else None


def _build(model_dir: Path, opts: InProcessEngineSettings) -> tuple[Any, Any, SpecialTokens]:
    """Blocking: tokenizer, special tokens and the AsyncLLM (spawns the engine core)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from engine.tokens import SpecialTokens, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    special = SpecialTokens.from_tokenizer(tokenizer)
    args = AsyncEngineArgs(
        model=str(model_dir),
        dtype=opts.dtype,
        max_model_len=opts.max_model_len,
        max_num_seqs=opts.max_num_seqs,
        kv_cache_memory_bytes=_kv_cache_bytes(opts.kv_cache_gib),
        enforce_eager=opts.enforce_eager,
        seed=opts.seed,
    )
    try:
        llm = AsyncLLM.from_engine_args(args)
    except Exception as exc:
        raise EngineError(f"vLLM could not start on {model_dir}: {exc}") from exc
    return llm, tokenizer, special
