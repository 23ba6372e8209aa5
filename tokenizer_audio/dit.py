"""The flow's DiT estimator (spec f.3, DiT): offline, and chunked over per-step caches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_audio.flow_config import DitDims

_CONV_KERNEL = 3
_TIME_FREQ_DIM = 256
_TIME_SCALE = 1000.0


@dataclass(frozen=True)
class KVSpan:
    """Keys and values of a run of frames for every block of one ODE step (read-only).

    k, v: [depth, 2 (CFG rows: conditional, unconditional), heads, T, head_dim].
    """

    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.k.shape[3])

    def slice(self, start: int, end: int) -> KVSpan:
        return KVSpan(self.k[:, :, :, start:end], self.v[:, :, :, start:end])


@dataclass(frozen=True)
class DitStepCache:
    """What one stream's DiT attends to at one ODE step, plus the causal convs' tails.

    `spans` follow the reference's order (newest chunk first, the prompt last, spec f.5a): only
    which frames are kept matters to the result (the DiT has no positions), and this order makes
    the reference's trimming rule a plain slice. Steps return new caches; none is mutated, so a
    voice's prompt cache is shared by all its streams.
    """

    spans: tuple[KVSpan, ...]
    conv: torch.Tensor  # [depth, 2 (CFG rows), 2 (first, second conv), hidden, kernel - 1]

    @property
    def length(self) -> int:
        return sum(span.length for span in self.spans)

    def trimmed(self, head: int, tail: int) -> DitStepCache:
        """Keep frames [0, head) and [length - tail, length) of the span sequence."""
        total = self.length
        if total <= head + tail:
            return self
        return DitStepCache(_cut(self.spans, 0, head) + _cut(self.spans, total - tail, total),
                            self.conv)

    def nbytes(self) -> int:
        kv = sum(s.k.numel() * s.k.element_size() * 2 for s in self.spans)
        return kv + self.conv.numel() * self.conv.element_size()


def _cut(spans: Sequence[KVSpan], start: int, end: int) -> tuple[KVSpan, ...]:
    """The frames [start, end) of the concatenated spans, as views."""
    out: list[KVSpan] = []
    offset = 0
    for span in spans:
        lo, hi = max(start - offset, 0), min(end - offset, span.length)
        if lo < hi:
            out.append(span if (lo, hi) == (0, span.length) else span.slice(lo, hi))
        offset += span.length
    return tuple(out)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoid of 1000*t (256 dims, [cos, sin]) -> MLP."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(_TIME_FREQ_DIM, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: [B] in [0, 1] -> [B, hidden]."""
        half = _TIME_FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(0, half) / half).to(t)
        args = (t * _TIME_SCALE)[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Attention(nn.Module):
    """Self-attention with per-head LayerNorm on q and k; no positions."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(inner, dim)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> q, k, v [B, heads, T, head_dim]."""
        b, t, _ = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

        return (self.q_norm(heads(self.to_q(x))), self.k_norm(heads(self.to_k(x))),
                heads(self.to_v(x)))

    def out(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, t, -1))


class ConvBlock(nn.Module):
    """Causal conv k3 -> LayerNorm -> Mish -> causal conv k3, on [B, T, C].

    The reference is an nn.Sequential of 8 layers with parameters at 1, 3 and 6 (transposes and
    Mish in between); the placeholders keep checkpoint names `block.1`, `block.3`, `block.6`.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Identity(), nn.Conv1d(dim, dim, _CONV_KERNEL), nn.Identity(), nn.LayerNorm(dim),
            nn.Mish(), nn.Identity(), nn.Conv1d(dim, dim, _CONV_KERNEL), nn.Identity(),
        )

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
        """x: [B, T, C]; cache [B, 2, C, kernel-1] (zeros = start of sequence) or None."""
        conv1, norm, conv2 = self.block[1], self.block[3], self.block[6]
        y = x.transpose(1, 2)
        pad = _CONV_KERNEL - 1
        head1 = cache[:, 0] if cache is not None else y.new_zeros(y.shape[0], y.shape[1], pad)
        y = torch.cat([head1, y], dim=2)
        tail1 = y[..., -pad:]
        y = conv1(y)
        y = F.mish(norm(y.transpose(1, 2))).transpose(1, 2)
        head2 = cache[:, 1] if cache is not None else y.new_zeros(y.shape[0], y.shape[1], pad)
        y = torch.cat([head2, y], dim=2)
        tail2 = y[..., -pad:]
        return conv2(y).transpose(1, 2), torch.stack([tail1, tail2], dim=1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-modulated attention, causal conv block and MLP (in that order)."""

    def __init__(self, dims: DitDims) -> None:
        super().__init__()
        h = dims.hidden_size
        self.norm1 = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(h, dims.num_heads, dims.head_dim)
        self.norm2 = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(h, int(h * dims.mlp_ratio))
        self.norm3 = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.conv = ConvBlock(h)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 9 * h))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Velocity estimator. Inputs are channel-first [B, C, T]; output [B, out_channels, T].

    Batches hold CFG row pairs: rows 2i (conditional) and 2i+1 (unconditional) are one stream.
    """

    def __init__(self, dims: DitDims) -> None:
        super().__init__()
        self.dims = dims
        self.t_embedder = TimestepEmbedder(dims.hidden_size)
        self.in_proj = nn.Linear(dims.in_channels, dims.hidden_size)
        self.blocks = nn.ModuleList(DiTBlock(dims) for _ in range(dims.depth))
        self.final_layer = FinalLayer(dims.hidden_size, dims.out_channels)

    def _inputs(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spk: torch.Tensor,
                cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.t_embedder(t).unsqueeze(1)  # [B, 1, hidden]
        spk = spk.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        h = self.in_proj(torch.cat([x, mu, spk, cond], dim=1).transpose(1, 2))
        return h, c

    def forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spk: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        """Offline: full attention over T. x, mu, cond: [B, C, T]; t: [B]; spk: [B, C]."""
        h, c = self._inputs(x, mu, t, spk, cond)
        for block in self.blocks:
            mods = block.adaLN_modulation(c).chunk(9, dim=-1)
            q, k, v = block.attn.qkv(modulate(block.norm1(h), mods[0], mods[1]))
            h = h + mods[2] * block.attn.out(F.scaled_dot_product_attention(q, k, v))
            conv, _ = block.conv(modulate(block.norm3(h), mods[6], mods[7]), None)
            h = h + mods[8] * conv
            h = h + mods[5] * block.mlp(modulate(block.norm2(h), mods[3], mods[4]))
        return self.final_layer(h, c).transpose(1, 2)

    def empty_step_cache(self, like: torch.Tensor) -> DitStepCache:
        d = self.dims
        return DitStepCache(spans=(), conv=like.new_zeros(d.depth, 2, 2, d.hidden_size,
                                                          _CONV_KERNEL - 1))

    def forward_chunk(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                      spk: torch.Tensor, cond: torch.Tensor,
                      caches: Sequence[DitStepCache]) -> tuple[torch.Tensor, list[DitStepCache]]:
        """One ODE step for a batch of streams with equal chunk length T.

        x, mu, cond: [2S, C, T] (CFG row pairs per stream); t: [2S]; spk: [2S, C]; caches: S
        step caches. Each stream attends to its cache's spans and its whole chunk. Returns the
        velocity [2S, out, T] and S new caches (the chunk's keys/values prepended).
        """
        streams = len(caches)
        h, c = self._inputs(x, mu, t, spk, cond)
        conv_in = torch.stack([cache.conv for cache in caches], dim=1)  # [depth, S, 2, 2, C, k]
        new_k, new_v, new_conv = [], [], []
        for i, block in enumerate(self.blocks):
            mods = block.adaLN_modulation(c).chunk(9, dim=-1)
            q, k, v = block.attn.qkv(modulate(block.norm1(h), mods[0], mods[1]))
            new_k.append(k)
            new_v.append(v)
            outs = []
            for s, cache in enumerate(caches):
                rows = slice(2 * s, 2 * s + 2)
                ks = torch.cat([k[rows]] + [span.k[i] for span in cache.spans], dim=2)
                vs = torch.cat([v[rows]] + [span.v[i] for span in cache.spans], dim=2)
                outs.append(F.scaled_dot_product_attention(q[rows], ks, vs))
            o = outs[0] if streams == 1 else torch.cat(outs, dim=0)
            h = h + mods[2] * block.attn.out(o)
            conv, tails = block.conv(modulate(block.norm3(h), mods[6], mods[7]),
                                     conv_in[i].flatten(0, 1))
            new_conv.append(tails)
            h = h + mods[8] * conv
            h = h + mods[5] * block.mlp(modulate(block.norm2(h), mods[3], mods[4]))
        out = self.final_layer(h, c).transpose(1, 2)
        ks_all, vs_all = torch.stack(new_k), torch.stack(new_v)  # [depth, 2S, H, T, d]
        conv_all = torch.stack(new_conv)  # [depth, 2S, 2, C, k]
        new_caches = []
        for s, cache in enumerate(caches):
            rows = slice(2 * s, 2 * s + 2)
            span = KVSpan(ks_all[:, rows], vs_all[:, rows])
            conv = conv_all[:, rows]
            if streams > 1:  # own copies, so a finished stream frees its frames at once
                span, conv = KVSpan(span.k.clone(), span.v.clone()), conv.clone()
            new_caches.append(DitStepCache((span, *cache.spans), conv))
        return out, new_caches
