"""A small, explicit training loop shared by the chapters.

One step is the whole of gradient descent: draw a batch, compute the loss, ``backward()`` to get
the gradient of the loss with respect to every parameter, and let the optimizer move each
parameter a little against its gradient, ``w <- w - lr * dL/dw`` for plain SGD. ``train`` adds
only what every real run needs around that step: a progress bar, metrics in a CSV file,
periodic evaluation, gradient clipping, and checkpoints it can resume from. For bigger models
it also takes a learning-rate scheduler (stepped once per optimizer step, saved with the
checkpoint), gradient accumulation (several micro-batches summed into one step, for a batch
too big for memory) and a hook that adds columns to the logged rows (the learning rate,
tokens per second, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from llmcourse.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.metrics import MetricsLogger

BatchFn = Callable[[int], Any]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
LogHook = Callable[[int, float], dict[str, float]]
"""``on_log(step, steps_per_second) -> extra columns``."""


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    next_batch: BatchFn,
    loss_fn: LossFn,
    steps: int,
    *,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int = 0,
    log_every: int = 1,
    grad_clip: float | None = None,
    metrics_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: bool = True,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    accumulate: int = 1,
    on_log: LogHook | None = None,
) -> dict[str, list[float]]:
    """Run ``steps`` optimizer steps and return the logged history as columns.

    ``next_batch(step)`` returns the batch for a step (taking the step number makes a resumed
    run see the same data it would have seen); ``loss_fn(model, batch)`` returns a scalar loss.
    With ``checkpoint_path`` the state is saved every ``checkpoint_every`` steps and at the end;
    with ``resume=True`` an existing checkpoint there is loaded first and training continues
    from its step. A non-finite loss stops the run with a ``FloatingPointError`` (the last
    checkpoint is kept).

    ``scheduler`` is stepped after every optimizer step, and its state travels with the
    checkpoint. With ``accumulate=k > 1``, ``next_batch(step)`` returns a sequence of ``k``
    micro-batches: each loss is divided by ``k`` before ``backward()``, so the gradients add up
    to the gradient of the mean loss, and the logged ``train_loss`` is that mean.
    ``on_log(step, steps_per_second)`` is called for every logged row with the number of steps
    done and the speed of the steps since the previous logged row (wall time of the training
    steps only: evaluation and checkpoints excluded); the columns it returns are added to the
    row.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate}")
    start = 0
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        start = load_checkpoint(checkpoint_path, model, optimizer, scheduler=scheduler)["step"]
    logger = MetricsLogger(metrics_path, append=resume) if metrics_path else None
    history: dict[str, list[float]] = {}

    def record(row: dict[str, float]) -> None:
        for key, value in row.items():
            history.setdefault(key, []).append(value)
        if logger is not None:
            logger.log(row)

    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, leave=False)
    seconds, timed = 0.0, 0
    for step in bar:
        began = time.perf_counter()
        batch = next_batch(step)
        micro_batches = [batch] if accumulate == 1 else list(batch)
        if len(micro_batches) != accumulate:
            raise ValueError(
                f"accumulate={accumulate} needs that many micro-batches per step, "
                f"next_batch({step}) gave {len(micro_batches)}"
            )
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for micro in micro_batches:
            micro_loss = loss_fn(model, micro)
            (micro_loss / accumulate).backward()
            losses.append(micro_loss.detach())
        loss = torch.stack(losses).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        done = step + 1
        row: dict[str, float] = {}
        if log_every and (done % log_every == 0 or done == steps):
            row = {"step": done, "train_loss": loss.item()}
        seconds, timed = seconds + time.perf_counter() - began, timed + 1
        if row and on_log is not None:
            row.update(on_log(done, timed / seconds))
            seconds, timed = 0.0, 0
        if evaluate is not None and eval_every and (done % eval_every == 0 or done == steps):
            model.eval()
            with torch.no_grad():
                row = {"step": done, "train_loss": loss.item(), **row, **evaluate(model)}
            model.train()
        if row:
            record(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"})
        if checkpoint_path and checkpoint_every and done % checkpoint_every == 0:
            save_checkpoint(checkpoint_path, model, optimizer, step=done, scheduler=scheduler)
    if checkpoint_path and steps > start:
        save_checkpoint(checkpoint_path, model, optimizer, step=steps, scheduler=scheduler)
    return history
