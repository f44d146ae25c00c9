"""Tests of `llmcourse.optimizers` against `torch.optim`, step by step, and by hand."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from llmcourse import optimizers as O

CASES = {
    "sgd": (
        lambda p: O.SGD(p, lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1),
    ),
    "sgd_wd": (
        lambda p: O.SGD(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.1),
    ),
    "momentum": (
        lambda p: O.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
    ),
    "nesterov": (
        lambda p: O.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
    ),
    "adam": (
        lambda p: O.Adam(p, lr=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01),
    ),
    "adam_l2": (
        lambda p: O.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    "adamw_default_decay": (
        lambda p: O.AdamW(p, lr=0.01),
        lambda p: torch.optim.AdamW(p, lr=0.01),  # weight_decay 0.01 in both
    ),
    "adamw": (
        lambda p: O.AdamW(p, lr=0.03, weight_decay=0.2),
        lambda p: torch.optim.AdamW(p, lr=0.03, weight_decay=0.2),
    ),
}


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def run_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 3, generator=g)
        y = torch.randn(16, 1, generator=g)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_optim_step_by_step(case: str) -> None:
    ours_factory, theirs_factory = CASES[case]
    ours, theirs = tiny_net(), tiny_net()
    opt_ours, opt_theirs = ours_factory(ours.parameters()), theirs_factory(theirs.parameters())
    g = torch.Generator().manual_seed(1)
    for step in range(15):
        x, y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6, rtol=0), f"{case}: step {step + 1}"
    start = tiny_net().parameters()
    moved = max((p - q).abs().max() for p, q in zip(ours.parameters(), start, strict=True))
    assert moved > 1e-3  # the parameters really changed


def test_param_groups_and_missing_gradients_like_torch() -> None:
    ours, theirs = tiny_net(), tiny_net()
    groups = lambda m: [  # noqa: E731
        {"params": m[0].parameters(), "lr": 0.1},
        {"params": m[2].parameters()},
    ]
    opt_ours = O.Adam(groups(ours), lr=0.01)
    opt_theirs = torch.optim.Adam(groups(theirs), lr=0.01)
    frozen_before = ours[2].weight.detach().clone()
    for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        out = model[0](torch.ones(4, 3)).sum()  # only the first layer gets gradients
        out.backward()
        opt.step()
    assert torch.equal(ours[2].weight, frozen_before)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7)


def test_adam_first_step_by_hand() -> None:
    """After bias correction, m̂ = g and v̂ = g², so the first step is lr · g / (|g| + eps)."""
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([3.0, -0.001, 0.0], dtype=torch.float64)
    O.Adam([p], lr=0.1, eps=1e-8).step()
    expected = [1.0 - 0.1 * 3 / (3 + 1e-8), -2.0 + 0.1 * 0.001 / (0.001 + 1e-8), 0.5]
    assert p.tolist() == pytest.approx(expected, abs=1e-12)


def test_adamw_decays_even_without_gradient_signal() -> None:
    # with g = 0 Adam's step is 0, so only the decoupled decay moves the weight: w (1 - lr λ)
    p = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = O.AdamW([p], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        p.grad = torch.zeros(1, dtype=torch.float64)
        opt.step()
    assert p.item() == pytest.approx(2.0 * 0.95**3, abs=1e-12)


def test_momentum_accumulates_by_hand() -> None:
    # constant gradient 1, μ = 0.5: velocities 1, 1.5, 1.75; steps of lr times those
    p = torch.tensor([0.0], requires_grad=True)
    opt = O.SGD([p], lr=0.1, momentum=0.5)
    for _ in range(3):
        p.grad = torch.ones(1)
        opt.step()
    assert p.item() == pytest.approx(-0.1 * (1 + 1.5 + 1.75))


def test_state_dict_resume_gives_the_same_run() -> None:
    straight = tiny_net()
    opt = O.Adam(straight.parameters(), lr=0.01)
    run_steps(straight, opt, 10)

    first = tiny_net()
    opt1 = O.Adam(first.parameters(), lr=0.01)
    run_steps(first, opt1, 5)
    resumed = copy.deepcopy(first)
    opt2 = O.Adam(resumed.parameters(), lr=0.01)
    opt2.load_state_dict(opt1.state_dict())
    g = torch.Generator().manual_seed(1)
    for _ in range(5):  # skip the batches the first five steps used
        torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
    for _ in range(5):
        x, y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
        opt2.zero_grad()
        nn.functional.mse_loss(resumed(x), y).backward()
        opt2.step()
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7)


def test_make_optimizer_names() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(O.make_optimizer("SGD", params, 0.1), O.SGD)
    assert O.make_optimizer("momentum", params, 0.1).defaults["momentum"] == 0.9
    assert O.make_optimizer("nesterov", params, 0.1).defaults["nesterov"] is True
    assert isinstance(O.make_optimizer("adamw", params, 0.1), O.AdamW)
    assert O.make_optimizer("adam", params, 0.1, weight_decay=0.1).defaults["decoupled"] is False


def test_paths_on_rosenbrock() -> None:
    path = O.descend(O.rosenbrock, (-1.5, 2.0), "momentum", 1e-3, 2000)
    assert path.shape == (2001, 2)
    assert np.allclose(path[0], (-1.5, 2.0))
    assert np.hypot(*(path[-1] - 1.0)) < 0.05  # momentum follows the valley to (1, 1)
    sgd = O.descend(O.rosenbrock, (-1.5, 2.0), "sgd", 1e-3, 2000)
    assert np.hypot(*(sgd[-1] - 1.0)) > 0.1  # plain SGD with the same lr is still far
    assert O.beale(torch.tensor(3.0), torch.tensor(0.5)).item() == 0.0
    with pytest.raises(FloatingPointError, match="diverged"):
        O.descend(O.rosenbrock, (-1.5, 2.0), "sgd", 0.1, 50)


def test_bad_input() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    cases = [
        (lambda: O.SGD(params, lr=0.0), "lr"),
        (lambda: O.SGD(params, lr=0.1, momentum=1.0), "momentum"),
        (lambda: O.SGD(params, lr=0.1, nesterov=True), "Nesterov"),
        (lambda: O.SGD(params, lr=0.1, weight_decay=-1), "weight_decay"),
        (lambda: O.Adam(params, betas=(0.9, 1.0)), "betas"),
        (lambda: O.Adam(params, lr=math.nan), "lr"),
        (lambda: O.make_optimizer("lion", params, 0.1), "unknown optimizer"),
        (lambda: O.descend(O.rosenbrock, (0, 0), "sgd", 0.1, -1), "steps"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_cli(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "paths.png"
    assert O.main(["--steps", "50", "--optimizers", "sgd", "adamw", "--plot", str(png)]) == 0
    assert "adamw" in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        O.main(["--optimizers", "sgd", "adam", "--lrs", "0.1"])
