"""Checkpoints: save a run's state atomically and resume it safely.

A checkpoint is one file holding the model's ``state_dict``, optionally the optimizer's and
the learning-rate scheduler's, the step reached, the random generators' states and any
JSON-like extras (a config, for instance). It is written to a temporary file and renamed into
place, so a crash mid-save never destroys the previous checkpoint. It is read with
``torch.load(weights_only=True)``, which refuses to unpickle arbitrary Python objects: loading
a file from a stranger cannot run their code.

A training run can also keep the checkpoint before the last one (``keep_previous=True``:
``train_state.pt`` becomes ``train_state.prev.pt`` when the new one is complete), and
``resume_checkpoint`` falls back to it, saying so, when the newest file turns out damaged.
A model wrapped by ``DistributedDataParallel`` or ``torch.compile`` is saved and loaded as the
module inside, so a checkpoint does not depend on how the run was launched.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, or does not fit the model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers; any other module unchanged."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def previous_path(path: str | Path) -> Path:
    """Where ``keep_previous`` keeps the checkpoint before the last: ``a.pt`` -> ``a.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _numpy_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}  # fmt: skip


def _set_numpy_rng(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached"]))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    keep_previous: bool = False,
) -> Path:
    """Write the training state to ``path`` atomically and return the path.

    The random state saved is Python's, NumPy's global one and PyTorch's CPU generator, and
    every CUDA device's where CUDA is in use. The new file is written and flushed to disk under
    a temporary name first; only then is it renamed over ``path``. With ``keep_previous`` the
    checkpoint it replaces is kept as ``previous_path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "format": "llmcourse-checkpoint-v1",
        "model": unwrap(model).state_dict(),
        "step": int(step),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": _numpy_rng(),
        },
        "extra": extra or {},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.is_file():
        os.replace(path, previous_path(path))
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
    mismatch = _mismatch(unwrap(model).state_dict(), state.get("model"))
    if mismatch:
        raise CheckpointError(f"{path} does not fit this model: {mismatch}")
    try:
        unwrap(model).load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError) as err:
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
        if "numpy" in state["rng"]:
            _set_numpy_rng(state["rng"]["numpy"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {"step": state["step"], "extra": state["extra"]}


def _mismatch(expected: dict[str, torch.Tensor], saved: Any) -> str | None:
    """A short account of how a saved state dict differs from the model's, or ``None``."""
    if not isinstance(saved, dict):
        return "it holds no model state"
    missing = [k for k in expected if k not in saved]
    unknown = [k for k in saved if k not in expected]
    shapes = [
        f"{k} is {tuple(saved[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in saved and getattr(saved[k], "shape", None) != v.shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unknown", unknown), ("other shapes", shapes)):
        if items:
            more = f" and {len(items) - 2} more" if len(items) > 2 else ""
            parts.append(f"{len(items)} {label} ({'; '.join(items[:2])}{more})")
    return ", ".join(parts) or None


def resume_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, Any] | None:
    """Load the newest good checkpoint of a run: ``path``, else ``previous_path(path)``.

    Returns what ``load_checkpoint`` returns plus ``"path"`` (the file used), or ``None`` when
    neither file exists (a fresh run). A damaged newest file with a good previous one gives a
    ``UserWarning`` naming the damaged file and the step resumed from; when every file present
    is damaged, ``CheckpointError`` names each file and what is wrong with it.
    """
    errors = []
    for candidate in (Path(path), previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            info = load_checkpoint(candidate, model, optimizer, map_location, True, scheduler)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            warnings.warn(
                f"the newest checkpoint is damaged, resuming from the previous one, {candidate} "
                f"(step {info['step']}): {errors[0]}",
                stacklevel=2,
            )
        return {**info, "path": candidate}
    if errors:
        raise CheckpointError("cannot resume, no good checkpoint: " + "; ".join(errors))
    return None


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples; a round trip may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
