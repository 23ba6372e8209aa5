"""The flow's token encoder: UpsampleConformerEncoderV2 (spec f.3 step 3), offline and chunked."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_audio.flow_config import ConformerDims

_LOOKAHEAD_CONV_CACHE = 2  # frames the pre-lookahead layer's second conv (k=3) keeps


@dataclass
class ConformerCache:
    """What the encoder keeps between chunks for one stream (never mutated; steps return new ones).

    Attention caches hold key ‖ value on the last axis, time-ordered (oldest first).
    """

    kv_tokens: torch.Tensor  # [num_blocks, B, heads, T_tok, 2 * d_k]: token-rate blocks
    kv_mel: torch.Tensor  # [num_up_blocks, B, heads, 2 * T_tok, 2 * d_k]: upsampled blocks
    conv_lookahead: torch.Tensor  # [B, C, 2]: last conv1 outputs of the pre-lookahead layer
    conv_up: torch.Tensor  # [B, C, 2 * up_stride]: last upsampled frames before the up conv

    @property
    def tokens(self) -> int:
        """Tokens the attention cache covers."""
        return int(self.kv_tokens.shape[3])

    def trimmed(self, head: int, tail: int) -> ConformerCache:
        """Keep the first `head` and the last `tail` tokens of the attention caches."""
        if self.tokens <= head + tail:
            return self
        up = self.kv_mel.shape[3] // self.tokens

        def cut(kv: torch.Tensor, rate: int) -> torch.Tensor:
            return torch.cat([kv[:, :, :, : head * rate], kv[:, :, :, -tail * rate:]], dim=3)

        return ConformerCache(cut(self.kv_tokens, 1), cut(self.kv_mel, up), self.conv_lookahead,
                              self.conv_up)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.kv_tokens, self.kv_mel, self.conv_lookahead, self.conv_up))


def rel_positional_encoding(size: int, d_model: int, device: torch.device,
                            dtype: torch.dtype) -> torch.Tensor:
    """ESPnet relative sinusoids for positions size-1 .. -(size-1): [1, 2*size-1, d_model]."""
    position = torch.arange(0, size, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
        * -(math.log(10000.0) / d_model)
    )
    positive = torch.zeros(size, d_model, device=device)
    negative = torch.zeros(size, d_model, device=device)
    positive[:, 0::2] = torch.sin(position * div_term)
    positive[:, 1::2] = torch.cos(position * div_term)
    negative[:, 0::2] = torch.sin(-1 * position * div_term)
    negative[:, 1::2] = torch.cos(-1 * position * div_term)
    pe = torch.cat([torch.flip(positive, [0]), negative[1:]], dim=0)
    return pe.unsqueeze(0).to(dtype)


class LinearEmbed(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(d) (the positional part is added in attention)."""

    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5))
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.xscale


class PreLookaheadLayer(nn.Module):
    """Conv over `lookahead` future tokens, then a causal conv; residual. x: [B, T, C]."""

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(x.transpose(1, 2), (0, self.lookahead))
        y = F.leaky_relu(self.conv1(y))
        y = self.conv2(F.pad(y, (_LOOKAHEAD_CONV_CACHE, 0)))
        return y.transpose(1, 2) + x

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ends with `lookahead` extra tokens; returns (T - lookahead frames, new cache)."""
        y = F.leaky_relu(self.conv1(x.transpose(1, 2)))
        new_cache = y[..., -_LOOKAHEAD_CONV_CACHE:]
        y = self.conv2(torch.cat([cache, y], dim=2))
        return y.transpose(1, 2) + x[:, : -self.lookahead], new_cache


class Upsample1D(nn.Module):
    """Nearest-neighbour upsampling by `stride`, then a causal conv (k = 2*stride+1)."""

    def __init__(self, channels: int, stride: int, scale_factor: float) -> None:
        super().__init__()
        self.stride = stride
        self.scale_factor = float(scale_factor)
        self.conv = nn.Conv1d(channels, channels, stride * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T] -> [B, C, stride*T]."""
        y = F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")
        return self.conv(F.pad(y, (self.stride * 2, 0)))

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.cat([cache, F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")],
                      dim=2)
        return self.conv(y), y[..., -self.stride * 2:]


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (ESPnet flavour)."""

    def __init__(self, n_head: int, n_feat: int, key_bias: bool) -> None:
        super().__init__()
        self.h = n_head
        self.d_k = n_feat // n_head
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)

    @staticmethod
    def _rel_shift(x: torch.Tensor) -> torch.Tensor:
        """[B, H, T1, 2L-1] scores per relative position -> [B, H, T1, L] per key position.

        Query i sits at absolute position L - T1 + i (the chunk follows the cache).
        """
        b, h, t1, n = x.shape
        padded = torch.cat([x.new_zeros(b, h, t1, 1), x], dim=-1).view(b, h, n + 1, t1)
        return padded[:, :, 1:].reshape(b, h, t1, n)[:, :, :, : n // 2 + 1]

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor,
                kv_cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C]; kv_cache: [B, H, T_cache, 2*d_k] or None. Returns (out, new kv)."""
        b = x.size(0)
        q = self.linear_q(x).view(b, -1, self.h, self.d_k)
        k = self.linear_k(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
        if kv_cache is not None and kv_cache.shape[2] > 0:
            k_cache, v_cache = kv_cache.split(self.d_k, dim=-1)
            k = torch.cat([k_cache, k], dim=2)
            v = torch.cat([v_cache, v], dim=2)
        new_kv = torch.cat([k, v], dim=-1)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        if ac.shape != bd.shape:
            bd = self._rel_shift(bd)
        attn = torch.softmax((ac + bd) / math.sqrt(self.d_k), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, -1, self.h * self.d_k)
        return self.linear_out(out), new_kv


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    """Pre-LN rel-pos attention + SiLU FFN (no macaron, no conv module)."""

    def __init__(self, dim: int, heads: int, hidden: int, key_bias: bool) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(heads, dim, key_bias)
        self.feed_forward = FeedForward(dim, hidden)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor,
                kv_cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        att, new_kv = self.self_attn(self.norm_mha(x), pos_emb, kv_cache)
        x = x + att
        return x + self.feed_forward(self.norm_ff(x)), new_kv


class UpsampleConformerEncoder(nn.Module):
    """Tokens [B, T, C] -> features [B, up*T, C]; parameter names as in flow.pt's `encoder.`."""

    def __init__(self, dims: ConformerDims) -> None:
        super().__init__()
        self.dims = dims
        c = dims.output_size
        self.embed = LinearEmbed(dims.input_size, c)
        self.after_norm = nn.LayerNorm(c, eps=1e-5)
        self.pre_lookahead_layer = PreLookaheadLayer(c, dims.pre_lookahead_len)
        self.encoders = nn.ModuleList(
            ConformerBlock(c, dims.attention_heads, dims.linear_units, dims.key_bias)
            for _ in range(dims.num_blocks)
        )
        self.up_layer = Upsample1D(c, dims.up_stride, dims.up_scale_factor)
        self.up_embed = LinearEmbed(c, c)
        self.up_encoders = nn.ModuleList(
            ConformerBlock(c, dims.attention_heads, dims.linear_units, dims.key_bias)
            for _ in range(dims.num_up_blocks)
        )

    @property
    def lookahead(self) -> int:
        return self.dims.pre_lookahead_len

    @property
    def up_rate(self) -> int:
        return self.dims.up_stride

    def _pos(self, size: int, like: torch.Tensor) -> torch.Tensor:
        return rel_positional_encoding(size, self.dims.output_size, like.device, like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline: whole sequence, full attention. x: [B, T, C_in] -> [B, up*T, C]."""
        x = self.pre_lookahead_layer(self.embed(x))
        pos = self._pos(x.size(1), x)
        for block in self.encoders:
            x, _ = block(x, pos)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        x = self.up_embed(x)
        pos = self._pos(x.size(1), x)
        for block in self.up_encoders:
            x, _ = block(x, pos)
        return self.after_norm(x)

    def empty_cache(self, batch: int, like: torch.Tensor) -> ConformerCache:
        d = self.dims
        d_k = d.output_size // d.attention_heads
        z = like.new_zeros
        return ConformerCache(
            kv_tokens=z(d.num_blocks, batch, d.attention_heads, 0, 2 * d_k),
            kv_mel=z(d.num_up_blocks, batch, d.attention_heads, 0, 2 * d_k),
            conv_lookahead=z(batch, d.output_size, _LOOKAHEAD_CONV_CACHE),
            conv_up=z(batch, d.output_size, 2 * d.up_stride),
        )

    def step(self, x: torch.Tensor, cache: ConformerCache,
             last: bool) -> tuple[torch.Tensor, ConformerCache]:
        """One chunk: x [B, T, C_in] embedded tokens; unless `last`, its final `lookahead` tokens
        are look-ahead only. Attends to the cache and the whole chunk (no intra-chunk mask).
        Returns ([B, up*T', C], new cache); `cache` itself is left untouched.
        """
        x = self.embed(x)
        if last:
            x = F.pad(x, (0, 0, 0, self.lookahead))
        x, conv_lookahead = self.pre_lookahead_layer.step(x, cache.conv_lookahead)
        pos = self._pos(cache.tokens + x.size(1), x)
        kv_tokens = []
        for i, block in enumerate(self.encoders):
            x, kv = block(x, pos, cache.kv_tokens[i])
            kv_tokens.append(kv)
        x, conv_up = self.up_layer.step(x.transpose(1, 2), cache.conv_up)
        x = self.up_embed(x.transpose(1, 2))
        pos = self._pos(cache.kv_mel.shape[3] + x.size(1), x)
        kv_mel = []
        for i, block in enumerate(self.up_encoders):
            x, kv = block(x, pos, cache.kv_mel[i])
            kv_mel.append(kv)
        new_cache = ConformerCache(torch.stack(kv_tokens), torch.stack(kv_mel), conv_lookahead,
                                   conv_up)
        return self.after_norm(x), new_cache
