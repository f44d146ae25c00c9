"""Padding or packing: how tokenized examples of different lengths become a batch.

*Padding* puts one example per row and fills each row up to the longest one in the batch with
a pad id labelled ``IGNORE``: simple, but every pad position still costs a full forward and
backward pass. *Packing* concatenates examples one after the other into rows of the context
length (first fit: each example goes into the first row with room for it), so nearly every
position is a real token. The loss mask travels with each example: the labels of packed
examples keep their ``IGNORE`` prompts, and the first token of an example (a role token) is
never a target, so no position learns to predict one example from another.

What packing does *not* do here: the attention of a later example can still see the tokens of
the earlier ones in its row, and the positions keep counting across the boundary. This is the
common practice (GPT-style pretraining packs documents the same way, separated by end tokens):
the model learns to ignore what comes before ``<|user|>``. Keeping examples apart would need a
block-diagonal attention mask and positions restarting at each example, which the course's
models do not take. ``throughput`` measures what packing buys: useful (non-pad) tokens per
second of training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from .template import IGNORE, sft_loss

Tokenized = tuple[list[int], list[int]]


def _check(examples: Sequence[Tokenized], length: int) -> None:
    for i, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels):
            raise ValueError(f"example {i}: {len(ids)} ids but {len(labels)} labels")
        if len(ids) > length:
            raise ValueError(
                f"example {i} has {len(ids)} tokens, more than the row length {length}: "
                "drop or shorten it first (truncate_examples)"
            )


def truncate_examples(examples: Sequence[Tokenized], length: int) -> list[Tokenized]:
    """The examples that fit in ``length`` tokens and still have a label to learn."""
    return [
        (ids, labels)
        for ids, labels in examples
        if len(ids) <= length and any(x != IGNORE for x in labels[1:])
    ]


def pad_batch(
    examples: Sequence[Tokenized], pad_id: int, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One example per row, padded to ``length`` (default: the longest): ``(ids, labels)``,
    both (B, L) int64, pad positions labelled ``IGNORE``."""
    longest = max(len(ids) for ids, _ in examples)
    length = length or longest
    _check(examples, length)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
    return ids, labels


def pack_rows(examples: Sequence[Tokenized], length: int) -> list[Tokenized]:
    """The examples packed first-fit, in order, into rows of at most ``length`` tokens."""
    _check(examples, length)
    rows: list[Tokenized] = []
    for x, y in examples:
        for row in rows:
            if len(row[0]) + len(x) <= length:
                row[0].extend(x)
                row[1].extend(y)
                break
        else:
            rows.append((list(x), list(y)))
    return rows


def pack(
    examples: Sequence[Tokenized], length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pack_rows`` as tensors: ``(ids, labels)``, (R, length) each, the unused tail of a row
    padded and labelled ``IGNORE``."""
    return pad_batch(pack_rows(examples, length), pad_id, length)


def throughput(
    model: nn.Module,
    examples: Sequence[Tokenized],
    pad_id: int,
    length: int,
    batch_size: int = 8,
    steps: int = 3,
) -> dict[str, dict[str, float]]:
    """Useful tokens per second of a forward + backward pass, padded vs packed.

    Each mode runs ``steps + 1`` batches of ``batch_size`` rows (the first is a warm-up, not
    timed): padding one example per row (to the batch's longest), packing rows of ``length``
    tokens. The result holds, per mode, ``tokens_per_s`` (useful tokens: pads not counted),
    ``fill`` (useful share of the positions computed) and ``examples_per_s``.
    """
    examples = truncate_examples(examples, length)
    packed = pack_rows(examples, length)
    need = batch_size * (steps + 1)
    if len(packed) < need:
        raise ValueError(
            f"{len(examples)} examples fill {len(packed)} packed rows, fewer than the {need} "
            "the benchmark needs: pass more examples"
        )
    groups = {
        "padding": [examples[i : i + batch_size] for i in range(0, need, batch_size)],
        "packing": [packed[i : i + batch_size] for i in range(0, need, batch_size)],
    }
    per_row = {"padding": 1.0, "packing": len(examples) / len(packed)}
    result = {}
    was_training = model.training
    model.train()
    for mode, batches in groups.items():
        seconds, useful, positions = 0.0, 0, 0
        for i, rows in enumerate(batches):
            ids, labels = pad_batch(rows, pad_id, length if mode == "packing" else None)
            began = time.perf_counter()
            model.zero_grad(set_to_none=True)
            sft_loss(model(ids), labels).backward()
            if i:
                seconds += time.perf_counter() - began
                useful += sum(len(x) for x, _ in rows)
                positions += ids.numel()
        result[mode] = {
            "tokens_per_s": useful / seconds,
            "fill": useful / positions,
            "examples_per_s": steps * batch_size * per_row[mode] / seconds,
        }
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return result
