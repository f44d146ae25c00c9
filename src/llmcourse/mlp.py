"""Multilayer perceptrons: the model, its initialization, training, and what its gradients do.

An MLP stacks dense layers with a nonlinear activation φ between them,

    h_0 = x,   h_l = φ(W_l h_(l-1) + b_l)  (l = 1 .. L-1),   logit = W_L h_(L-1) + b_L,

and is trained by gradient descent on the binary cross-entropy of σ(logit) and the label y,
L = -[y log σ(z) + (1 - y) log(1 - σ(z))]. Without φ the stack would collapse into one linear
map, which is why the activation must be nonlinear.

Three things decide whether a deep stack trains at all:

* **the activation.** Backpropagation multiplies, layer after layer, by φ'(·) and by the
  weights. The sigmoid's slope is at most 1/4, so in a deep sigmoid net the gradient shrinks
  geometrically towards the input (*vanishing gradients*); ReLU's slope is 1 where it is active.
* **the initialization.** The weights set the scale of every layer's output and gradient.
  With variance 2 / fan_in (He, for ReLU) or 2 / (fan_in + fan_out) (Glorot/Xavier, for tanh)
  the scale stays about constant with depth; too small and it vanishes, too large and it
  *explodes*; all-equal weights never break the symmetry between the units of a layer.
* **the optimizer and regularization** (``llmcourse.optimizers``; dropout and weight decay).

The module holds ``MLP`` and ``init_weights``, ``fit`` (built on ``llmcourse.training.train``),
``gradient_norms`` per layer, ``plot_decision_boundary``, and ``ScalarMLP``: the same network
built from chapter 2's scalar autograd engine, to show that it computes exactly what the
tensor version computes. ``python -m llmcourse.mlp --help`` trains one from the command line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from torch import nn

from llmcourse.backprop.engine import Value
from llmcourse.datasets2d import DATASETS, FEATURES, featurize, make_dataset, plot_dataset
from llmcourse.optimizers import OPTIMIZERS, make_optimizer
from llmcourse.runtime import autocast, pick_device, seed_everything, torch_threads
from llmcourse.training import train

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "MLP",
    "FitResult",
    "ScalarMLP",
    "accuracy",
    "bce_loss",
    "fit",
    "gradient_norms",
    "init_weights",
    "plot_decision_boundary",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "linear": nn.Identity,
}
"""Activation functions by name ("linear" means none: the net stays a linear map)."""

NORMS: dict[str | None, type[nn.Module] | None] = {
    None: None,
    "layer": nn.LayerNorm,
    "batch": nn.BatchNorm1d,
}
"""Normalization layers by name (``None``: none)."""

INITS = ("default", "xavier", "he", "small", "large", "zeros")
"""Weight initializations ``init_weights`` understands."""


class MLP(nn.Module):
    """A multilayer perceptron with ``hidden`` units per hidden layer and one output logit.

    ``activation`` is a name from ``ACTIVATIONS``; ``norm`` (``"layer"`` or ``"batch"``)
    normalizes every hidden layer's pre-activations, Linear → norm → activation; ``dropout`` > 0
    adds a dropout layer after every hidden activation; ``init`` is a name from ``INITS`` (see
    ``init_weights``). ``out_features`` > 1 gives one logit per class instead (for
    cross-entropy).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (8,),
        activation: str = "relu",
        *,
        out_features: int = 1,
        dropout: float = 0.0,
        init: str = "default",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}: expected one of {list(ACTIVATIONS)}"
            )
        sizes = [in_features, *hidden, out_features]
        if any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}: expected one of {list(NORMS)}")
        self.sizes = tuple(sizes)
        self.activation = activation
        layers: list[nn.Module] = []
        for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if k < len(sizes) - 2:
                if norm is not None:
                    layers.append(NORMS[norm](fan_out))
                layers.append(ACTIVATIONS[activation]())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        init_weights(self, init)

    @property
    def linears(self) -> list[nn.Linear]:
        """The dense layers, from the input to the output."""
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: shape ``(n,)`` for one output, ``(n, out_features)`` otherwise."""
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(
                f"the MLP takes inputs of shape (n, {self.sizes[0]}), got {tuple(x.shape)}"
            )
        out = self.net(x)
        return out.squeeze(-1) if self.sizes[-1] == 1 else out


def init_weights(model: MLP, scheme: str = "default", generator: torch.Generator | None = None):
    """Re-initialize the weights of every dense layer of ``model`` in place (biases to zero).

    ``default`` is PyTorch's (uniform in ±1/√fan_in, biases too); ``xavier``: normal with
    variance 2 / (fan_in + fan_out); ``he``: variance 2 / fan_in; ``small``: std 0.01 (signals
    vanish with depth); ``large``: std 1 (they explode); ``zeros``: every weight 0 (all units of
    a layer compute the same value and get the same update, so they stay identical forever).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}: expected one of {', '.join(INITS)}")
    if scheme == "default":
        for layer in model.linears:
            layer.reset_parameters()
        return
    with torch.no_grad():
        for layer in model.linears:
            fan_out, fan_in = layer.weight.shape
            std = {
                "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
                "he": math.sqrt(2.0 / fan_in),
                "small": 0.01,
                "large": 1.0,
                "zeros": 0.0,
            }[scheme]
            layer.weight.normal_(0.0, 1.0, generator=generator).mul_(std)
            layer.bias.zero_()


def bce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of σ(logits) against labels ``y`` in {0, 1}, computed stably
    from the logits: softplus(z) - y z, since -log σ(z) = softplus(-z) = softplus(z) - z."""
    return F.binary_cross_entropy_with_logits(logits, y)


def _loss(model: MLP, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(X).float()
    if model.sizes[-1] == 1:
        return bce_loss(logits, y.float())
    return F.cross_entropy(logits, y.long())


@torch.no_grad()
def accuracy(model: MLP, X: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of points classified correctly (logit > 0 means class 1)."""
    was_training = model.training
    model.eval()
    logits = model(X)
    model.train(was_training)
    predicted = (logits > 0).float() if model.sizes[-1] == 1 else logits.argmax(dim=1).float()
    return float((predicted == y.float()).float().mean())


@dataclass
class FitResult:
    """What ``fit`` returns: the trained model and the logged history, as columns.

    ``history["step"]`` and ``history["train_loss"]`` have one entry per step; the evaluation
    columns (``train_acc``, ``val_loss``, ``val_acc``) one per evaluation, at ``eval_steps``.
    """

    model: MLP
    history: dict[str, list[float]] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        """The last logged value of every column."""
        return {key: values[-1] for key, values in self.history.items()}


def fit(
    model: MLP,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 1000,
    lr: float = 0.01,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    X_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    eval_every: int = 50,
    seed: int = 0,
    device: str | torch.device | None = None,
    metrics_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = False,
    cpu_threads: int | None = 1,
) -> FitResult:
    """Train ``model`` on ``(X, y)`` with ``llmcourse.training.train`` and a named optimizer.

    Each step uses a random mini-batch of ``batch_size`` points (all of them when ``None``),
    drawn by a generator seeded with ``seed``. Every ``eval_every`` steps the history records
    the training accuracy and, when ``X_val`` is given, the validation loss and accuracy
    (with dropout off). Runs on ``device`` (``pick_device``'s choice by default), with bf16
    autocast on GPUs that support it. ``cpu_threads`` limits PyTorch's CPU threads while
    training (``None``: leave the setting alone); the default, one, is the fastest for networks
    this small, whose matrix products are too short to be worth splitting between threads.
    """
    if X.dim() != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty (n, features) matrix, got {tuple(X.shape)}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
    if (X_val is None) != (y_val is None):
        raise ValueError("give both X_val and y_val, or neither")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev)
    X, y = X.to(dev), y.to(dev)
    if X_val is not None:
        X_val, y_val = X_val.to(dev), y_val.to(dev)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = X.shape[0]

    def next_batch(_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if batch_size is None or batch_size >= n:
            return X, y
        idx = torch.randint(0, n, (batch_size,), generator=g).to(dev)
        return X[idx], y[idx]

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with autocast(dev):
            return _loss(m, *batch)

    def evaluate(m: nn.Module) -> dict[str, float]:
        row = {"train_acc": accuracy(m, X, y)}
        if X_val is not None:
            row["val_loss"] = float(_loss(m, X_val, y_val))
            row["val_acc"] = accuracy(m, X_val, y_val)
        return row

    with torch_threads(cpu_threads):
        history = train(
            model,
            opt,
            next_batch,
            loss_fn,
            steps,
            evaluate=evaluate,
            eval_every=eval_every,
            log_every=1,
            metrics_path=metrics_path,
            checkpoint_path=checkpoint_path,
            progress=progress,
        )
    eval_steps = [s for s in range(1, steps + 1) if s % eval_every == 0 or s == steps]
    return FitResult(model, history, eval_steps)


def gradient_norms(model: MLP, X: torch.Tensor, y: torch.Tensor) -> list[float]:
    """‖∂L/∂W_l‖ (Frobenius norm) of every dense layer's weight, input layer first.

    One forward and backward pass of the loss on ``(X, y)``; the model's gradients are cleared
    afterwards. In a deep sigmoid net these fall by orders of magnitude towards the input.
    """
    model.zero_grad(set_to_none=True)
    _loss(model, X, y).backward()
    norms = [float(layer.weight.grad.norm()) for layer in model.linears]
    model.zero_grad(set_to_none=True)
    return norms


# --------------------------------------------------------------------------------------------
# Decision boundaries
# --------------------------------------------------------------------------------------------


PROBABILITY_COLORS = LinearSegmentedColormap.from_list("class01", ["#f28e2b", "white", "#4e79a7"])
"""Orange for class 0, white at probability 1/2, blue for class 1 (the points' colours)."""


@torch.no_grad()
def plot_decision_boundary(
    model: MLP,
    X: torch.Tensor,
    y: torch.Tensor,
    features: Sequence[str] = ("x1", "x2"),
    *,
    ax: Axes | None = None,
    title: str | None = None,
    resolution: int = 150,
) -> Figure:
    """The model's probability of class 1 over the square as a background, the points on top.

    The colour shows σ(logit) (orange 0, blue 1), the black line the boundary σ = 1/2.
    ``features`` must be the ones the model was trained on (``featurize``).
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.6, 3.6), layout="constrained")
    else:
        fig = ax.figure
    grid = torch.linspace(-1.2, 1.2, resolution)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    prob = torch.sigmoid(model(featurize(points, features).to(device)).float()).cpu()
    model.train(was_training)
    prob = prob.reshape(resolution, resolution).numpy()
    ax.contourf(
        gx.numpy(),
        gy.numpy(),
        prob,
        levels=np.linspace(0, 1, 11),
        cmap=PROBABILITY_COLORS,
        alpha=0.6,
    )
    ax.contour(gx.numpy(), gy.numpy(), prob, levels=[0.5], colors="black", linewidths=1)
    plot_dataset(X.cpu(), y.cpu(), ax=ax, title=title)
    return fig


def plot_gradient_norms(norms: dict[str, Sequence[float]], title: str | None = None) -> Figure:
    """One line per run: the gradient norm of each layer's weights, on a log scale."""
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    for label, values in norms.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel("‖∂L/∂W‖")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------
# The same network on chapter 2's scalar engine
# --------------------------------------------------------------------------------------------


class ScalarMLP:
    """An MLP made of ``Value`` objects: one number, one node of the graph, at a time.

    ``layers[l]`` is a list of neurons, each a pair (weights, bias) of Values. It supports the
    activations the engine has (tanh, sigmoid, relu) and exists to show that a multilayer
    network is nothing but the chain rule of chapter 2 applied many times: ``from_torch``
    copies the weights of an ``MLP`` and the tests check that both compute the same logits
    and gradients.
    """

    ENGINE_ACTIVATIONS = ("tanh", "sigmoid", "relu")

    def __init__(self, sizes: Sequence[int], activation: str = "tanh", seed: int = 0) -> None:
        if activation not in self.ENGINE_ACTIVATIONS:
            raise ValueError(
                f"the scalar engine supports the activations {self.ENGINE_ACTIVATIONS}, "
                f"got {activation!r}"
            )
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must be at least two positive integers, got {list(sizes)}")
        g = torch.Generator().manual_seed(seed)
        self.sizes = tuple(sizes)
        self.activation = activation
        self.layers: list[list[tuple[list[Value], Value]]] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default range for nn.Linear
            w = (torch.rand(fan_out, fan_in + 1, generator=g) * 2 - 1) * bound
            self.layers.append(
                [([Value(v) for v in row[:-1].tolist()], Value(row[-1].item())) for row in w]
            )

    @classmethod
    def from_torch(cls, model: MLP) -> ScalarMLP:
        """The scalar copy of ``model`` (a plain MLP: no dropout, no normalization layers)."""
        if model.activation not in cls.ENGINE_ACTIVATIONS:
            raise ValueError(f"the scalar engine has no {model.activation!r} activation")
        if any(isinstance(m, (nn.Dropout, nn.LayerNorm, nn.BatchNorm1d)) for m in model.net):
            raise ValueError("only a plain MLP (no dropout or normalization) has a scalar copy")
        scalar = cls(model.sizes, model.activation)
        for layer, linear in zip(scalar.layers, model.linears, strict=True):
            for (weights, bias), w_row, b in zip(
                layer, linear.weight.tolist(), linear.bias.tolist(), strict=True
            ):
                for v, number in zip(weights, w_row, strict=True):
                    v.data = float(number)
                bias.data = float(b)
        return scalar

    def parameters(self) -> list[Value]:
        """Every weight and bias, layer by layer."""
        return [p for layer in self.layers for weights, bias in layer for p in (*weights, bias)]

    def __call__(self, x: Sequence[float]) -> Value:
        """The output logit for one input point ``x`` (a sequence of ``sizes[0]`` numbers)."""
        if len(x) != self.sizes[0]:
            raise ValueError(f"the network takes {self.sizes[0]} inputs, got {len(x)}")
        h: list[Value | float] = [float(v) for v in x]
        for k, layer in enumerate(self.layers):
            z = [sum((w * xi for w, xi in zip(ws, h, strict=True)), b) for ws, b in layer]
            h = z if k == len(self.layers) - 1 else [getattr(v, self.activation)() for v in z]
        return h[0]

    def loss(self, X: Sequence[Sequence[float]], y: Sequence[float]) -> Value:
        """Mean binary cross-entropy, softplus(z) - y z, written with the engine's operations
        as relu(z) + log(1 + e^(-|z|)) - y z so that it never overflows."""
        if len(X) == 0 or len(X) != len(y):
            raise ValueError(
                f"need as many labels as points (and at least one), {len(X)} vs {len(y)}"
            )
        total = Value(0.0)
        for xi, yi in zip(X, y, strict=True):
            z = self(xi)
            magnitude = z.relu() + (-z).relu()
            total = total + z.relu() + (1 + (-magnitude).exp()).log() - float(yi) * z
        return total / len(X)

    def step(self, lr: float) -> None:
        """Plain gradient descent on every parameter: p ← p - lr · ∂L/∂p."""
        for p in self.parameters():
            p.data -= lr * p.grad

    def predict(self, X: Sequence[Sequence[float]]) -> list[int]:
        """Class 1 where the logit is positive."""
        return [int(self(xi).data > 0) for xi in X]


def train_scalar(
    model: ScalarMLP, X: Sequence[Sequence[float]], y: Sequence[float], steps: int, lr: float
) -> list[float]:
    """Full-batch gradient descent with the scalar engine; returns the loss before each step."""
    history = []
    for _ in range(steps):
        loss = model.loss(X, y)
        loss.backward()
        model.step(lr)
        history.append(loss.data)
    return history


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m llmcourse.mlp``."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.mlp",
        description="Train an MLP on a two-dimensional data set and report its accuracy; "
        "optionally draw the decision boundary, write the metrics and a checkpoint. With "
        "--gradient-norms, print the gradient norm of every layer of a deep net instead.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="spiral")
    parser.add_argument(
        "-n", type=int, default=400, help="training points (as many for validation)"
    )
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--features", nargs="+", choices=list(FEATURES), default=["x1", "x2"])
    parser.add_argument("--hidden", nargs="*", type=int, default=[16, 16], help="hidden sizes")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="tanh")
    parser.add_argument("--init", choices=INITS, default="default")
    parser.add_argument("--norm", choices=["layer", "batch"], help="normalize hidden layers")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, help="mini-batch size (default: all points)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, mps (default: LLMCOURSE_DEVICE or auto)")
    parser.add_argument("--plot", type=Path, help="write the decision boundary as a PNG file")
    parser.add_argument("--metrics", type=Path, help="write the training metrics as CSV")
    parser.add_argument("--checkpoint", type=Path, help="save the trained model here")
    parser.add_argument("--gradient-norms", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train (or measure gradients), report; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 0 or args.n < 2:
        parser.error("--steps must be >= 0 and -n at least 2")
    seed_everything(args.seed)
    try:
        X, y = make_dataset(args.dataset, args.n, args.noise, seed=args.seed)
        X_val, y_val = make_dataset(args.dataset, args.n, args.noise, seed=args.seed + 1)
        model = MLP(
            len(args.features), args.hidden, args.activation, dropout=args.dropout,
            init=args.init, norm=args.norm,
        )  # fmt: skip
    except ValueError as err:
        parser.error(str(err))
    F_train, F_val = featurize(X, args.features), featurize(X_val, args.features)
    if args.gradient_norms:
        norms = gradient_norms(model, F_train, y)
        if args.json:
            print(json.dumps({"gradient_norms": norms}))
        else:
            for k, value in enumerate(norms, start=1):
                print(f"layer {k:>2}: |dL/dW| = {value:.3e}")
        return 0
    result = fit(
        model, F_train, y, steps=args.steps, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, batch_size=args.batch_size, X_val=F_val, y_val=y_val,
        seed=args.seed, device=args.device, metrics_path=args.metrics,
        checkpoint_path=args.checkpoint, progress=args.progress,
    )  # fmt: skip
    final = result.final
    if args.json:
        print(json.dumps(final))
    else:
        print(
            f"{args.dataset}: after {args.steps} steps train loss {final['train_loss']:.4f}, "
            f"train accuracy {final['train_acc']:.3f}, validation accuracy {final['val_acc']:.3f}"
        )
    if args.plot:
        from llmcourse.plots import close, save_figure

        fig = plot_decision_boundary(model, X, y, args.features, title=args.dataset)
        save_figure(fig, args.plot)
        close(fig)
        print(f"decision boundary written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
