"""The encoder block and the decoder block of the Transformer.

Encoder block: self-attention over the source, then a position-wise feed-forward network
FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, each wrapped in a residual connection and LayerNorm.
Decoder block: *masked* (causal) self-attention over the target so far, *cross-attention*
whose queries come from the target and keys/values from the encoder's output (the memory),
then the FFN, again each with a residual connection and LayerNorm.

Where the LayerNorm goes:

* post-norm (the 2017 paper, "Add & Norm"):  x = LayerNorm(x + Sublayer(x));
* pre-norm (GPT-2, LLaMA and most models since): x = x + Sublayer(LayerNorm(x)), with one
  more LayerNorm after the last block.

Pre-norm keeps an un-normalised path from the input to the output through every residual
connection, so gradients reach the first layers unchanged and deep stacks train without the
learning-rate warm-up that post-norm needs. The parameter names (``self_attn``, ``linear1``,
``norm1``, ...) follow ``torch.nn.TransformerEncoderLayer``/``DecoderLayer``.
"""

from __future__ import annotations

import torch
from torch import nn

from llmcourse.attention import MultiHeadAttention


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear(d_model, d_ff), ReLU, dropout, Linear back."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class EncoderBlock(nn.Module):
    """Self-attention and feed-forward sublayers with residuals and LayerNorm (pre or post)."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S, d_model); ``src_mask`` True at keys that may be attended (padding hidden)."""

        def attend(h: torch.Tensor) -> torch.Tensor:
            return self.dropout1(self.self_attn(h, mask=src_mask)[0])

        if self.norm_first:
            x = x + attend(self.norm1(x))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + attend(x))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention to the memory, feed-forward; residuals, norms."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, d_model) the target so far, memory (B, S, d_model) the encoder's output.

        Self-attention is always causal (position t sees targets 0..t); ``tgt_mask`` can hide
        more (target padding), ``memory_mask`` hides the source padding from cross-attention.
        """

        def self_attend(h: torch.Tensor) -> torch.Tensor:
            return self.dropout1(self.self_attn(h, mask=tgt_mask, causal=True)[0])

        def cross_attend(h: torch.Tensor) -> torch.Tensor:
            return self.dropout2(self.cross_attn(h, memory, memory, mask=memory_mask)[0])

        if self.norm_first:
            x = x + self_attend(self.norm1(x))
            x = x + cross_attend(self.norm2(x))
            return x + self.dropout3(self.ffn(self.norm3(x)))
        x = self.norm1(x + self_attend(x))
        x = self.norm2(x + cross_attend(x))
        return self.norm3(x + self.dropout3(self.ffn(x)))
