"""The Step-Audio 2 audio encoder: a Whisper-style transformer over 128-bin log-mels (spec b.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.audio import encoder_output_length, mel_frames_of_item

LAYER_NORM_EPS = 1e-5
MASK_VALUE = -1e10  # additive attention bias on padded keys (reference value)


class MultiHeadAttention(nn.Module):
    """Bidirectional self-attention; `key` has no bias; softmax in fp32."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state {n_state} is not a multiple of n_head {n_head}")
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x [B, T, C]; key_bias [B, 1, 1, T] (0 or MASK_VALUE, fp32) -> [B, T, C]."""
        b, t, c = x.shape
        head_dim = c // self.n_head
        scale = head_dim**-0.25  # applied to q and k each: 1/sqrt(head_dim) in all

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_head, head_dim).transpose(1, 2)

        q = heads(self.query(x)) * scale
        k = heads(self.key(x)) * scale
        v = heads(self.value(x))
        scores = (q @ k.transpose(-1, -2)).float() + key_bias
        weights = F.softmax(scores, dim=-1).to(v.dtype)
        y = (weights @ v).transpose(1, 2).reshape(b, t, c)
        return self.out(y)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(attn_ln(x)), then x + mlp(mlp_ln(x)) with a 4x exact-GELU MLP."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state, eps=LAYER_NORM_EPS)
        self.mlp = nn.Sequential(
            nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state)
        )
        self.mlp_ln = nn.LayerNorm(n_state, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), key_bias)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """Log-mel [B, n_mels, T] at 100 Hz -> hidden states [B, T_enc, n_state] at 25 Hz.

    conv1 (k3) -> GELU -> conv2 (k3, stride 2) -> GELU -> + stored positional embedding ->
    n_layer blocks -> average pool by 2 -> `after_norm`. Padded frames are masked as keys, so
    each item's valid outputs do not depend on what it is batched with.
    """

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        # Stored in the checkpoint (spec b.2): loaded, never regenerated.
        self.positional_embedding = nn.Embedding(n_ctx, n_state)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer))
        self.avg_pooler = nn.AvgPool1d(kernel_size=2, stride=2)
        self.after_norm = nn.LayerNorm(n_state, eps=LAYER_NORM_EPS)

    def forward(
        self, mel: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, n_mels, T], lengths [B] valid mel frames -> (h [B, T_enc, n_state], [B])."""
        # Each item is computed as if alone: conv1 frames past the item's own mel (which only
        # batch padding made) are zeroed, so conv2 sees the zero padding it sees alone.
        lengths = lengths.to(device=mel.device, dtype=torch.long)
        n_mel = mel_frames_of_item(lengths)
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        own = torch.arange(x.shape[-1], device=x.device)[None, :] < n_mel[:, None]
        x = F.gelu(self.conv2(x.masked_fill(~own[:, None, :], 0.0)))  # [B, C, ceil(T / 2)]
        t2 = x.shape[-1]
        if t2 > self.n_ctx:
            raise ValueError(
                f"mel of {mel.shape[-1]} frames exceeds the encoder's {2 * self.n_ctx}-frame limit"
            )
        x = x.transpose(1, 2) + self.positional_embedding.weight[:t2]
        # The first ceil(len / 2) conv2 frames of an item are valid (spec b.4).
        valid = torch.arange(t2, device=x.device)[None, :] < ((lengths + 1) // 2)[:, None]
        key_bias = torch.zeros(valid.shape, dtype=torch.float32, device=x.device)
        key_bias = key_bias.masked_fill(~valid, MASK_VALUE)[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_bias)
        x = self.avg_pooler(x.transpose(1, 2)).transpose(1, 2)
        x = self.after_norm(x)
        # Pooled frames the item alone would not have are zeroed too: the adapter's conv then
        # sees its own zero padding there. (Like the reference, it does read the item's frame
        # past the valid length when there is one.)
        own = torch.arange(x.shape[1], device=x.device)[None, :] < ((n_mel + 1) // 2 // 2)[:, None]
        x = x.masked_fill(~own[:, :, None], 0.0)
        return x, encoder_output_length(lengths)
