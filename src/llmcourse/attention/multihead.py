"""Self-attention with learned projections, and multi-head attention.

Self-attention makes the queries, keys and values of a sequence X (one row per token) by three
learned linear maps (written with row vectors, as in code):

    Q = X W_Q,    K = X W_K,    V = X W_V,    out = softmax(Q K^T / sqrt(d_k)) V.

(Some texts write V = W_K X: the values have their own matrix W_V.) *Multi-head* attention runs
h such attentions side by side on slices of size d_k = d_model / h, so that each head can
look for a different relation, then concatenates the heads and mixes them with an output
projection W_O:

    MultiHead(X) = Concat(head_1, ..., head_h) W_O,   head_i = Attention(Q_i, K_i, V_i).

Splitting d_model into h heads costs nothing extra: the projections are the same d_model x
d_model matrices, only reshaped. ``MultiHeadAttention`` computes the attention either with
PyTorch's fused ``scaled_dot_product_attention`` (the fast path: flash or memory-efficient
kernels on a GPU, no (L x L) weight matrix kept) or from scratch (``need_weights=True``, to
look at the weights); both give the same output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import causal_mask, check_mask, scaled_dot_product_attention


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, d_model) -> (B, h, L, d_model / h): head i gets features i*d_k to (i+1)*d_k - 1."""
    batch, length, d_model = x.shape
    if d_model % n_heads:
        raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
    return x.view(batch, length, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, L, d_k) -> (B, L, h * d_k): the inverse of ``split_heads`` (concatenate heads)."""
    batch, n_heads, length, d_k = x.shape
    return x.transpose(1, 2).reshape(batch, length, n_heads * d_k)


class SelfAttention(nn.Module):
    """One attention head on a sequence: Q = X W_Q, K = X W_K, V = X W_V (no biases).

    ``forward(x)`` takes (B, L, d_model) and returns (output (B, L, d_head), weights (B, L, L)).
    """

    def __init__(self, d_model: int, d_head: int) -> None:
        super().__init__()
        if d_model < 1 or d_head < 1:
            raise ValueError(f"d_model and d_head must be positive, got {d_model}, {d_head}")
        self.W_Q = nn.Linear(d_model, d_head, bias=False)
        self.W_K = nn.Linear(d_model, d_head, bias=False)
        self.W_V = nn.Linear(d_model, d_head, bias=False)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_input(x, self.W_Q.in_features, "x")
        return scaled_dot_product_attention(
            self.W_Q(x), self.W_K(x), self.W_V(x), mask=mask, causal=causal
        )


def _check_input(x: torch.Tensor, d_model: int, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(
            f"{name} must have shape (batch, length, d_model={d_model}), got {tuple(x.shape)}"
        )


class MultiHeadAttention(nn.Module):
    """Multi-head attention with projections ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``.

    ``forward(query, key=None, value=None, mask=None, causal=False, need_weights=False)``:
    self-attention when ``key`` and ``value`` are omitted, cross-attention (queries from one
    sequence, keys and values from another, e.g. the encoder's output) when they are given.
    Inputs are (B, L, d_model); ``mask`` is boolean, True = may attend, broadcastable to
    (B, h, L_q, L_k) (``padding_mask`` gives (B, 1, 1, L_k)); ``causal`` hides later keys,
    aligned so that the last query sees the last key. Returns (output, weights): weights are
    (B, h, L_q, L_k) with ``need_weights=True`` (the from-scratch path) and ``None`` otherwise
    (the fused path).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model < 1 or n_heads < 1:
            raise ValueError(f"d_model and n_heads must be positive, got {d_model}, {n_heads}")
        if d_model % n_heads:
            raise ValueError(
                f"d_model = {d_model} must be divisible by n_heads = {n_heads} "
                f"(each head gets d_model / n_heads features)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_heads, self.dropout = d_model, n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            _check_input(t, self.d_model, name)
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(
                f"batch sizes and key/value lengths must agree: query {tuple(query.shape)}, "
                f"key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        q = split_heads(self.q_proj(query), self.n_heads)
        k = split_heads(self.k_proj(key), self.n_heads)
        v = split_heads(self.v_proj(value), self.n_heads)
        dropout_p = self.dropout if self.training else 0.0
        scores_shape = (q.shape[0], self.n_heads, q.shape[2], k.shape[2])
        if mask is not None:
            check_mask(mask, scores_shape)
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask, causal, dropout_p)
        else:
            weights = None
            if causal and (mask is not None or q.shape[2] != k.shape[2]):
                # SDPA's is_causal aligns the mask top-left and takes no extra mask: build it
                allowed = causal_mask(q.shape[2], k.shape[2], device=q.device)
                mask, causal = allowed if mask is None else mask & allowed, False
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal
            )
        return self.out_proj(merge_heads(out)), weights
