"""The adapter from encoder states (25 Hz) to decoder embeddings (12.5 Hz, llm_dim wide)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.audio import adapter_output_length

ADAPTER_HIDDEN = 2048  # linear1 width of the release (spec b.2); not stored in config.json


class Adapter(nn.Module):
    """conv (stride 2) -> GELU -> linear1 -> ReLU -> linear2 (spec b.4).

    Like the reference, the conv reads every encoder frame it is given, including the frame
    past an item's valid length; `AudioEncoder` zeroes the frames that only batch padding made.
    """

    def __init__(
        self, n_state: int, llm_dim: int, kernel_size: int = 3, stride: int = 2,
        n_hidden: int = ADAPTER_HIDDEN,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(
            n_state, n_state, kernel_size, stride=stride, padding=(kernel_size - 1) // 2
        )
        self.linear1 = nn.Linear(n_state, n_hidden)
        self.linear2 = nn.Linear(n_hidden, llm_dim)

    def forward(
        self, h: torch.Tensor, enc_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, T_enc, n_state], enc_lengths [B] -> (y [B, T_tok, llm_dim], tok_lengths [B])."""
        x = F.gelu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        y = self.linear2(F.relu(self.linear1(x)))
        return y, adapter_output_length(enc_lengths, self.kernel_size, self.stride)
