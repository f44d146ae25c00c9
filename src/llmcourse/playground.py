"""A neural-network playground: every knob of a small classifier, one function call per run.

In the spirit of the TensorFlow playground: choose a two-dimensional data set and its noise,
the input features, the hidden layers, the activation, the learning rate, the optimizer and the
regularization (L2 weight decay, dropout); ``run_playground`` trains the MLP on half of the
points and tests it on the other half, and ``plot_playground`` draws the decision boundary next
to the loss curves. ``interactive_playground`` puts the same knobs on sliders in Jupyter when
``ipywidgets`` is installed (it is optional: ``pip install ipywidgets``).

``python -m llmcourse.playground --help`` runs it from a terminal and writes the figure.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from llmcourse.datasets2d import DATASETS, FEATURES, featurize, make_dataset
from llmcourse.mlp import ACTIVATIONS, MLP, FitResult, fit, plot_decision_boundary
from llmcourse.optimizers import OPTIMIZERS

__all__ = ["Knobs", "PlaygroundRun", "interactive_playground", "plot_playground", "run_playground"]


@dataclass(frozen=True)
class Knobs:
    """The settings of one playground run (the defaults solve the spiral)."""

    dataset: str = "spiral"
    noise: float = 0.0
    n: int = 400
    features: tuple[str, ...] = ("x1", "x2")
    hidden: tuple[int, ...] = (16, 16)
    activation: str = "tanh"
    optimizer: str = "adam"
    lr: float = 0.03
    weight_decay: float = 0.0
    dropout: float = 0.0
    steps: int = 600
    seed: int = 0


@dataclass
class PlaygroundRun:
    """A finished run: its knobs, the data (split in halves), and the fitted model."""

    knobs: Knobs
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    result: FitResult = field(repr=False)

    @property
    def train_accuracy(self) -> float:
        """Accuracy on the training half at the end."""
        return self.result.final["train_acc"]

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the held-out half at the end."""
        return self.result.final["val_acc"]


def run_playground(knobs: Knobs | None = None, **changes: object) -> PlaygroundRun:
    """Train an MLP with ``knobs`` (``Knobs()`` by default), overriding any field by keyword.

    ``2 n`` points are drawn: ``n`` to train on and ``n`` to test on. The run is deterministic
    for given knobs (the seed fixes the data, the initial weights and the mini-batches).
    """
    unknown = sorted(set(changes) - set(Knobs.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}: the knobs are {list(asdict(Knobs()))}")
    settings = asdict(knobs or Knobs()) | changes
    settings["features"] = tuple(settings["features"])
    settings["hidden"] = tuple(settings["hidden"])
    k = Knobs(**settings)
    X, y = make_dataset(k.dataset, 2 * k.n, k.noise, seed=k.seed)
    X_train, y_train, X_test, y_test = X[: k.n], y[: k.n], X[k.n :], y[k.n :]
    torch.manual_seed(k.seed)
    model = MLP(len(k.features), k.hidden, k.activation, dropout=k.dropout)
    result = fit(
        model,
        featurize(X_train, k.features),
        y_train,
        steps=k.steps,
        lr=k.lr,
        optimizer=k.optimizer,
        weight_decay=k.weight_decay,
        X_val=featurize(X_test, k.features),
        y_val=y_test,
        eval_every=max(1, k.steps // 30),
        seed=k.seed,
    )
    return PlaygroundRun(k, X_train, y_train, X_test, y_test, result)


def plot_playground(run: PlaygroundRun) -> Figure:
    """The decision boundary with the test points, and the training and test loss curves."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
    k = run.knobs
    plot_decision_boundary(
        run.result.model, run.X_test, run.y_test, k.features, ax=left,
        title=f"test accuracy {run.test_accuracy:.2f}",
    )  # fmt: skip
    h = run.result.history
    right.plot(h["step"], h["train_loss"], label="training loss", linewidth=1)
    right.plot(run.result.eval_steps, h["val_loss"], label="test loss", linewidth=1.5)
    right.set_yscale("log")
    right.set_xlabel("step")
    right.set_ylabel("cross-entropy")
    right.legend()
    right.grid(alpha=0.3)
    layers = " x ".join(map(str, k.hidden)) or "none"
    right.set_title(f"{k.dataset}, hidden {layers}, {k.activation}, lr {k.lr:g}", fontsize=9)
    return fig


def interactive_playground(**start: object) -> object:
    """Sliders and menus for the knobs; each press of "Run" trains and draws a new run.

    Needs Jupyter and the optional package ``ipywidgets``; without it a ``ModuleNotFoundError``
    says how to install it. ``start`` sets the initial knobs (``steps`` and ``n`` too, which have
    no slider). The panel is displayed and returned.
    """
    try:
        import ipywidgets as widgets
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the interactive playground needs ipywidgets: pip install ipywidgets "
            "(or call run_playground and plot_playground, which need nothing more)"
        ) from None
    from IPython.display import display

    base = Knobs(**start)  # type: ignore[arg-type]

    def show(dataset, noise, features, layers, width, activation, optimizer, lr, weight_decay,
             dropout):  # fmt: skip
        run = run_playground(
            base, dataset=dataset, noise=noise, features=tuple(features),
            hidden=(width,) * layers, activation=activation, optimizer=optimizer, lr=lr,
            weight_decay=weight_decay, dropout=dropout,
        )  # fmt: skip
        plot_playground(run)
        plt.show()

    panel = widgets.interactive(
        show,
        {"manual": True, "manual_name": "Run"},
        dataset=widgets.Dropdown(options=DATASETS, value=base.dataset),
        noise=widgets.FloatSlider(value=base.noise, min=0.0, max=0.5, step=0.05),
        features=widgets.SelectMultiple(options=list(FEATURES), value=base.features),
        layers=widgets.IntSlider(value=len(base.hidden), min=0, max=6),
        width=widgets.IntSlider(value=max(base.hidden, default=8), min=1, max=64),
        activation=widgets.Dropdown(options=list(ACTIVATIONS), value=base.activation),
        optimizer=widgets.Dropdown(options=OPTIMIZERS, value=base.optimizer),
        lr=widgets.FloatLogSlider(value=base.lr, base=10, min=-4, max=0),
        weight_decay=widgets.FloatSlider(value=base.weight_decay, min=0.0, max=5.0, step=0.1),
        dropout=widgets.FloatSlider(value=base.dropout, min=0.0, max=0.8, step=0.1),
    )
    display(panel)
    return panel


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.playground``: one run, its accuracies, and optionally its figure."""
    d = Knobs()
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.playground",
        description="Train a small MLP on a 2-D data set with the given knobs; print the training "
        "and test accuracy and optionally draw the decision boundary and loss curves.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    parser.add_argument("--noise", type=float, default=d.noise)
    parser.add_argument("-n", type=int, default=d.n, help="training points (as many for testing)")
    parser.add_argument("--features", nargs="+", choices=list(FEATURES), default=list(d.features))
    parser.add_argument("--hidden", nargs="*", type=int, default=list(d.hidden))
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default=d.activation)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--plot", type=Path, help="write the figure as a PNG file")
    args = parser.parse_args(argv)
    knobs = {key: value for key, value in vars(args).items() if key != "plot"}
    try:
        run = run_playground(**knobs)
    except ValueError as err:
        parser.error(str(err))
    print(f"train accuracy {run.train_accuracy:.3f}, test accuracy {run.test_accuracy:.3f}")
    if args.plot:
        from llmcourse.plots import close, save_figure

        fig = plot_playground(run)
        save_figure(fig, args.plot)
        close(fig)
        print(f"figure written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
