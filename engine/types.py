"""The engine seam: what a request is, what comes back, and the `Engine` protocol.

One request is one model response. A prompt is a list of segments in order; the prompt builder
(`engine/prompt.py`) makes it, every engine turns it into token ids (plus 16 kHz audio for the
`<audio_patch>` placeholders) the same way, and streams back the generated ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TextSegment:
    """Prompt text; special tokens written as strings (`<|BOT|>`) stay atomic.

    `literal` marks content that came from a client (user text, instructions, tool results):
    special-token strings in it are plain text, so a user cannot inject turn markers.
    """

    text: str
    literal: bool = False


@dataclass(frozen=True)
class TokenSegment:
    """Exact token ids, e.g. an earlier assistant speech turn replayed as generated."""

    ids: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class AudioSegment:
    """One audio chunk (<= 25 s, spec c): mono float32 in [-1, 1] at 16 kHz.

    It becomes `<audio_start> <audio_patch> x n <audio_end>` in the prompt and one encoder item.
    """

    samples: np.ndarray


PromptSegment = TextSegment | TokenSegment | AudioSegment


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; defaults are those of every official example (spec e.8)."""

    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    max_tokens: int = 4096
    seed: int | None = None


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt: tuple[PromptSegment, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)


FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True)
class EngineDelta:
    """Newly generated token ids; `finish_reason` is set on the last delta only."""

    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None  # set on the first delta


class EngineError(RuntimeError):
    """The engine could not serve a request (dead server, bad prompt, ...)."""


@runtime_checkable
class Engine(Protocol):
    """Generates Step-Audio 2 token ids for a prompt, streaming."""

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineDelta]:
        """Stream deltas until the model stops, hits max_tokens or the request is aborted."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a running request within one decode step and free its resources."""
        ...

    async def close(self) -> None: ...
