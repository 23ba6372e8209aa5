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
    conv: torch.Tensor  # [depth, 2 (CFG rows), 2 (first, second conv), kernel - 1, hidden]

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


@dataclass(frozen=True)
class Modulation:
    """adaLN shift, 1 + scale and gate of one block part, each [1, 1, hidden]."""

    shift: torch.Tensor
    scale1: torch.Tensor  # 1 + scale, so that modulating is one fused multiply-add
    gate: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale1)

    def gated_add(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(h, self.gate, y)


@dataclass(frozen=True)
class StepConditioning:
    """Every modulation of the DiT at one time value t (blocks: attention, MLP, conv; final).

    It depends only on t and the weights, so the sampler computes it once per ODE step and
    reuses it for every chunk of every stream.
    """

    blocks: tuple[tuple[Modulation, Modulation, Modulation], ...]
    final_shift: torch.Tensor
    final_scale1: torch.Tensor


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
        self.to_qkv: nn.Module | None = None  # int8 mode: q, k and v as one fused product

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> q (pre-scaled by 1/sqrt(head_dim)), k, v [B, heads, T, head_dim]."""
        b, t, _ = x.shape
        if self.to_qkv is not None:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        shape = (b, t, self.heads, self.head_dim)
        # The norms run on [B, T, heads, head_dim], before the head transpose.
        q = self.q_norm(q.reshape(shape)) * self.head_dim ** -0.5
        k = self.k_norm(k.reshape(shape))
        return q.transpose(1, 2), k.transpose(1, 2), v.reshape(shape).transpose(1, 2)

    def out(self, o: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, t, -1))


def attend(q: torch.Tensor, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]
           ) -> torch.Tensor:
    """Softmax attention of pre-scaled q [B, H, Tq, d] over several key/value runs [B, H, Tk, d].

    The runs are read in place (a voice's prompt cache is never copied per stream): one softmax
    over the concatenated scores, then the value runs summed.
    """
    scores = [torch.matmul(q, k.transpose(-1, -2)) for k in keys]
    probs = torch.softmax(scores[0] if len(scores) == 1 else torch.cat(scores, dim=-1), dim=-1)
    start = values[0].shape[2]
    out = torch.matmul(probs[..., :start], values[0])
    for v in values[1:]:
        out.add_(torch.matmul(probs[..., start:start + v.shape[2]], v))
        start += v.shape[2]
    return out


def conv_as_linear(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A kernel-k Conv1d over time-major x [B, T + k - 1, C] as one matrix product -> [B, T, C].

    Small convolutions run well below GEMM speed on the CPU; the window unfold is cheap. A
    module that is not a Conv1d (e.g. an int8 replacement) takes the unfolded windows itself.
    """
    windows = x.unfold(1, _CONV_KERNEL, 1).flatten(2)  # [B, T, C * k], channel-major like W
    if isinstance(conv, nn.Conv1d):
        return F.linear(windows, conv.weight.flatten(1), conv.bias)
    return conv(windows)


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
        """x: [B, T, C]; cache [B, 2, kernel-1, C] (zeros = start of sequence) or None.

        Returns the output [B, T, C] and the new cache (the last kernel-1 inputs of each conv).
        """
        conv1, norm, conv2 = self.block[1], self.block[3], self.block[6]
        pad = _CONV_KERNEL - 1
        if cache is None:
            cache = x.new_zeros(x.shape[0], 2, pad, x.shape[2])
        y = torch.cat([cache[:, 0], x], dim=1)
        tail1 = y[:, -pad:]
        y = F.mish(norm(conv_as_linear(conv1, y)))
        y = torch.cat([cache[:, 1], y], dim=1)
        tail2 = y[:, -pad:]
        return conv_as_linear(conv2, y), torch.stack([tail1, tail2], dim=1)


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

    def modulations(self, c: torch.Tensor) -> tuple[Modulation, Modulation, Modulation]:
        """c [1, 1, hidden] -> (attention, MLP, conv) modulations, in the checkpoint's order."""
        m = self.adaLN_modulation(c).chunk(9, dim=-1)
        return (Modulation(m[0], 1 + m[1], m[2]), Modulation(m[3], 1 + m[4], m[5]),
                Modulation(m[6], 1 + m[7], m[8]))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_channels)


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

    def conditioning(self, t: torch.Tensor) -> StepConditioning:
        """All modulations at time t (a 1-element tensor)."""
        c = self.t_embedder(t.reshape(1)).unsqueeze(1)  # [1, 1, hidden]
        shift, scale = self.final_layer.adaLN_modulation(c).chunk(2, dim=-1)
        return StepConditioning(tuple(block.modulations(c) for block in self.blocks),
                                shift, 1 + scale)

    def forward(self, x: torch.Tensor, mu: torch.Tensor, step: StepConditioning,
                spk: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Offline: full attention over T, from zero conv state (a chunk with empty caches).

        x, mu, cond: [2S, C, T]; step: the ODE step's modulations; spk: [2S, C].
        """
        empty = [self.empty_step_cache(x)] * (x.shape[0] // 2)
        out, _ = self.forward_chunk(x, mu, step, spk, cond, empty, keep=False)
        return out

    def empty_step_cache(self, like: torch.Tensor) -> DitStepCache:
        d = self.dims
        return DitStepCache(spans=(), conv=like.new_zeros(d.depth, 2, 2, _CONV_KERNEL - 1,
                                                          d.hidden_size))

    def forward_chunk(self, x: torch.Tensor, mu: torch.Tensor, step: StepConditioning,
                      spk: torch.Tensor, cond: torch.Tensor,
                      caches: Sequence[DitStepCache], keep: bool = True
                      ) -> tuple[torch.Tensor, list[DitStepCache]]:
        """One ODE step for a batch of streams with equal chunk length T.

        x, mu, cond: [2S, C, T] (CFG row pairs per stream); step: the ODE step's modulations;
        spk: [2S, C]; caches: S step caches. Each stream attends to its cache's spans and its
        whole chunk. Returns the velocity [2S, out, T] and, if `keep`, S new caches (the
        chunk's keys/values prepended).
        """
        streams = len(caches)
        spk = spk.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        h = self.in_proj(torch.cat([x, mu, spk, cond], dim=1).transpose(1, 2))
        conv_in = torch.stack([cache.conv for cache in caches], dim=1)  # [depth, S, 2, 2, k, C]
        new_k, new_v, new_conv = [], [], []
        for i, (block, (m_attn, m_mlp, m_conv)) in enumerate(zip(self.blocks, step.blocks,
                                                                   strict=True)):
            q, k, v = block.attn.qkv(m_attn.apply(block.norm1(h)))
            if keep:
                new_k.append(k)
                new_v.append(v)
            outs = []
            for s, cache in enumerate(caches):
                rows = slice(2 * s, 2 * s + 2)
                outs.append(attend(q[rows], [k[rows]] + [span.k[i] for span in cache.spans],
                                   [v[rows]] + [span.v[i] for span in cache.spans]))
            o = outs[0] if streams == 1 else torch.cat(outs, dim=0)
            h = m_attn.gated_add(h, block.attn.out(o))
            conv, tails = block.conv(m_conv.apply(block.norm3(h)), conv_in[i].flatten(0, 1))
            new_conv.append(tails)
            h = m_conv.gated_add(h, conv)
            h = m_mlp.gated_add(h, block.mlp(m_mlp.apply(block.norm2(h))))
        final = self.final_layer
        h = torch.addcmul(step.final_shift, final.norm_final(h), step.final_scale1)
        out = final.linear(h).transpose(1, 2)
        if not keep:
            return out, []
        ks_all, vs_all = torch.stack(new_k), torch.stack(new_v)  # [depth, 2S, H, T, d]
        conv_all = torch.stack(new_conv)  # [depth, 2S, 2, k, C]
        new_caches = []
        for s, cache in enumerate(caches):
            rows = slice(2 * s, 2 * s + 2)
            span = KVSpan(ks_all[:, rows], vs_all[:, rows])
            conv = conv_all[:, rows]
            if streams > 1:  # own copies, so a finished stream frees its frames at once
                span, conv = KVSpan(span.k.clone(), span.v.clone()), conv.clone()
            new_caches.append(DitStepCache((span, *cache.spans), conv))
        return out, new_caches
