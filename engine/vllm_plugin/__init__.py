"""vLLM plugin entry point: registers the Step-Audio 2 config and model with vLLM."""

from __future__ import annotations

ARCHITECTURE = "StepAudio2ForCausalLM"


def register() -> None:
    """`vllm.general_plugins` hook; vLLM calls it in every process that builds a model."""
    from vllm import ModelRegistry

    from engine.config import register_config

    register_config()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "engine.vllm_plugin.model:StepAudio2ForCausalLM")
