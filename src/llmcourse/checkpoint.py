"""Checkpoints: save a run's state atomically and resume it safely.

A checkpoint is one file holding the model's ``state_dict``, optionally the optimizer's and
the learning-rate scheduler's, the step reached, the random generators' states and any
JSON-like extras (a config, for instance). It is written to a temporary file and renamed into
place, so a crash mid-save never destroys the previous checkpoint. It is read with
``torch.load(weights_only=True)``, which refuses to unpickle arbitrary Python objects: loading
a file from a stranger cannot run their code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, or does not fit the model."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> Path:
    """Write the training state to ``path`` atomically and return the path.

    The random state saved is Python's and PyTorch's CPU generator, and every CUDA device's
    where CUDA is in use.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "format": "llmcourse-checkpoint-v1",
        "model": model.state_dict(),
        "step": int(step),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "extra": extra or {},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, Any]:
    """Load ``path`` into ``model`` (and ``optimizer``, ``scheduler``); return
    ``{"step": ..., "extra": ...}``.

    Raises ``CheckpointError`` with a readable message when the file is missing, is not a
    checkpoint, contains objects that are unsafe to load, or its tensors do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path} is not a readable llmcourse checkpoint (corrupt, truncated, or it holds "
            f"objects that are unsafe to unpickle): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != "llmcourse-checkpoint-v1":
        raise CheckpointError(f"{path} is a PyTorch file but not an llmcourse checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit this model: {err}") from err
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError(f"{path} has no optimizer state to resume from")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if "scheduler" not in state:
            raise CheckpointError(f"{path} has no learning-rate scheduler state to resume from")
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_as_tuple(state["rng"]["python"]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {"step": state["step"], "extra": state["extra"]}


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples; a round trip may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
