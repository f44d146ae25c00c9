"""The causal language-modelling loss: every position predicts the token after it.

A decoder reads ``x_0 ... x_{n-1}`` and, thanks to the causal mask, its output at position
``t`` has seen only ``x_0 ... x_t``. Training asks that output to put high probability on the
next token, so the loss of a sequence is the mean negative log-likelihood

    L = -1/(n-1) * sum_{t=0}^{n-2} log softmax(logits_t)[x_{t+1}]

The targets are the inputs shifted left by one: the last position has no next token to predict
and the first token is never a target. One forward pass scores all ``n - 1`` predictions of
every sequence in the batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean cross-entropy of position ``t``'s logits against token ``t + 1`` (the shift).

    ``logits`` is (B, T, V) and ``input_ids`` (B, n) with n = T (the usual case, the model read
    ``input_ids``: its last position predicts nothing) or n = T + 1 (a training window: the
    model read ``input_ids[:, :-1]`` and every one of its positions has a target). Targets equal
    to ``ignore_index`` (padding, or a prompt that should not be learned) are left out of the
    mean. The logits are upcast to float32 so that a bf16 forward pass still gets an exact loss.
    """
    if logits.dim() != 3 or input_ids.dim() != 2:
        raise ValueError(
            f"expected logits (B, T, V) and input_ids (B, n), got {tuple(logits.shape)} and "
            f"{tuple(input_ids.shape)}"
        )
    batch, length, vocab = logits.shape
    n = input_ids.shape[1]
    if input_ids.shape[0] != batch or n not in (length, length + 1) or n < 2:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} do not fit logits {tuple(logits.shape)}: "
            "they need the same batch size and T or T + 1 (>= 2) tokens"
        )
    predictions = logits[:, : n - 1].float()
    targets = input_ids[:, 1:]
    return F.cross_entropy(
        predictions.reshape(-1, vocab), targets.reshape(-1), ignore_index=ignore_index
    )
