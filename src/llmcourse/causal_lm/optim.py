"""AdamW with weight-decay groups, and the learning-rate schedules: warm-up + cosine, and
warm-up + stable + decay (WSD).

**Weight decay** pulls every weight towards zero by ``lr * wd * w`` each step (AdamW applies
it directly to the weights, not through the gradient). It is meant for the big matrices, which
hold the model's capacity: the linear layers and the embeddings (every parameter with two or
more dimensions). Biases and the gains of LayerNorm / RMSNorm (one dimension) are left alone:
decaying a norm's gain towards 0 would shrink the signal it exists to keep at scale, and the
handful of values they hold cannot overfit anything.

**Schedule.** Adam's early steps are noisy (its second-moment estimate is still empty), so the
learning rate climbs linearly from ``max_lr / warmup`` to ``max_lr`` over the first ``warmup``
steps. It then follows half a cosine down to ``min_lr`` at the last step:

    lr(s) = min_lr + (max_lr - min_lr) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2

**Warmup-stable-decay** (WSD, used for MiniCPM and DeepSeek's LLMs) holds ``max_lr`` after the
warm-up and decays only over the last ``decay_fraction`` of the steps, here linearly to
``min_lr``. The cosine has to know the run's length from the first step; WSD does not until
the decay starts, so a run can be extended, or branched into several decays from one stable
checkpoint, and most of the loss drop arrives in the short decay at the end.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups for an optimizer: tensors of dimension >= 2 (matrices, embeddings)
    with ``weight_decay``, the others (biases, norm gains) without. A tied weight appears once.
    """
    decay, no_decay = [], []
    for param in model.parameters():  # parameters() yields a shared tensor only once
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    device: torch.device | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``weight_decay_groups``; on CUDA the fused kernel (one launch updates every
    tensor, instead of a handful of small kernels per parameter)."""
    fused = device is not None and device.type == "cuda"
    return torch.optim.AdamW(
        weight_decay_groups(model, weight_decay), lr=lr, betas=betas, fused=fused
    )


def cosine_lr(step: int, *, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then a half cosine from ``max_lr`` to ``min_lr`` at step ``total``, ``min_lr`` after.
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_lr(
    step: int,
    *,
    max_lr: float,
    min_lr: float,
    warmup: int,
    total: int,
    decay_fraction: float = 0.2,
) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under warmup-stable-decay: the
    same linear warm-up, ``max_lr`` until the decay starts at ``total - D`` with
    ``D = round(decay_fraction * total)``, then a straight line to ``min_lr`` at step ``total``.
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    decay = max(1, round(decay_fraction * total))
    start = max(warmup, total - decay)
    if step < start:
        return max_lr
    return max_lr + (min_lr - max_lr) * (step - start) / max(1, total - start)


SCHEDULES = ("cosine", "wsd")
"""The schedule names ``TrainConfig.schedule`` accepts."""


def schedule_lr(
    schedule: str,
    step: int,
    *,
    max_lr: float,
    min_lr: float,
    warmup: int,
    total: int,
    decay_fraction: float = 0.2,
) -> float:
    """``cosine_lr`` or ``wsd_lr`` by name."""
    if schedule == "cosine":
        return cosine_lr(step, max_lr=max_lr, min_lr=min_lr, warmup=warmup, total=total)
    if schedule == "wsd":
        return wsd_lr(
            step, max_lr=max_lr, min_lr=min_lr, warmup=warmup, total=total,
            decay_fraction=decay_fraction,
        )  # fmt: skip
    raise ValueError(f"unknown schedule {schedule!r}: choose from {', '.join(SCHEDULES)}")


def _factor(step: int, schedule: str, max_lr: float, **kwargs: float) -> float:
    return schedule_lr(schedule, step, max_lr=max_lr, **kwargs) / max_lr


def cosine_scheduler(
    optimizer: torch.optim.Optimizer, *, max_lr: float, min_lr: float, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that sets every group's learning rate to ``cosine_lr(step)`` (the
    optimizer must have been built with ``lr=max_lr``)."""
    return lr_scheduler(optimizer, "cosine", max_lr=max_lr, min_lr=min_lr, warmup=warmup,
                        total=total)  # fmt: skip


def lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    *,
    max_lr: float,
    min_lr: float,
    warmup: int,
    total: int,
    decay_fraction: float = 0.2,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that sets every group's learning rate to ``schedule_lr(schedule, step)``
    (the optimizer must have been built with ``lr=max_lr``). Its state is just the step count,
    so it resumes exactly from a checkpoint."""
    if not 0 <= min_lr <= max_lr or max_lr <= 0:
        raise ValueError(f"need 0 <= min_lr <= max_lr and max_lr > 0, got {min_lr}, {max_lr}")
    if warmup < 0 or total < 1:
        raise ValueError(f"need warmup >= 0 and total >= 1, got {warmup}, {total}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose from {', '.join(SCHEDULES)}")
    if not 0.0 < decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    factor = partial(
        _factor, schedule=schedule, max_lr=max_lr, min_lr=min_lr, warmup=warmup, total=total,
        decay_fraction=decay_fraction,
    )  # fmt: skip
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
