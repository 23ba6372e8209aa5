"""StepFun's Token2wav built on a token2wav/ folder, with a voice given as features (oracle side).

Imported by the oracle scripts that run the reference end to end; runs in .venv-oracle only.
"""

from __future__ import annotations

import flow_oracle  # installs the shim and the CPU patches
import torch

VOICE = "voice"  # the cache key of the one voice


def load(folder: str, inputs: dict, hift_widths: dict | None = None):  # noqa: ANN201
    """The reference Token2wav without its prompt front end: `inputs` holds prompt_codes,
    prompt_mel [2Np, 80] and xvector [192] of the voice VOICE. `hift_widths` (base_channels,
    f0_channels) fit the reference HiFT to a narrower checkpoint."""
    from flashcosyvoice.modules.hifigan import ConvRNNF0Predictor, HiFTGenerator
    from hyperpyyaml import load_hyperpyyaml
    from token2wav import Token2wav

    t2w = Token2wav.__new__(Token2wav)
    t2w.float16 = False
    with open(f"{folder}/flow.yaml") as f:
        t2w.flow = load_hyperpyyaml(f)["flow"]
    t2w.flow.load_state_dict(torch.load(f"{folder}/flow.pt", map_location="cpu",
                                        weights_only=True), strict=True)
    t2w.flow.eval()
    flow_oracle._fit_cache_buffers(t2w.flow)
    widths = hift_widths or {}
    t2w.hift = HiFTGenerator(
        base_channels=widths.get("base_channels", 512),
        f0_predictor=ConvRNNF0Predictor(cond_channels=widths.get("f0_channels", 512)))
    state = torch.load(f"{folder}/hift.pt", map_location="cpu", weights_only=True)
    t2w.hift.load_state_dict({k.replace("generator.", ""): v for k, v in state.items()},
                             strict=True)
    t2w.hift.eval()
    t2w.mel_cache_len = 8
    t2w.source_cache_len = 8 * 480
    t2w.speech_window = torch.hamming_window(2 * 8 * 480, periodic=False, dtype=torch.float64)
    prompt = torch.tensor([inputs["prompt_codes"]], dtype=torch.int32)
    prompt_mel = inputs["prompt_mel"].float().unsqueeze(0)
    t2w.cache = {VOICE: (prompt, torch.tensor([prompt.shape[1]]),
                         inputs["xvector"].float().reshape(1, -1), prompt_mel,
                         torch.tensor([prompt_mel.shape[1]]))}
    return t2w
