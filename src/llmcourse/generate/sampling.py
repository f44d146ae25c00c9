"""Logit processors: how a decoding strategy reshapes the next-token distribution.

A language model's last position gives one score (logit) z_i per vocabulary token; softmax
turns them into probabilities p_i = exp(z_i) / sum_j exp(z_j). Every decoding strategy is a
rule applied to these logits before a token is picked:

* **temperature** t divides the logits, p_i ~ exp(z_i / t): t < 1 sharpens the distribution
  towards the most likely token (t -> 0 is greedy argmax), t > 1 flattens it towards uniform;
* **top-k** keeps the k largest logits and sets the others to -inf (probability 0);
* **top-p** (nucleus) keeps the smallest set of most likely tokens whose total probability
  reaches p, so the number kept adapts: few when the model is sure, many when it is not;
* a **repetition penalty** r makes every token already in the text less likely: its logit is
  divided by r when positive and multiplied by r when negative (the CTRL rule, as in Hugging
  Face's ``RepetitionPenaltyLogitsProcessor``).

Each function takes logits of shape (V,), (B, V) or any (..., V) and returns a new tensor of the
same shape; masked tokens get -inf, so a following softmax gives them probability exactly 0.

Worked example: logits (2.0, 1.0, 0.0, -1.0) have probabilities (0.64, 0.24, 0.09, 0.03).
``top_k_filter(logits, 2)`` keeps (2.0, 1.0, -inf, -inf); ``top_p_filter(logits, 0.8)`` keeps
the same two tokens (0.64 < 0.8 <= 0.64 + 0.24); ``apply_temperature(logits, 0.5)`` gives
(4.0, 2.0, 0.0, -2.0), whose probabilities are (0.87, 0.12, 0.02, 0.00).
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() == 0:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"logits must be a tensor of shape (..., V), got {shape}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature`` > 0: softmax(z / t).

    Temperature 0 is the limit "always the most likely token"; it is not a division but
    greedy decoding (``GenerationConfig(temperature=0)``), so it is refused here.
    """
    _check_logits(logits)
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if temperature == 0:
        raise ValueError("temperature 0 means greedy decoding (argmax): there is nothing to scale")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row; set the others to -inf.

    Tokens tied with the k-th largest value are all kept (the rule cannot prefer one of two
    equal scores), so a row may keep more than k tokens. ``k >= V`` keeps everything.
    """
    _check_logits(logits)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top-k needs an integer k >= 1, got {k!r}")
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens with probability >= ``p``.

    Sort the probabilities in decreasing order, p_(1) >= p_(2) >= ...; token (j) is kept when
    the mass of the tokens before it, p_(1) + ... + p_(j-1), is still below p. The first
    (most likely) token is therefore always kept, and ``p = 1`` keeps every token. Tokens tied
    with the last one kept are kept as well, so the result depends on the values only, not on
    how a sort orders equal scores.
    """
    _check_logits(logits)
    if not (isinstance(p, int | float) and 0 < p <= 1):
        raise ValueError(f"top-p needs 0 < p <= 1, got {p!r}")
    if p == 1:
        return logits.clone()
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    # the smallest kept logit of each row; everything at or above it stays (ties included)
    cutoff = sorted_logits.masked_fill(~keep_sorted, math.inf).amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits < cutoff, NEG_INF)


def repetition_penalty(
    logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make the tokens of ``previous_ids`` less likely: z / r if z > 0, z * r if z <= 0.

    ``previous_ids`` is (T,) for (V,) logits, (B, T) for (B, V) logits (in general (..., T)
    for (..., V)): the prompt and the tokens generated so far. A token counts once however
    often it occurred. ``penalty`` 1 changes nothing; above 1 it discourages repeats, below 1
    (but > 0) it encourages them.
    """
    _check_logits(logits)
    if not math.isfinite(penalty) or penalty <= 0:
        raise ValueError(f"repetition penalty must be a finite number > 0, got {penalty}")
    if previous_ids.dim() != logits.dim() or previous_ids.shape[:-1] != logits.shape[:-1]:
        raise ValueError(
            f"previous_ids {tuple(previous_ids.shape)} do not match logits "
            f"{tuple(logits.shape)}: expected (..., T) for (..., V) logits"
        )
    if previous_ids.numel() and (previous_ids.min() < 0 or previous_ids.max() >= logits.shape[-1]):
        raise ValueError(f"previous_ids must lie in [0, {logits.shape[-1]})")
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen.scatter_(-1, previous_ids.long(), True)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)
