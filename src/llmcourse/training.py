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

Under ``torch.distributed`` (a model wrapped in ``DistributedDataParallel``, every rank running
``train``), the logged loss is the mean over the ranks, the gradient all-reduce is skipped on
all but the last micro-batch of an accumulated step (``no_sync``), and only the main process
(``is_main``) writes metrics and checkpoints and shows a progress bar; every rank reads the
checkpoint when resuming.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from llmcourse.checkpoint import resume_checkpoint, save_checkpoint
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
    is_main: bool = True,
) -> dict[str, list[float]]:
    """Run ``steps`` optimizer steps and return the logged history as columns.

    ``next_batch(step)`` returns the batch for a step (taking the step number makes a resumed
    run see the same data it would have seen); ``loss_fn(model, batch)`` returns a scalar loss.
    With ``checkpoint_path`` the state is saved every ``checkpoint_every`` steps and at the end;
    with ``resume=True`` an existing checkpoint there is loaded first and training continues
    from its step. Each save keeps the one before it (``checkpoint.previous_path``), and a
    resume whose newest checkpoint is damaged falls back to that one with a warning; rows of
    the metrics file past the step resumed from (logged after the last save by a run that
    crashed) are dropped. A non-finite loss stops the run with a ``FloatingPointError`` (the
    last checkpoint is kept).

    ``scheduler`` is stepped after every optimizer step, and its state travels with the
    checkpoint. With ``accumulate=k > 1``, ``next_batch(step)`` returns a sequence of ``k``
    micro-batches: each loss is divided by ``k`` before ``backward()``, so the gradients add up
    to the gradient of the mean loss, and the logged ``train_loss`` is that mean.
    ``on_log(step, steps_per_second)`` is called for every logged row with the number of steps
    done and the speed of the steps since the previous logged row (wall time of the training
    steps only: evaluation and checkpoints excluded); the columns it returns are added to the
    row. ``is_main=False`` (the other ranks of a distributed run) writes no file.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate}")
    start = 0
    if resume and checkpoint_path is not None:
        info = resume_checkpoint(checkpoint_path, model, optimizer, scheduler=scheduler)
        start = info["step"] if info is not None else 0
    if not is_main:
        metrics_path, checkpoint_path, progress = None, None, False
    if resume and metrics_path:
        drop_rows_after(metrics_path, start)
    logger = MetricsLogger(metrics_path, append=resume) if metrics_path else None
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
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
        for i, micro in enumerate(micro_batches):
            # DDP all-reduces the gradients in backward(): once per step is enough
            last = i == len(micro_batches) - 1
            deferred = not last and hasattr(model, "no_sync")
            with model.no_sync() if deferred else contextlib.nullcontext():
                micro_loss = loss_fn(model, micro)
                (micro_loss / accumulate).backward()
            losses.append(micro_loss.detach())
        loss = torch.stack(losses).mean()
        if world > 1:  # the loss of the whole batch, so every rank logs and checks the same
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
            loss = loss / world
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
            save_checkpoint(
                checkpoint_path, model, optimizer, done, scheduler=scheduler, keep_previous=True
            )
    saved_last = checkpoint_every and steps % checkpoint_every == 0
    if checkpoint_path and steps > start and not saved_last:
        save_checkpoint(
            checkpoint_path, model, optimizer, steps, scheduler=scheduler, keep_previous=True
        )
    return history


def drop_rows_after(path: str | Path, step: int) -> None:
    """Remove the rows of a metrics CSV whose ``step`` is past ``step`` (a resumed run logs
    them again)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    kept = [r for r in rows if not r.get("step") or float(r["step"]) <= step]
    if len(kept) == len(rows) or columns is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(kept)
    tmp.replace(path)
