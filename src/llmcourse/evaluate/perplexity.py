"""Perplexity and bits per byte of a causal language model on a held-out token stream.

The model reads ``x_0 ... x_{t-1}`` and gives a distribution over ``x_t``. The mean negative
log-likelihood of the stream, in nats per token, is the cross-entropy

    H = -1/N * sum_t log p(x_t | context_t)

and the perplexity is exp(H): the number of equally likely tokens the model is, on average, as
unsure as (a uniform guess over V tokens has perplexity V). Perplexities of models with
different tokenizers cannot be compared, since a token is not the same unit for both; bits per
byte can: the total information in bits divided by the bytes of text, sum_t -log2 p / n_bytes.

A model has a finite context (``seq_len``), so a long stream is cut into windows:

- ``stride=None``: consecutive windows of ``seq_len + 1`` ids that share their boundary id; the
  model reads the first ``seq_len`` and predicts the last ``seq_len``, so every id but the first
  is scored once. Ids at the start of a window see little context.
- ``stride=s`` (1 <= s <= seq_len): the sliding window of Hugging Face's perplexity guide. The
  window's end moves ``s`` ids at a time and only the ``s`` newest ids are scored, each with
  at least ``seq_len - s + 1`` ids of context; smaller strides give lower (fairer) perplexity
  for ``seq_len / s`` times the compute. ``stride=seq_len`` is the same as ``stride=None``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.runtime import autocast


def _windows(n_ids: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored) of each window: the model reads ids[start:end-1] and the
    targets ids[first:end] are scored. As in Hugging Face's guide, a window starts where a
    full window ending ``stride`` ids later would, even when the stream ends sooner."""
    end = min(seq_len + 1, n_ids)
    spans = [(0, end, 1)]
    while end < n_ids:
        first = end
        end = min(first + stride, n_ids)
        spans.append((first + stride - 1 - seq_len, end, first))
    return spans


@torch.no_grad()
def token_nll(
    model: nn.Module,
    ids: torch.Tensor,
    seq_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> tuple[float, int]:
    """(sum of -log p(x_t | context) in nats, number of scored ids) over the stream ``ids``.

    Every id but the first is scored exactly once; windows are described in the module
    docstring. The model's output is upcast to float32 before the log-softmax.
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"ids must be a 1-D tensor of token ids, got {shape}")
    if ids.numel() < 2:
        raise ValueError(f"need at least 2 ids to score a prediction, got {ids.numel()}")
    context = getattr(model, "max_seq_len", None)
    seq_len = context if seq_len is None else seq_len
    if seq_len is None or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len}")
    if context is not None and seq_len > context:
        raise ValueError(f"seq_len={seq_len} exceeds the model's context of {context}")
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len={seq_len}], got {stride}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = ids.to(device=device, dtype=torch.long)
    total, count = 0.0, 0
    spans = _windows(ids.numel(), seq_len, stride)
    # windows of equal length and equal scored share go through the model together
    groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for span in spans:
        groups.setdefault((span[1] - span[0], span[1] - span[2]), []).append(span)
    try:
        for (length, n_scored), members in groups.items():
            for i in range(0, len(members), batch_size):
                chunk = members[i : i + batch_size]
                batch = torch.stack([ids[start:end] for start, end, _ in chunk])
                with autocast(device):
                    logits = model(batch[:, :-1])
                logits = logits[:, -n_scored:].float()
                targets = batch[:, length - n_scored :]
                nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
                total += nll.item()
                count += targets.numel()
    finally:
        model.train(was_training)
    return total, count


def perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    seq_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> float:
    """exp(mean token cross-entropy) of ``model`` on the held-out stream ``ids`` (N,).

    ``seq_len`` defaults to the model's context (``model.max_seq_len``); see the module
    docstring for ``stride``.
    """
    total, count = token_nll(model, ids, seq_len, stride, batch_size)
    return math.exp(total / count)


def bits_per_byte(
    model: nn.Module,
    ids: torch.Tensor,
    n_bytes: int,
    seq_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> float:
    """Total information of the scored ids in bits, divided by ``n_bytes``: the UTF-8 length of
    the text those ids spell (``ids[1:]``: the first id is never scored). For a byte-level
    tokenizer without special ids this is the cross-entropy in bits per token."""
    if n_bytes < 1:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    total, _ = token_nll(model, ids, seq_len, stride, batch_size)
    return total / (math.log(2) * n_bytes)
