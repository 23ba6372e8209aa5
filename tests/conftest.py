"""Shared fixtures: vLLM-on-CPU settings, the tiny checkpoint, test speech, the oracle runner."""

from __future__ import annotations

import os

# vLLM on the CPU in tests (TESTING.md): in-process engine core, small KV cache, both cores.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import write_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint in the real Step-Audio-2-mini layout, written once per run."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "Step-Audio-2-mini", seed=0)
