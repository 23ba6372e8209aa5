"""Input transcription: Step-Audio 2 itself transcribes a user turn by an ASR request (spec e.5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.parser import OutputParser, TextDelta
from engine.prompt import System, User, build_prompt
from engine.types import EngineRequest, SamplingParams
from server.settings import Settings

# The official ASR task prompt (spec e.5), answered in text; examples sample at temperature 0.1.
ASR_SYSTEM_PROMPT = "请记录下你所听到的语音内容。"


async def transcribe(deps: Any, audio16: np.ndarray, settings: Settings, *, request_id: str) -> str:
    """The transcript of 16 kHz mono float32 `audio16`; raises EngineError when the engine fails.

    `deps` has `engine`, `tokenizer`, `special` and `metrics` (server.response.ResponseDeps).
    """
    prompt = build_prompt([System(ASR_SYSTEM_PROMPT), User((audio16,))], speech=False)
    sampling = SamplingParams(temperature=settings.transcription_temperature,
                              top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                              max_tokens=settings.transcription_max_tokens)
    parser = OutputParser(deps.tokenizer, deps.special)
    pieces: list[str] = []
    finished = False
    deps.metrics.engine_in_flight.inc()
    try:
        async for delta in deps.engine.generate(EngineRequest(request_id, prompt, sampling)):
            pieces += [e.text for e in parser.feed(delta.token_ids) if isinstance(e, TextDelta)]
            if delta.finish_reason is not None:
                finished = True
                break
    finally:
        deps.metrics.engine_in_flight.dec()
        if not finished:
            await deps.engine.abort(request_id)
    pieces += [e.text for e in parser.finish() if isinstance(e, TextDelta)]
    return "".join(pieces).strip()
