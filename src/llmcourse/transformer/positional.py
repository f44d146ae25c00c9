"""Positional information: sinusoidal encodings and learned position embeddings.

Attention compares every token with every other one and ignores their order: permuting the
input permutes the output the same way. Word order must therefore be put into the vectors
themselves, by adding a vector that depends on the position.

The 2017 Transformer adds fixed sinusoids. For position pos and pair index k = 0, 1, ...,
d_model/2 - 1, with frequencies w_k = 1 / 10000^(2k / d_model):

    PE(pos, 2k)     = sin(pos * w_k),
    PE(pos, 2k + 1) = cos(pos * w_k).

Even *dimensions* hold sines and odd dimensions cosines, of the same frequency in each pair;
every position gets both (it is not sine for even positions and cosine for odd ones). The
wavelengths grow geometrically from 2 pi to 10000 * 2 pi, like the hands of a clock, and
PE(pos + t) is a rotation of PE(pos) that depends only on t, which makes relative offsets easy
to read. Learned position embeddings (BERT, GPT-2) are simply a trained vector per position.
"""

from __future__ import annotations

import torch
from torch import nn


def sinusoidal_encoding(length: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The (length, d_model) table PE[pos, 2k] = sin(pos / base^(2k/d)), PE[pos, 2k+1] = cos."""
    if length < 1 or d_model < 2 or d_model % 2:
        raise ValueError(
            f"need length >= 1 and an even d_model >= 2, got length {length}, d_model {d_model}"
        )
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    frequency = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.empty(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.float()


class SinusoidalPositions(nn.Module):
    """Adds the fixed sinusoidal table to (B, L, d_model) inputs (a buffer, not trained)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return x + self.table[offset : offset + _length(x, self.table.shape[0], offset)]


class LearnedPositions(nn.Module):
    """Adds a trained vector per position (initialised small and random)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        n = _length(x, self.table.num_embeddings, offset)
        return x + self.table.weight[offset : offset + n]


def _length(x: torch.Tensor, max_len: int, offset: int) -> int:
    if x.dim() != 3:
        raise ValueError(f"expected (batch, length, d_model), got shape {tuple(x.shape)}")
    if offset + x.shape[1] > max_len:
        raise ValueError(
            f"positions {offset}..{offset + x.shape[1] - 1} exceed max_len = {max_len}: "
            "build the model with a larger max_len"
        )
    return x.shape[1]
