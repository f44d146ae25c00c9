"""The perceptron: a weighted vote followed by a threshold, and the rule that learns the weights.

A perceptron reads d inputs x_1, ..., x_d (here mostly 0 or 1), multiplies each by a weight,
adds the products and *fires* (outputs 1) when the total is greater than a threshold θ:

    y_hat = 1  if  w_1 x_1 + ... + w_d x_d > θ,   else 0.

Moving the threshold to the left-hand side gives the form used in the rest of the course: a
*bias* b = -θ and the Heaviside step function H,

    y_hat = H(w · x + b),    H(z) = 1 if z > 0, else 0.

Mind the convention H(0) = 0: a sum exactly equal to the threshold does not fire.

Learning means finding w and b from examples (x, y). The perceptron rule visits the examples
one at a time and, with a learning rate η > 0, nudges the weights by the error y - y_hat:

    w <- w + η (y - y_hat) x,    b <- b + η (y - y_hat).

The module holds

* the movie decision (weather, price and partner with weights 8, 4, 4 and threshold 8):
  ``movie_decision``, ``movie_perceptron``, ``movie_table``, ``format_movie_table``;
* ``Perceptron`` and its learning rule: ``Perceptron.update``, ``train_epoch``,
  ``train_perceptron``, and the mistake bound of the convergence theorem, ``mistake_bound``;
* the two-input logic gates AND, OR, NAND and XOR (``gate_dataset``), hand-set perceptrons for
  the first three (``gate_perceptron``) and a two-layer network of perceptrons computing XOR,
  which no single perceptron can (``xor_network``, ``network_activations``,
  ``network_predict``);
* figures: ``plot_decision_boundary`` and ``plot_mistakes``;
* a command line: ``python -m llmcourse.perceptron --help``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from llmcourse.plots import close, plot_curves, save_figure

TensorLike = torch.Tensor | Sequence[float] | Sequence[Sequence[float]]

MOVIE_FACTORS = ("weather", "price", "partner")
"""The three yes/no questions of the movie decision: is the weekend sunny, is the ticket
affordable, and is there someone to go with?"""
MOVIE_WEIGHTS = (8.0, 4.0, 4.0)
"""How much each factor counts: good weather matters most."""
MOVIE_THRESHOLD = 8.0
"""The weighted sum must be greater than this for the answer "go"."""

GATES: dict[str, tuple[int, int, int, int]] = {
    "and": (0, 0, 0, 1),
    "or": (0, 1, 1, 1),
    "nand": (1, 1, 1, 0),
    "xor": (0, 1, 1, 0),
}
"""Truth tables of the two-input gates, for the inputs (0, 0), (0, 1), (1, 0), (1, 1)."""


# --------------------------------------------------------------------------------------------
# Checking inputs
# --------------------------------------------------------------------------------------------


def _as_matrix(X: TensorLike, name: str = "X") -> torch.Tensor:
    """``X`` as a float tensor of shape ``(n, d)`` with ``n, d >= 1`` and finite entries."""
    try:
        X = torch.as_tensor(X, dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a matrix of numbers: {err}") from None
    if X.dim() != 2:
        raise ValueError(f"{name} must be 2-D (samples x inputs), got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)})")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _as_labels(y: TensorLike, n: int) -> torch.Tensor:
    """``y`` as a float tensor of ``n`` labels, each 0 or 1."""
    try:
        y = torch.as_tensor(y, dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"y must be a vector of 0/1 labels: {err}") from None
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) to match X, got {tuple(y.shape)}")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError(f"labels must be 0 or 1, got the values {sorted(set(y.tolist()))}")
    return y


# --------------------------------------------------------------------------------------------
# The perceptron
# --------------------------------------------------------------------------------------------


def step(z: torch.Tensor | float) -> torch.Tensor:
    """The Heaviside step function: 1.0 where ``z > 0`` and 0.0 where ``z <= 0``.

    Zero maps to 0 so that a perceptron fires only when its weighted sum is strictly greater
    than the threshold, as in the movie example.
    """
    z = torch.as_tensor(z, dtype=torch.float32)
    return (z > 0).to(torch.float32)


@dataclass
class Perceptron:
    """One perceptron: a weight per input and a bias; it outputs y_hat = H(w · x + b).

    ``weights`` is stored as a 1-D float tensor and ``bias`` as a Python float. A threshold θ
    ("fire when the weighted sum is greater than θ") is the bias b = -θ: see ``from_threshold``.
    """

    weights: torch.Tensor
    bias: float = 0.0

    def __post_init__(self) -> None:
        weights = torch.as_tensor(self.weights, dtype=torch.float32)
        if weights.dim() != 1 or weights.numel() == 0:
            raise ValueError(
                f"weights must be a non-empty 1-D vector, got shape {tuple(weights.shape)}"
            )
        if not torch.isfinite(weights).all() or not math.isfinite(float(self.bias)):
            raise ValueError("weights and bias must be finite numbers")
        self.weights = weights.clone()
        self.bias = float(self.bias)

    @classmethod
    def zeros(cls, n_inputs: int) -> Perceptron:
        """A perceptron with all weights and the bias at zero (it outputs 0 everywhere)."""
        if n_inputs < 1:
            raise ValueError(f"a perceptron needs at least one input, got {n_inputs}")
        return cls(torch.zeros(n_inputs), 0.0)

    @classmethod
    def from_threshold(cls, weights: TensorLike, threshold: float) -> Perceptron:
        """The perceptron that fires when ``sum(weights * x) > threshold``: bias = -threshold."""
        return cls(torch.as_tensor(weights, dtype=torch.float32), -float(threshold))

    @property
    def n_inputs(self) -> int:
        """How many inputs the perceptron reads."""
        return self.weights.numel()

    def copy(self) -> Perceptron:
        """An independent copy (training updates the weights in place)."""
        return Perceptron(self.weights.clone(), self.bias)

    def _inputs(self, X: TensorLike) -> tuple[torch.Tensor, bool]:
        """``X`` as an ``(n, d)`` matrix, and whether it was a single sample of shape ``(d,)``."""
        X = torch.as_tensor(X, dtype=torch.float32)
        single = X.dim() == 1
        X = _as_matrix(X.unsqueeze(0) if single else X)
        if X.shape[1] != self.n_inputs:
            raise ValueError(
                f"the perceptron has {self.n_inputs} inputs, but the samples have {X.shape[1]}"
            )
        return X, single

    def weighted_sum(self, X: TensorLike) -> torch.Tensor:
        """z = w · x + b for one sample of shape ``(d,)`` or each row of a batch ``(n, d)``."""
        X, single = self._inputs(X)
        z = X @ self.weights + self.bias
        return z[0] if single else z

    def predict(self, X: TensorLike) -> torch.Tensor:
        """The outputs H(z), each 0.0 or 1.0: a scalar for one sample, ``(n,)`` for a batch."""
        return step(self.weighted_sum(X))

    def update(self, x: TensorLike, y: float, lr: float = 1.0) -> float:
        """Apply the perceptron rule to one sample (in place) and return the error y - y_hat.

            w <- w + lr (y - y_hat) x,    b <- b + lr (y - y_hat)

        The error is 0 when the prediction is right (nothing changes), +1 when the perceptron
        should have fired but did not (the weights move towards ``x``), and -1 when it fired but
        should not have (they move away from ``x``).
        """
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() != 1:
            raise ValueError(f"update takes one sample of shape (d,), got {tuple(x.shape)}")
        if y not in (0, 1):
            raise ValueError(f"the label must be 0 or 1, got {y!r}")
        _check_lr(lr)
        error = float(y) - float(self.predict(x))
        if error != 0.0:
            self.weights = self.weights + lr * error * x
            self.bias = self.bias + lr * error
        return error


def _check_lr(lr: float) -> None:
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"the learning rate must be a positive number, got {lr!r}")


def count_errors(
    model: Perceptron | Sequence[Sequence[Perceptron]], X: TensorLike, y: TensorLike
) -> int:
    """How many samples ``model`` (a perceptron or a network) classifies wrongly."""
    X = _as_matrix(X)
    y = _as_labels(y, X.shape[0])
    return int((_predict_fn(model)(X) != y).sum())


# --------------------------------------------------------------------------------------------
# The movie decision
# --------------------------------------------------------------------------------------------


class MovieRow(NamedTuple):
    """One line of the movie table: the three answers, the weighted sum and the decision."""

    weather: int
    price: int
    partner: int
    weighted_sum: float
    decision: int


def movie_decision(
    weather: int | bool,
    price: int | bool,
    partner: int | bool,
    weights: Sequence[float] = MOVIE_WEIGHTS,
    threshold: float = MOVIE_THRESHOLD,
) -> int:
    """Go to the movie (1) or not (0): 1 when ``weights . (weather, price, partner) > threshold``.

    Each input is 1 (yes) or 0 (no). With the default weights 8, 4, 4 and threshold 8, good
    weather and an affordable ticket give 8 + 4 = 12 > 8 (go), while good weather alone gives
    8, which is not greater than 8 (stay home).
    """
    inputs = (weather, price, partner)
    for name, value in zip(MOVIE_FACTORS, inputs, strict=True):
        if value not in (0, 1):
            raise ValueError(f"{name} must be 0 (no) or 1 (yes), got {value!r}")
    if len(weights) != len(MOVIE_FACTORS):
        raise ValueError(f"the movie decision takes 3 weights, got {len(weights)}")
    total = sum(w * x for w, x in zip(weights, inputs, strict=True))
    return int(total > threshold)


def movie_perceptron(
    weights: Sequence[float] = MOVIE_WEIGHTS, threshold: float = MOVIE_THRESHOLD
) -> Perceptron:
    """The movie decision as a ``Perceptron``: the same weights, and bias = -threshold."""
    return Perceptron.from_threshold(weights, threshold)


def movie_table(
    weights: Sequence[float] = MOVIE_WEIGHTS, threshold: float = MOVIE_THRESHOLD
) -> list[MovieRow]:
    """All 8 combinations of the three yes/no inputs with their weighted sums and decisions."""
    rows = []
    for weather, price, partner in product((0, 1), repeat=3):
        total = sum(w * x for w, x in zip(weights, (weather, price, partner), strict=True))
        decision = movie_decision(weather, price, partner, weights, threshold)
        rows.append(MovieRow(weather, price, partner, float(total), decision))
    return rows


def format_movie_table(rows: Sequence[MovieRow], threshold: float = MOVIE_THRESHOLD) -> str:
    """The rows of ``movie_table`` as a Markdown pipe table (also readable as plain text)."""
    lines = [
        f"| weather | price | partner | weighted sum | > {threshold:g}? | decision |",
        "|:-:|:-:|:-:|--:|:-:|:-:|",
    ]
    for row in rows:
        verdict = "go" if row.decision else "stay home"
        lines.append(
            f"| {row.weather} | {row.price} | {row.partner} | {row.weighted_sum:g} "
            f"| {'yes' if row.weighted_sum > threshold else 'no'} | {verdict} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Learning: the perceptron rule
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What ``train_perceptron`` returns.

    ``mistakes[k]`` is the number of samples misclassified (hence updates made) during epoch
    ``k + 1``; ``history[k]`` is a copy of the perceptron at the end of that epoch. Training
    stops after the first epoch with no mistakes, in which case ``converged`` is true and the
    perceptron classifies every training sample correctly.
    """

    perceptron: Perceptron
    mistakes: list[int] = field(default_factory=list)
    history: list[Perceptron] = field(default_factory=list)
    converged: bool = False

    @property
    def epochs(self) -> int:
        """How many epochs ran."""
        return len(self.mistakes)


def train_epoch(
    perceptron: Perceptron,
    X: TensorLike,
    y: TensorLike,
    lr: float = 1.0,
    order: Sequence[int] | None = None,
) -> int:
    """One pass of the perceptron rule over the samples; updates ``perceptron`` in place.

    The samples are visited in ``order`` (default: as given). Each one is predicted with the
    weights *as they are at that moment*, so an update made for one sample already affects the
    next. Returns the number of mistakes made during the pass.
    """
    X = _as_matrix(X)
    y = _as_labels(y, X.shape[0])
    if X.shape[1] != perceptron.n_inputs:
        raise ValueError(f"the perceptron has {perceptron.n_inputs} inputs, X has {X.shape[1]}")
    indices = range(X.shape[0]) if order is None else order
    return sum(perceptron.update(X[i], float(y[i]), lr) != 0.0 for i in indices)


def train_perceptron(
    X: TensorLike,
    y: TensorLike,
    *,
    lr: float = 1.0,
    epochs: int = 100,
    seed: int | None = None,
) -> TrainResult:
    """Train a perceptron with the perceptron rule until an epoch has no mistakes.

    With ``seed=None`` training starts from zero weights and visits the samples in the given
    order every epoch: a deterministic run that can be traced by hand. With a seed, the initial
    weights and bias are drawn from a standard normal distribution and the order is shuffled
    every epoch, both by a ``torch.Generator`` seeded with ``seed``.

    At most ``epochs`` epochs run. On linearly separable data the perceptron convergence
    theorem guarantees that the mistakes stop (see ``mistake_bound``); on data that no line (or
    hyperplane) separates, such as XOR, they never do and ``converged`` stays false.
    """
    X = _as_matrix(X)
    y = _as_labels(y, X.shape[0])
    _check_lr(lr)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    n, d = X.shape
    if seed is None:
        generator = None
        perceptron = Perceptron.zeros(d)
    else:
        generator = torch.Generator().manual_seed(seed)
        init = torch.randn(d + 1, generator=generator)
        perceptron = Perceptron(init[:d], float(init[d]))
    result = TrainResult(perceptron)
    for _ in range(epochs):
        order = None if generator is None else torch.randperm(n, generator=generator).tolist()
        mistakes = train_epoch(perceptron, X, y, lr, order)
        result.mistakes.append(mistakes)
        result.history.append(perceptron.copy())
        if mistakes == 0:
            result.converged = True
            break
    return result


def mistake_bound(X: TensorLike, y: TensorLike, weights: TensorLike, bias: float) -> float:
    """The bound (R / γ)² of the perceptron convergence theorem on the total number of mistakes.

    Append a constant 1 to every input, x' = (x, 1), so that the bias is one more weight, and
    write the labels as signs s = 2y - 1 in {-1, +1}. Suppose some v = (weights, bias)
    separates the data: s_i (v · x'_i) > 0 for every sample i. With its margin and the data's
    radius

        γ = min_i s_i (v · x'_i) / ||v||,    R = max_i ||x'_i||,

    the perceptron rule started from zero weights makes at most (R / γ)² mistakes in total,
    over all epochs, whatever the learning rate and the order of the samples. Any separator
    gives a valid bound; one with a wider margin gives a tighter one.

    Raises ``ValueError`` if ``(weights, bias)`` does not separate the data with a positive margin.
    """
    X = _as_matrix(X)
    y = _as_labels(y, X.shape[0])
    w = torch.cat([torch.as_tensor(weights, dtype=torch.float32).flatten(), torch.tensor([bias])])
    if w.numel() != X.shape[1] + 1:
        raise ValueError(f"need {X.shape[1]} weights for inputs of size {X.shape[1]}")
    X1 = torch.cat([X, torch.ones(X.shape[0], 1)], dim=1)
    margin = float(((2 * y - 1) * (X1 @ w)).min() / w.norm())
    if margin <= 0:
        raise ValueError("the given weights do not separate the data (margin <= 0)")
    radius = float(X1.norm(dim=1).max())
    return (radius / margin) ** 2


# --------------------------------------------------------------------------------------------
# Logic gates, and XOR with a hidden layer
# --------------------------------------------------------------------------------------------


def gate_dataset(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The four inputs ``(4, 2)`` and the outputs ``(4,)`` of the gate ``name`` (see ``GATES``)."""
    key = name.lower()
    if key not in GATES:
        raise ValueError(f"unknown gate {name!r}: expected one of {', '.join(GATES)}")
    X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return X, torch.tensor(GATES[key], dtype=torch.float32)


_HAND_SET = {
    "and": ((1.0, 1.0), -1.5),  # fires only when both inputs are on: 1 + 1 > 1.5
    "or": ((1.0, 1.0), -0.5),  # fires when at least one input is on: 1 > 0.5
    "nand": ((-1.0, -1.0), 1.5),  # the opposite of AND: -2 + 1.5 < 0, anything else > 0
}


def gate_perceptron(name: str) -> Perceptron:
    """A hand-set perceptron computing AND, OR or NAND. XOR has none: see ``xor_network``."""
    key = name.lower()
    if key == "xor":
        raise ValueError("no single perceptron computes XOR: use xor_network() instead")
    if key not in _HAND_SET:
        raise ValueError(f"unknown gate {name!r}: expected one of {', '.join(_HAND_SET)}")
    weights, bias = _HAND_SET[key]
    return Perceptron(torch.tensor(weights), bias)


def xor_network() -> list[list[Perceptron]]:
    """A two-layer network of hand-set perceptrons that computes XOR = AND(OR, NAND).

    The input layer is the two inputs; the hidden layer holds an OR and a NAND perceptron, both
    reading the inputs; the output layer is one AND perceptron reading the two hidden outputs.
    XOR is "at least one input on" (OR) and "not both on" (NAND).
    """
    return [
        [gate_perceptron("or"), gate_perceptron("nand")],
        [gate_perceptron("and")],
    ]


def network_activations(
    layers: Sequence[Sequence[Perceptron]], X: TensorLike
) -> list[torch.Tensor]:
    """The outputs of every layer, starting with the input ``X`` itself.

    A layer is a list of perceptrons that all read the previous layer's outputs; its output is
    the matrix ``(n, len(layer))`` of their predictions side by side. The result has
    ``len(layers) + 1`` matrices: the input layer, the hidden layers and the output layer.
    """
    if len(layers) == 0 or any(len(layer) == 0 for layer in layers):
        raise ValueError("a network needs at least one layer, and every layer a perceptron")
    activations = [_as_matrix(X)]
    for depth, layer in enumerate(layers, start=1):
        previous = activations[-1]
        for unit in layer:
            if unit.n_inputs != previous.shape[1]:
                raise ValueError(
                    f"layer {depth} has a perceptron with {unit.n_inputs} inputs, "
                    f"but the layer before it has {previous.shape[1]} outputs"
                )
        activations.append(torch.stack([unit.predict(previous) for unit in layer], dim=1))
    return activations


def network_predict(layers: Sequence[Sequence[Perceptron]], X: TensorLike) -> torch.Tensor:
    """The output layer's values for each sample (see ``network_activations``).

    The shape is ``(n,)`` when the output layer has a single perceptron, as for XOR, and
    ``(n, k)`` when it has ``k > 1``.
    """
    out = network_activations(layers, X)[-1]
    return out[:, 0] if out.shape[1] == 1 else out


def _predict_fn(
    model: Perceptron | Sequence[Sequence[Perceptron]],
) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(model, Perceptron):
        return model.predict
    return lambda X: network_predict(model, X)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

_REGION_COLOURS = ListedColormap(["#dce6f2", "#fbe3c8"])  # predicted 0, predicted 1


def plot_decision_boundary(
    model: Perceptron | Sequence[Sequence[Perceptron]],
    X: TensorLike,
    y: TensorLike,
    *,
    title: str | None = None,
    xlabel: str = "$x_1$",
    ylabel: str = "$x_2$",
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Draw two-input samples over the regions where ``model`` outputs 0 (blue) and 1 (orange).

    ``model`` is a ``Perceptron`` (then its boundary line w_1 x_1 + w_2 x_2 + b = 0 is drawn
    too) or a network (a list of layers, see ``network_predict``).
    Samples labelled 1 are filled circles, samples labelled 0 are crosses, and a sample the
    model gets wrong is ringed in red. Draws into ``ax`` when given, otherwise into a new figure;
    returns the figure and writes it as PNG when ``path`` is given.
    """
    X = _as_matrix(X)
    y = _as_labels(y, X.shape[0])
    if X.shape[1] != 2:
        raise ValueError(f"decision boundaries are drawn for two inputs, got {X.shape[1]}")
    predict = _predict_fn(model)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    else:
        fig = ax.figure
    lo, hi = X.min(0).values - 0.5, X.max(0).values + 0.5
    g1, g2 = torch.meshgrid(
        torch.linspace(float(lo[0]), float(hi[0]), 301),
        torch.linspace(float(lo[1]), float(hi[1]), 301),
        indexing="xy",
    )
    regions = predict(torch.stack([g1.flatten(), g2.flatten()], dim=1)).reshape(g1.shape)
    ax.contourf(g1, g2, regions, levels=[-0.5, 0.5, 1.5], cmap=_REGION_COLOURS)
    if isinstance(model, Perceptron):
        _draw_line(ax, model, (float(lo[0]), float(hi[0])))
    ones, zeros = y == 1, y == 0
    ax.scatter(X[ones, 0], X[ones, 1], s=90, c="#d9480f", label="label 1", zorder=3)
    ax.scatter(X[zeros, 0], X[zeros, 1], s=90, c="#1c4e80", marker="X", label="label 0", zorder=3)
    wrong = predict(X) != y
    if wrong.any():
        ax.scatter(
            X[wrong, 0],
            X[wrong, 1],
            s=360,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label="misclassified",
            zorder=4,
        )
    ax.set(xlim=(float(lo[0]), float(hi[0])), ylim=(float(lo[1]), float(hi[1])))
    ax.set(xlabel=xlabel, ylabel=ylabel, aspect="equal")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    if title:
        ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize="small")
    if path is not None:
        save_figure(fig, path)
    return fig


def _draw_line(ax: Axes, perceptron: Perceptron, x1_range: tuple[float, float]) -> None:
    """The line ``w1 x1 + w2 x2 + b = 0`` (nothing when both weights are zero)."""
    w1, w2 = perceptron.weights.tolist()
    b = perceptron.bias
    if w2 != 0:
        x1 = torch.linspace(*x1_range, 2)
        ax.plot(x1, -(w1 * x1 + b) / w2, color="black", linewidth=1.5)
    elif w1 != 0:
        ax.axvline(-b / w1, color="black", linewidth=1.5)


def plot_mistakes(histories: Mapping[str, Sequence[int]], path: str | Path | None = None) -> Figure:
    """Mistakes per epoch (epochs counted from 1), one line per entry of ``histories``."""
    curves = {
        name: (range(1, len(mistakes) + 1), list(mistakes)) for name, mistakes in histories.items()
    }
    fig = plot_curves(curves, xlabel="epoch", ylabel="mistakes in the epoch", path=None)
    ax = fig.axes[0]
    for line in ax.get_lines():
        line.set_marker("o")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=-0.2)
    if len(histories) == 1:
        ax.set_title(f"{next(iter(histories))}: mistakes per epoch")
    if path is not None:
        save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


_EXAMPLES = """examples:
  python -m llmcourse.perceptron --movie                 the table of all 8 decisions
  python -m llmcourse.perceptron --movie --threshold 4   a keener moviegoer
  python -m llmcourse.perceptron --gate and --plot and.png
  python -m llmcourse.perceptron --gate xor --epochs 20  never converges
  python -m llmcourse.perceptron --xor-network --json
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.perceptron",
        description="The perceptron: the movie decision, learning logic gates with the "
        "perceptron rule, and XOR with a hidden layer.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--movie", action="store_true", help="print the movie decision table")
    task.add_argument("--gate", choices=sorted(GATES), help="train a perceptron on a logic gate")
    task.add_argument(
        "--xor-network", action="store_true", help="run the two-layer XOR network of perceptrons"
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs=3,
        default=list(MOVIE_WEIGHTS),
        metavar=("WEATHER", "PRICE", "PARTNER"),
        help="movie weights (default: 8 4 4)",
    )
    parser.add_argument(
        "--threshold", type=float, default=MOVIE_THRESHOLD, help="movie threshold (default: 8)"
    )
    parser.add_argument("--lr", type=float, default=1.0, help="learning rate (default: 1)")
    parser.add_argument("--epochs", type=int, default=100, help="most epochs (default: 100)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random initial weights and shuffled order from this seed "
        "(default: zero weights, fixed order)",
    )
    parser.add_argument("--plot", metavar="PATH", help="with --gate: write the boundary as PNG")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


def _run_movie(args: argparse.Namespace) -> dict:
    rows = movie_table(args.weights, args.threshold)
    if not args.json:
        print(f"weights {args.weights}, threshold {args.threshold:g}")
        print(format_movie_table(rows, args.threshold))
    return {
        "weights": args.weights,
        "threshold": args.threshold,
        "rows": [row._asdict() for row in rows],
    }


def _run_gate(args: argparse.Namespace) -> dict:
    X, y = gate_dataset(args.gate)
    result = train_perceptron(X, y, lr=args.lr, epochs=args.epochs, seed=args.seed)
    p = result.perceptron
    predictions = p.predict(X)
    if args.plot:
        status = "converged" if result.converged else "did not converge"
        title = f"{args.gate.upper()} ({status} after {result.epochs} epochs)"
        close(plot_decision_boundary(p, X, y, title=title, path=args.plot))
    report = {
        "gate": args.gate,
        "lr": args.lr,
        "seed": args.seed,
        "epochs_run": result.epochs,
        "mistakes": result.mistakes,
        "converged": result.converged,
        "weights": p.weights.tolist(),
        "bias": p.bias,
        "inputs": X.tolist(),
        "labels": y.tolist(),
        "predictions": predictions.tolist(),
        "plot": args.plot,
    }
    if not args.json:
        print(f"gate {args.gate.upper()}, learning rate {args.lr:g}")
        for epoch, mistakes in enumerate(result.mistakes, start=1):
            print(f"  epoch {epoch:3d}: {mistakes} mistake{'' if mistakes == 1 else 's'}")
        verdict = "converged" if result.converged else "did NOT converge"
        print(f"{verdict} after {result.epochs} epochs")
        print(f"weights {p.weights.tolist()}, bias {p.bias:g}")
        for x, target, out in zip(X.tolist(), y.tolist(), predictions.tolist(), strict=True):
            print(f"  {x} -> {out:g} (target {target:g})")
        if args.plot:
            print(f"decision boundary written to {args.plot}")
    return report


def _run_xor_network(args: argparse.Namespace) -> dict:
    X, y = gate_dataset("xor")
    _, hidden, out = network_activations(xor_network(), X)
    rows = [
        {"x": x, "hidden_or_nand": h, "output": o[0], "target": t}
        for x, h, o, t in zip(X.tolist(), hidden.tolist(), out.tolist(), y.tolist(), strict=True)
    ]
    if not args.json:
        print("XOR = AND(OR(x1, x2), NAND(x1, x2))")
        print("   x1 x2 | OR NAND | out | XOR")
        for row in rows:
            (x1, x2), (h1, h2) = row["x"], row["hidden_or_nand"]
            print(f"   {x1:2g} {x2:2g} | {h1:2g} {h2:4g} | {row['output']:3g} | {row['target']:3g}")
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.plot and not args.gate:
        parser.error("--plot goes with --gate")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.movie:
        report = _run_movie(args)
    elif args.gate:
        report = _run_gate(args)
    else:
        report = _run_xor_network(args)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
