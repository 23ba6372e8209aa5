"""Makes the reference package (PyPI `step-audio2`) importable and runnable on the CPU.

Run inside .venv-oracle only. The reference imports torchaudio (which cannot load beside our
torch build) but needs it only for file I/O and prompt preparation, which the oracle scripts do
not use; and it hard-codes CUDA, which we turn into no-ops at run time (installed files are
never edited).
"""

from __future__ import annotations

import sys
import types

import torch


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def _missing(*_args, **_kwargs):
        raise RuntimeError(f"{name} is stubbed in the oracle harness")

    def _attr(name: str):
        # Dunders (`__file__`, `__path__`, ...) must stay missing: inspect and torch.compile
        # probe them.
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing

    module.__getattr__ = _attr  # type: ignore[method-assign]
    return module


def install() -> None:
    """Register the torchaudio stub and make `.cuda()` a no-op."""
    if "torchaudio" not in sys.modules:
        root = _stub("torchaudio")
        compliance = _stub("torchaudio.compliance")
        kaldi = _stub("torchaudio.compliance.kaldi")
        transforms = _stub("torchaudio.transforms")
        root.compliance = compliance  # type: ignore[attr-defined]
        root.transforms = transforms  # type: ignore[attr-defined]
        compliance.kaldi = kaldi  # type: ignore[attr-defined]
        sys.modules.update(
            {
                "torchaudio": root,
                "torchaudio.compliance": compliance,
                "torchaudio.compliance.kaldi": kaldi,
                "torchaudio.transforms": transforms,
            }
        )
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
