"""Names and shapes of every LLM-checkpoint tensor, built on the meta device from our modules."""

from __future__ import annotations

import torch

from engine.adapter import Adapter
from engine.config import StepAudio2Config
from engine.encoder import AudioEncoder


def llm_manifest(config: StepAudio2Config) -> dict[str, list[int]]:
    """{name: shape} in the released state-dict order: model.*, encoder.*, adapter.*, lm_head.

    The decoder is transformers' Qwen2ForCausalLM (names as the checkpoint stores them, spec
    b.2); built on the meta device, so even the full size costs no memory.
    """
    from transformers import Qwen2ForCausalLM

    dims = config.audio_dims
    with torch.device("meta"):
        decoder = Qwen2ForCausalLM(config.text_config)
        encoder = AudioEncoder(
            dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head,
            dims.n_audio_layer,
        )
        adapter = Adapter(dims.n_audio_state, dims.llm_dim, dims.kernel_size, dims.adapter_stride)
    llm = {name: list(t.shape) for name, t in decoder.state_dict().items()}
    lm_head = {name: llm.pop(name) for name in list(llm) if not name.startswith("model.")}
    out = dict(llm)
    out |= {f"encoder.{name}": list(t.shape) for name, t in encoder.state_dict().items()}
    out |= {f"adapter.{name}": list(t.shape) for name, t in adapter.state_dict().items()}
    return out | lm_head
