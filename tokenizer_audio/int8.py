"""int8 matrix products for token2wav's fast CPU mode: per-channel weights, per-row activations."""

from __future__ import annotations

import torch
from torch import nn

_INT8_MAX = 127.0


class Int8Linear(nn.Module):
    """A Linear (or a Conv1d applied to unfolded windows) with int8 weights.

    Each weight row has its own scale; each input row is quantised on the fly with its own
    scale (dynamic quantisation), and the int32 product is rescaled in fp32. On CPUs with
    AVX512-VNNI this runs 1.5-3x faster than fp32 GEMMs, at ~1 % relative error per product.
    """

    def __init__(self, *modules: nn.Linear | nn.Conv1d) -> None:
        """One module, or several Linears of one input fused along the output (e.g. q, k, v),
        so the input is quantised once and multiplied once."""
        super().__init__()
        # A conv's [out, in, k] weight becomes [out, in*k], the layout of conv_as_linear.
        weight = torch.cat([m.weight.detach().float().flatten(1) for m in modules])
        biases = [m.bias for m in modules]
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / _INT8_MAX
        quantized = torch.round(weight / scale[:, None]).to(torch.int8)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight_t", quantized.t().contiguous())  # [in, out] for _int_mm
        self.register_buffer("weight_scale", scale)
        bias = None if any(b is None for b in biases) else torch.cat(
            [b.detach().float() for b in biases if b is not None])
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).float()
        row_scale = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(_INT8_MAX)
        quantized = torch.round(rows / row_scale).to(torch.int8)
        y = torch._int_mm(quantized, self.weight_t).float().mul_(row_scale)
        if self.bias is None:
            y.mul_(self.weight_scale)
        else:
            torch.addcmul(self.bias, y, self.weight_scale, out=y)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_dit_(dit: nn.Module) -> int:
    """Swap the DiT blocks' attention, MLP and conv layers for Int8Linear; returns the count.

    q, k and v become one fused product (`attn.to_qkv`); the originals are dropped.
    The input projection, the modulations (computed once per step) and the output layer keep
    fp32: they are a small share of the time, and the input mixes scales (noise, mel, speaker)
    that one per-row scale would blur.
    """
    swapped = 0
    for block in dit.blocks:
        attn = block.attn
        if isinstance(attn.to_q, nn.Linear):
            attn.to_qkv = Int8Linear(attn.to_q, attn.to_k, attn.to_v)
            del attn.to_q, attn.to_k, attn.to_v
            swapped += 3
        for parent, names in ((attn, ("proj",)),
                              (block.mlp, ("fc1", "fc2")),
                              (block.conv.block, ("1", "6"))):
            for name in names:
                child = getattr(parent, name)
                if isinstance(child, nn.Linear | nn.Conv1d):
                    setattr(parent, name, Int8Linear(child))
                    swapped += 1
    return swapped
