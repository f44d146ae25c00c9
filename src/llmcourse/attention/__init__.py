"""Attention, from kernel regression to multi-head self-attention.

* ``kernel``: attention as Nadaraya-Watson kernel regression, f(x) = sum_i softmax_i(-(x -
  x_i)^2 / 2) y_i, with a fixed or a learned kernel width.
* ``core``: scaled dot-product attention softmax(Q K^T / sqrt(d_k)) V from scratch, padding
  and causal masks.
* ``multihead``: a self-attention head with W_Q, W_K, W_V; ``MultiHeadAttention`` with the
  output projection, on PyTorch's fused kernel or from scratch.
* ``unscramble``: a one-layer attention model that puts scrambled characters back in order,
  and heat maps of its attention weights.

Run ``python -m llmcourse.attention --help`` for the command line.
"""

from .core import (
    causal_mask,
    check_mask,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
)
from .kernel import (
    KernelRegression,
    fit_width,
    kernel_weights,
    nadaraya_watson,
    toy_regression,
    true_function,
)
from .multihead import MultiHeadAttention, SelfAttention, merge_heads, split_heads

__all__ = [
    "KernelRegression",
    "MultiHeadAttention",
    "SelfAttention",
    "causal_mask",
    "check_mask",
    "fit_width",
    "kernel_weights",
    "masked_softmax",
    "merge_heads",
    "nadaraya_watson",
    "padding_mask",
    "scaled_dot_product_attention",
    "split_heads",
    "toy_regression",
    "true_function",
]
