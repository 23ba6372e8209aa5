"""Builds the configured engine: remote vLLM servers when URLs are given, else the embedded one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.types import Engine


async def create_engine(
    model_dir: str | Path, *, engine_urls: Sequence[str] = (), **engine_settings: Any
) -> Engine:
    """A started engine for `model_dir`.

    With `engine_urls`, a RemoteEngine over those vLLM servers (`model_dir` only supplies the
    tokenizer; settings go to RemoteEngine, e.g. `health_interval`); otherwise an
    InProcessEngine (settings: InProcessEngineSettings fields, e.g. `max_model_len`).
    """
    if engine_urls:
        from engine.remote import RemoteEngine

        return await RemoteEngine.start(list(engine_urls), model_dir, **engine_settings)
    from engine.inprocess import InProcessEngine

    return await InProcessEngine.start(model_dir, **engine_settings)
