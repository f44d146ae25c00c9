"""Where the computation runs, and how to make it repeatable.

``pick_device`` chooses CUDA, then Apple's MPS, then the CPU, unless the caller or the
``LLMCOURSE_DEVICE`` environment variable names one. ``seed_everything`` seeds Python's,
NumPy's and PyTorch's random generators at once, so a run with the same seed draws the same
numbers. ``autocast`` turns on bfloat16 mixed precision where the hardware supports it.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

DEVICE_ENV = "LLMCOURSE_DEVICE"
_KNOWN = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(preference: str | None = None) -> torch.device:
    """Return the device to compute on.

    ``preference`` may be ``"auto"`` (the default), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or
    ``"mps"``; when it is ``None`` the ``LLMCOURSE_DEVICE`` environment variable is read. Asking
    for a device that is not there raises a ``ValueError`` that says which ones are.
    """
    choice = (preference or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    kind = choice.split(":", 1)[0]
    if kind not in _KNOWN:
        raise ValueError(f"unknown device {choice!r}: expected one of {', '.join(_KNOWN)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here")
    if kind == "mps" and not _mps_available():
        raise ValueError("device 'mps' was asked for, but this PyTorch build has no MPS backend")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and PyTorch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA GPUs that support it; a do-nothing context elsewhere.

    bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling: the
    matrix multiplications run in bf16 while reductions such as softmax and the loss stay fp32.
    """
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily limit PyTorch's CPU threads (``None`` leaves the setting alone)."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
