"""A small, explicit training loop shared by the chapters.

One step is the whole of gradient descent: draw a batch, compute the loss, ``backward()`` to get
the gradient of the loss with respect to every parameter, and let the optimizer move each
parameter a little against its gradient, ``w <- w - lr * dL/dw`` for plain SGD. ``train`` adds
only what every real run needs around that step: a progress bar, metrics in a CSV file,
periodic evaluation, gradient clipping, and checkpoints it can resume from.
"""

from __future__ import annotations

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
) -> dict[str, list[float]]:
    """Run ``steps`` optimizer steps and return the logged history as columns.

    ``next_batch(step)`` returns the batch for a step (taking the step number makes a resumed
    run see the same data it would have seen); ``loss_fn(model, batch)`` returns a scalar loss.
    With ``checkpoint_path`` the state is saved every ``checkpoint_every`` steps and at the end;
    with ``resume=True`` an existing checkpoint there is loaded first and training continues
    from its step. A non-finite loss stops the run with a ``FloatingPointError`` (the last
    checkpoint is kept).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    start = 0
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        start = load_checkpoint(checkpoint_path, model, optimizer)["step"]
    logger = MetricsLogger(metrics_path, append=resume) if metrics_path else None
    history: dict[str, list[float]] = {}

    def record(row: dict[str, float]) -> None:
        for key, value in row.items():
            history.setdefault(key, []).append(value)
        if logger is not None:
            logger.log(row)

    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, leave=False)
    for step in bar:
        loss = loss_fn(model, next_batch(step))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        done = step + 1
        row: dict[str, float] = {}
        if log_every and (done % log_every == 0 or done == steps):
            row = {"step": done, "train_loss": loss.item()}
        if evaluate is not None and eval_every and (done % eval_every == 0 or done == steps):
            model.eval()
            with torch.no_grad():
                row = {"step": done, "train_loss": loss.item(), **evaluate(model)}
            model.train()
        if row:
            record(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"})
        if checkpoint_path and checkpoint_every and done % checkpoint_every == 0:
            save_checkpoint(checkpoint_path, model, optimizer, step=done)
    if checkpoint_path and steps > start:
        save_checkpoint(checkpoint_path, model, optimizer, step=steps)
    return history
