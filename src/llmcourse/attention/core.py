"""Scaled dot-product attention, written out, and the masks that restrict it.

Each query vector q is compared with every key vector k by a dot product; the scores of one
query go through a softmax and weight the value vectors:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

Why divide by sqrt(d_k): if the entries of q and k are independent with mean 0 and variance 1,
q . k is a sum of d_k such products and has variance d_k. Without the scaling, the scores grow
like sqrt(d_k), the softmax saturates on the largest one (a near one-hot distribution) and its
gradient vanishes. Dividing by sqrt(d_k) brings the variance back to 1 at any width.

A *mask* says which keys a query may look at: a boolean tensor, True where attending is
allowed, broadcastable to the (..., L_q, L_k) score matrix (the convention of
``torch.nn.functional.scaled_dot_product_attention``). Forbidden scores become -inf before the
softmax, so they receive exactly zero weight. A *padding mask* hides the padding tokens of
shorter sequences in a batch; a *causal mask* hides the future: query i sees keys j <= i.
"""

from __future__ import annotations

import math

import torch


def causal_mask(
    length_q: int, length_k: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (L_q, L_k) mask, True on and below the diagonal: position i sees j <= i.

    With L_k > L_q (new queries after L_k - L_q cached keys) the diagonal is shifted so that the
    last query sees every key, as in ``torch.tril(..., diagonal=L_k - L_q)``.
    """
    length_k = length_q if length_k is None else length_k
    if length_q < 1 or length_k < length_q:
        raise ValueError(f"need 1 <= L_q <= L_k for a causal mask, got {length_q}, {length_k}")
    ones = torch.ones(length_q, length_k, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=length_k - length_q)


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Boolean (B, 1, 1, L) mask, True at real tokens, from a (B, L) batch of token ids.

    The two singleton dimensions broadcast over the heads and the queries: every query may look
    at every key except the padding.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (batch, length), got shape {tuple(tokens.shape)}")
    return (tokens != pad_id)[:, None, None, :]


def check_mask(mask: torch.Tensor, scores_shape: tuple[int, ...]) -> torch.Tensor:
    """``mask`` as a boolean tensor after checking that it broadcasts to ``scores_shape``."""
    if mask.dtype != torch.bool:
        raise TypeError(f"the mask must be boolean (True = may attend), got dtype {mask.dtype}")
    try:
        torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        raise ValueError(
            f"a mask of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"(..., L_q, L_k) = {tuple(scores_shape)}"
        ) from None
    if mask.dim() > len(scores_shape):
        raise ValueError(f"the mask has more dimensions than the scores {tuple(scores_shape)}")
    return mask


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dimension, with zero weight wherever ``mask`` is False.

    A row whose keys are all masked gets all-zero weights (rather than the 0/0 = NaN of a
    softmax over -inf): such a query attends to nothing and outputs a zero vector.
    """
    if mask is not None:
        mask = check_mask(mask, tuple(scores.shape))
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights.nan_to_num(0.0) if mask is not None else weights


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k) + mask) V, from scratch; returns (output, weights).

    Shapes: q (..., L_q, d_k), k (..., L_k, d_k), v (..., L_k, d_v); the leading dimensions
    (batch, heads) must broadcast. Output (..., L_q, d_v), weights (..., L_q, L_k). ``mask`` is
    boolean (True = may attend); ``causal=True`` adds the causal mask. ``dropout_p`` drops
    attention weights (and rescales the rest), as in training.
    """
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError("q, k and v need at least 2 dimensions (length, features)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"queries and keys must have the same size d_k: {q.shape[-1]} vs {k.shape[-1]}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"every key needs a value: {k.shape[-2]} keys, {v.shape[-2]} values")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        allowed = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        mask = allowed if mask is None else check_mask(mask, tuple(scores.shape)) & allowed
    weights = masked_softmax(scores, mask)
    if dropout_p > 0:
        weights = torch.nn.functional.dropout(weights, dropout_p)
    return weights @ v, weights
