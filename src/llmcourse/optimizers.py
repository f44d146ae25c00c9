"""Optimizers written out: SGD, momentum, Adam and AdamW, step by step.

Gradient descent moves every parameter against its gradient g = ∂L/∂θ. The optimizers differ
only in *how far* and *in which direction* they move, given the gradients seen so far.

SGD with L2 weight decay λ and momentum μ (PyTorch's convention, no dampening)::

    d ← g + λ θ                  (the gradient of L + λ/2 ‖θ‖²)
    v ← μ v + d                  (v = d on the first step; μ = 0 is plain SGD)
    θ ← θ - η v                  (Nesterov: θ ← θ - η (d + μ v))

Momentum is a running sum of past gradients: along a direction where the gradients keep their
sign the steps grow up to 1 / (1 - μ) times, while directions where they alternate cancel out.

Adam keeps, for every parameter, running averages of the gradient and of its square, and
divides one by the square root of the other, so each parameter gets its own step size::

    m ← β1 m + (1 - β1) g        v ← β2 v + (1 - β2) g²
    m̂ = m / (1 - β1ᵗ)            v̂ = v / (1 - β2ᵗ)          (bias correction, t = 1, 2, ...)
    θ ← θ - η m̂ / (√v̂ + ε)

The bias correction undoes the pull towards the zeros that m and v start from. ``Adam`` applies
weight decay the L2 way (adding λθ to g before the averages, so Adam's scaling weakens it);
``AdamW`` *decouples* it, shrinking the parameters directly, θ ← θ (1 - η λ), before the Adam
step. AdamW is the optimizer of nearly every modern LLM.

The classes are ``torch.optim.Optimizer`` subclasses, so they plug into ``llmcourse.training``
(and checkpoints) like PyTorch's own; the tests check them against ``torch.optim`` step by step.
``descend`` runs any of them on a function of two variables, to draw the paths they take:
``python -m llmcourse.optimizers --help``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch.optim import Optimizer

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "beale",
    "descend",
    "make_optimizer",
    "plot_paths",
    "rosenbrock",
]

Params = Iterable[torch.Tensor] | Iterable[dict]


def _closure_loss(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    """torch.optim's contract: ``step(closure)`` first re-evaluates the loss, gradients on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check(name: str, value: float, low: float, high: float = math.inf, *, closed: bool = True):
    ok = (low <= value if closed else low < value) and value < high and math.isfinite(value)
    if not ok:
        bound = f"[{low:g}, {high:g})" if closed else f"({low:g}, {high:g})"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    ``lr`` is η, ``momentum`` μ (0 turns it off), ``weight_decay`` λ. See the module docstring
    for the update; it matches ``torch.optim.SGD`` with ``dampening=0``.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        _check("lr", lr, 0.0, closed=False)
        _check("momentum", momentum, 0.0, 1.0)
        _check("weight_decay", weight_decay, 0.0)
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults | {"nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; returns ``closure()`` if one is given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad + wd * p if wd else p.grad.clone()
                if mu:
                    state = self.state[p]
                    if "velocity" not in state:
                        state["velocity"] = d.clone()
                    else:
                        state["velocity"].mul_(mu).add_(d)
                    v = state["velocity"]
                    d = d + mu * v if group["nesterov"] else v
                p.sub_(lr * d)
        return loss


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction; ``weight_decay`` is L2 (coupled).

    ``betas`` = (β1, β2) are the decay rates of the running means of g and g², ``eps`` keeps
    the division finite. With ``decoupled=True`` the decay is AdamW's: see ``AdamW``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        _check("lr", lr, 0.0, closed=False)
        _check("betas[0]", betas[0], 0.0, 1.0)
        _check("betas[1]", betas[1], 0.0, 1.0)
        _check("eps", eps, 0.0)
        _check("weight_decay", weight_decay, 0.0)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults | {"decoupled": decoupled})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; returns ``closure()`` if one is given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd and group["decoupled"]:
                    p.mul_(1.0 - lr * wd)
                elif wd:
                    g = g + wd * p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["m"], state["v"]
                m.mul_(b1).add_((1.0 - b1) * g)
                v.mul_(b2).add_((1.0 - b2) * g * g)
                m_hat = m / (1.0 - b1**t)
                v_hat = v / (1.0 - b2**t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): θ ← θ (1 - ηλ) first.

    The default λ = 0.01 is PyTorch's. Unlike L2 decay, the shrinking does not pass through
    Adam's per-parameter scaling, so every weight decays at the same relative rate.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, decoupled=True)


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
"""The names ``make_optimizer`` understands."""


def make_optimizer(name: str, params: Params, lr: float, weight_decay: float = 0.0) -> Optimizer:
    """One of ``OPTIMIZERS`` by name: momentum and Nesterov use μ = 0.9, Adam's betas default."""
    key = name.strip().lower()
    if key == "sgd":
        return SGD(params, lr, weight_decay=weight_decay)
    if key in ("momentum", "nesterov"):
        return SGD(params, lr, momentum=0.9, weight_decay=weight_decay, nesterov=key == "nesterov")
    if key == "adam":
        return Adam(params, lr, weight_decay=weight_decay)
    if key == "adamw":
        return AdamW(params, lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


# --------------------------------------------------------------------------------------------
# Paths on two-dimensional test functions
# --------------------------------------------------------------------------------------------


def rosenbrock(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - x)² + 100 (y - x²)²: a long curved valley, minimum 0 at (1, 1)."""
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Beale's function: flat plateaus and steep walls, minimum 0 at (3, 0.5)."""
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


FUNCTIONS: dict[str, tuple[Callable[..., torch.Tensor], tuple[float, float], tuple[float, float]]]
FUNCTIONS = {
    "rosenbrock": (rosenbrock, (-1.5, 2.0), (1.0, 1.0)),
    "beale": (beale, (1.0, 1.5), (3.0, 0.5)),
}
"""Test functions by name: (function, a starting point, the minimum)."""


def descend(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start: tuple[float, float],
    optimizer: str,
    lr: float,
    steps: int,
) -> np.ndarray:
    """Minimize ``fn(x, y)`` from ``start`` with a named optimizer; return the ``(steps + 1, 2)``
    array of points visited (in float64, so the paths are exact enough to compare)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    point = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(optimizer, [point], lr)
    path = [point.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        value = fn(point[0], point[1])
        if not torch.isfinite(value):
            raise FloatingPointError(f"{optimizer} with lr={lr:g} diverged (f = {value.item()})")
        value.backward()
        opt.step()
        path.append(point.detach().clone())
    return torch.stack(path).numpy()


def plot_paths(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    paths: dict[str, np.ndarray],
    *,
    xlim: tuple[float, float] = (-2.0, 2.0),
    ylim: tuple[float, float] = (-1.0, 3.0),
    minimum: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Contours of ``fn`` (log-spaced) with one line per optimizer path."""
    xs = torch.linspace(*xlim, 300, dtype=torch.float64)
    ys = torch.linspace(*ylim, 300, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = fn(gx, gy).numpy()
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    levels = np.logspace(np.log10(max(z.min(), 1e-3)), np.log10(z.max()), 25)
    ax.contour(gx.numpy(), gy.numpy(), z, levels=levels, colors="0.7", linewidths=0.6)
    widths = np.linspace(3.0, 1.2, max(len(paths), 1))
    for (label, path), width in zip(paths.items(), widths, strict=False):
        (line,) = ax.plot(path[:, 0], path[:, 1], "-", linewidth=width, alpha=0.85, label=label)
        ax.plot(*path[-1], "o", color=line.get_color(), markersize=6)
    if minimum is not None:
        ax.plot(*minimum, "k*", markersize=12, label="minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m llmcourse.optimizers``."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.optimizers",
        description="Run SGD, momentum, Nesterov, Adam and AdamW (written from scratch) on a "
        "two-variable test function and report where each ends; optionally plot the paths.",
    )
    parser.add_argument("--function", choices=sorted(FUNCTIONS), default="rosenbrock")
    parser.add_argument(
        "--optimizers", nargs="+", choices=OPTIMIZERS, default=["sgd", "momentum", "adam"]
    )
    parser.add_argument("--lrs", nargs="+", type=float, help="one learning rate per optimizer")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--plot", type=Path, help="write the paths as a PNG file")
    return parser


DEFAULT_LRS = {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adam": 5e-2, "adamw": 5e-2}
"""Learning rates that work on the test functions (Adam's steps are about lr in size)."""


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the optimizers, print the end points; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    lrs = args.lrs or [DEFAULT_LRS[name] for name in args.optimizers]
    if len(lrs) != len(args.optimizers):
        parser.error(f"--lrs needs {len(args.optimizers)} values, one per optimizer")
    if args.steps < 0:
        parser.error("--steps must be >= 0")
    fn, start, minimum = FUNCTIONS[args.function]
    paths = {}
    for name, lr in zip(args.optimizers, lrs, strict=True):
        path = descend(fn, start, name, lr, args.steps)
        end = torch.tensor(path[-1])
        value = fn(end[0], end[1]).item()
        distance = float(np.hypot(*(path[-1] - np.array(minimum))))
        print(
            f"{name:>9} lr={lr:<8g} end ({end[0]:+.4f}, {end[1]:+.4f})  f = {value:.3e}  "
            f"distance to the minimum {distance:.3e}"
        )
        paths[f"{name} (lr {lr:g})"] = path
    if args.plot:
        from llmcourse.plots import close, save_figure

        lo = np.min([p.min(axis=0) for p in paths.values()] + [np.array(minimum)], axis=0)
        hi = np.max([p.max(axis=0) for p in paths.values()] + [np.array(minimum)], axis=0)
        pad = 0.2 * (hi - lo) + 0.2
        fig = plot_paths(
            fn, paths, xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]),
            minimum=minimum, title=f"{args.function}: {args.steps} steps",
        )  # fmt: skip
        save_figure(fig, args.plot)
        close(fig)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
