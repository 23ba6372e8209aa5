"""Fixtures shared by the engine tests: the tiny checkpoint's tokenizer, written once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.tokenizer_build import write_tokenizer
from engine.tokens import SpecialTokens, load_tokenizer


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tok(tok_dir: Path):
    return load_tokenizer(tok_dir)


@pytest.fixture(scope="session")
def sp(tok) -> SpecialTokens:
    return SpecialTokens.from_tokenizer(tok)
