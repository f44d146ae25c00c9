"""Device choice, seeding and autocast."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from llmcourse.runtime import autocast, pick_device, seed_everything, torch_threads


def test_pick_device_auto_and_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMCOURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    auto = pick_device()
    if expected:
        assert auto.type == expected
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LLMCOURSE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_pick_device_rejects_unknown_and_absent() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_seed_everything_repeats_all_generators() -> None:
    def draw() -> tuple:
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


def test_autocast_is_a_no_op_on_cpu() -> None:
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32


def test_torch_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
