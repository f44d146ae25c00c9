"""Two-dimensional classification data sets, and the input features a network may be given.

Points lie in the square [-1, 1]², each labelled 0 or 1, in the spirit of the TensorFlow
playground. Each set needs a different kind of boundary:

* ``gauss``: two blobs, separable by a straight line (one neuron is enough);
* ``xor``: the sign of x1 · x2, the four quadrants of chapter 1's XOR gate;
* ``circles``: a disc inside a ring, a closed boundary;
* ``spiral``: two interleaved spirals, the hardest: the boundary winds around the centre.

A network can be helped with hand-made *features* of (x1, x2): with x1² and x2² a single
neuron separates the circles, and with x1·x2 it solves XOR. Learning such features itself is
what a hidden layer does. The sine features are sin(π x), a full period over the square.

``python -m llmcourse.datasets2d --help`` draws a data set to a PNG file.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["DATASETS", "FEATURES", "featurize", "make_dataset", "plot_dataset", "xor_gate"]

DATASETS = ("gauss", "xor", "circles", "spiral")
"""The names ``make_dataset`` understands."""

FEATURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "x1": lambda X: X[:, 0],
    "x2": lambda X: X[:, 1],
    "x1^2": lambda X: X[:, 0] ** 2,
    "x2^2": lambda X: X[:, 1] ** 2,
    "x1*x2": lambda X: X[:, 0] * X[:, 1],
    "sin(x1)": lambda X: torch.sin(math.pi * X[:, 0]),
    "sin(x2)": lambda X: torch.sin(math.pi * X[:, 1]),
}
"""Input features computed from the two coordinates, by name."""


def make_dataset(
    name: str, n: int = 400, noise: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points ``X`` of shape ``(n, 2)`` and labels ``y`` of shape ``(n,)``, both float32.

    Half the points (``n // 2``, the rest go to class 1) belong to each class. ``noise`` is the
    standard deviation of Gaussian jitter added to the coordinates (as a fraction of the
    square's half-width); for ``xor`` and ``circles`` it blurs the boundary, so some labels no
    longer match their position. The same ``seed`` gives the same points.
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}")
    if n < 2:
        raise ValueError(f"a data set needs at least 2 points (one per class), got n={n}")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    g = torch.Generator().manual_seed(seed)
    n0 = n // 2
    y = torch.cat([torch.zeros(n0), torch.ones(n - n0)])
    if key == "gauss":
        centre = torch.where(y[:, None] == 1, torch.tensor([0.5, 0.5]), torch.tensor([-0.5, -0.5]))
        X = centre + 0.2 * torch.randn(n, 2, generator=g)
    elif key == "xor":
        X = torch.rand(n, 2, generator=g) * 0.9 + 0.05  # keep a small gap at the axes
        signs = torch.ones(n, 2)
        flip = torch.rand(n, generator=g) < 0.5  # quadrant: (+, +) or (-, -) for class 0
        signs[flip] = -1.0
        signs[:, 1] = torch.where(y == 1, -signs[:, 0], signs[:, 0])
        X = X * signs
    elif key == "circles":
        radius = torch.where(
            y == 1, 0.45 * torch.rand(n, generator=g), 0.65 + 0.3 * torch.rand(n, generator=g)
        )
        angle = 2 * math.pi * torch.rand(n, generator=g)
        X = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    else:  # spiral: radius grows with the angle; class 1 is class 0 turned by half a turn
        t = torch.rand(n, generator=g)
        radius = 0.05 + 0.9 * t
        angle = 3.5 * math.pi * t + math.pi * y
        X = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    if noise:
        X = X + noise * torch.randn(n, 2, generator=g)
    order = torch.randperm(n, generator=g)
    return X[order].float(), y[order].float()


def xor_gate() -> tuple[torch.Tensor, torch.Tensor]:
    """The four inputs of the XOR gate, (0, 0), (0, 1), (1, 0), (1, 1), and their labels."""
    X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return X, torch.tensor([0.0, 1.0, 1.0, 0.0])


def featurize(X: torch.Tensor, features: Sequence[str] = ("x1", "x2")) -> torch.Tensor:
    """The named ``FEATURES`` of each point of ``X`` ``(n, 2)``, as an ``(n, len(features))``."""
    if not isinstance(X, torch.Tensor) or X.dim() != 2 or X.shape[1] != 2:
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise ValueError(f"X must be a tensor of 2-D points, shape (n, 2), got {shape}")
    if not features:
        raise ValueError("choose at least one feature")
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}: expected some of {list(FEATURES)}")
    return torch.stack([FEATURES[f](X) for f in features], dim=1)


def plot_dataset(
    X: torch.Tensor, y: torch.Tensor, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """A scatter plot of the points, class 0 in orange and class 1 in blue."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.6, 3.6), layout="constrained")
    else:
        fig = ax.figure
    colors = ["#f28e2b" if label == 0 else "#4e79a7" for label in y.tolist()]
    size = 12 if len(colors) > 100 else 28  # small data sets get bigger dots
    ax.scatter(X[:, 0], X[:, 1], c=colors, s=size, edgecolors="white", linewidths=0.5)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_aspect("equal")
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
    if title:
        ax.set_title(title)
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.datasets2d``: draw a data set to a PNG file."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.datasets2d",
        description="Draw one of the two-dimensional classification data sets.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="spiral")
    parser.add_argument("-n", type=int, default=400, help="number of points")
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, required=True, help="the PNG file to write")
    args = parser.parse_args(argv)
    try:
        X, y = make_dataset(args.dataset, args.n, args.noise, args.seed)
    except ValueError as err:
        parser.error(str(err))
    from llmcourse.plots import close, save_figure

    fig = plot_dataset(X, y, title=args.dataset)
    save_figure(fig, args.plot)
    close(fig)
    print(f"{args.n} points of {args.dataset!r} drawn to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
