"""Tensor manifests (name -> shape) of our flow and HiFT modules, built on the meta device."""

from __future__ import annotations

from pathlib import Path

import torch


def hift_manifest() -> dict[str, list[int]]:
    """Names and shapes of hift.pt as our HiFT (default dims) expects them, in module order."""
    from tokenizer_audio.hift import HiFT

    with torch.device("meta"):
        model = HiFT()
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def flow_manifest(yaml_path: str | Path) -> dict[str, list[int]]:
    """Names and shapes of flow.pt for the flow model a flow.yaml describes, in module order."""
    from tokenizer_audio.flow import Flow
    from tokenizer_audio.flow_config import load_flow_yaml

    dims = load_flow_yaml(yaml_path)
    with torch.device("meta"):
        model = Flow(dims)
    return {name: list(t.shape) for name, t in model.state_dict().items()}
