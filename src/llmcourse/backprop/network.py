"""The worked example of chapter 2: a 2-2-2 sigmoid network, its error, gradients and updates.

The labels are those of the course's source document. Two inputs feed two hidden neurons, which
feed two output neurons; f is the sigmoid 1/(1 + e⁻ˣ):

    z1 = x1·w1 + x2·w3 + b1          f(z1)           hidden neuron 1
    z2 = x1·w2 + x2·w4 + b1          f(z2)           hidden neuron 2
    i1 = f(z1)·w5 + f(z2)·w7 + b2    o1 = f(i1)      output neuron 1
    i2 = f(z1)·w6 + f(z2)·w8 + b2    o2 = f(i2)      output neuron 2
    E  = ½(o1 - target1)² + ½(o2 - target2)²

By the chain rule, ∂E/∂w5 = ∂E/∂o1 · ∂o1/∂i1 · ∂i1/∂w5 with

    ∂E/∂o1 = o1 - target1       (the ½ cancels the 2 of the square)
    ∂o1/∂i1 = o1·(1 - o1)       (the sigmoid's derivative, written with its output)
    ∂i1/∂w5 = f(z1)             (what w5 multiplies)

The first two factors make the output neuron's *delta* δo1 = ∂E/∂i1, shared by every weight
entering that neuron: ∂E/∂w5 = δo1·f(z1), ∂E/∂w7 = δo1·f(z2). A hidden neuron feeds both
outputs, so its delta sums the two paths back from E:

    δh1 = ∂E/∂z1 = (δo1·w5 + δo2·w6)·f(z1)·(1 - f(z1)),   ∂E/∂w1 = δh1·x1,  ∂E/∂w3 = δh1·x2

(using w5 and w6 *before* they are updated). ``gradients_by_hand`` evaluates these formulas,
``gradients_by_engine`` builds the same network out of ``Value`` objects and lets
backpropagation find the same numbers, and ``gradient_step`` applies w⁺ = w - η·∂E/∂w.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from numbers import Real
from types import MappingProxyType
from typing import Any, TypeVar

from .engine import Value, _as_float, _sigmoid

__all__ = [
    "BIAS_NAMES",
    "INITIAL_PARAMS",
    "INPUTS",
    "LEARNING_RATE",
    "PARAM_NAMES",
    "TARGETS",
    "WEIGHT_NAMES",
    "ForwardPass",
    "TrainingRun",
    "WorkedExample",
    "error_graph",
    "forward",
    "gradient_step",
    "gradients_by_engine",
    "gradients_by_hand",
    "learning_rate_sweep",
    "sigmoid",
    "sigmoid_derivative",
    "train",
    "worked_example",
]

WEIGHT_NAMES: tuple[str, ...] = ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8")
BIAS_NAMES: tuple[str, ...] = ("b1", "b2")
PARAM_NAMES: tuple[str, ...] = WEIGHT_NAMES + BIAS_NAMES
INPUT_NAMES: tuple[str, ...] = ("x1", "x2")
TARGET_NAMES: tuple[str, ...] = ("target1", "target2")

#: The starting point of the worked example (read-only; ``dict(INITIAL_PARAMS)`` for a copy).
INITIAL_PARAMS: Mapping[str, float] = MappingProxyType(
    {
        "w1": 0.15,
        "w2": 0.25,
        "w3": 0.20,
        "w4": 0.30,
        "w5": 0.40,
        "w6": 0.50,
        "w7": 0.45,
        "w8": 0.55,
        "b1": 0.35,
        "b2": 0.60,
    }
)
INPUTS: Mapping[str, float] = MappingProxyType({"x1": 0.05, "x2": 0.10})
TARGETS: Mapping[str, float] = MappingProxyType({"target1": 0.01, "target2": 0.99})
LEARNING_RATE = 0.5

T = TypeVar("T", float, Value)


def sigmoid(x: float) -> float:
    """The logistic function f(x) = 1/(1 + e⁻ˣ), squashing any number into (0, 1)."""
    return _sigmoid(_as_float(x, "x"))


def sigmoid_derivative(x: float) -> float:
    """f'(x) = f(x)·(1 - f(x)): the slope of the sigmoid, largest (¼) at x = 0."""
    s = sigmoid(x)
    return s * (1.0 - s)


@dataclass(frozen=True)
class ForwardPass:
    """Every intermediate number of one forward pass: net inputs, outputs and the error E."""

    z1: float
    z2: float
    f_z1: float
    f_z2: float
    i1: float
    i2: float
    o1: float
    o2: float
    E: float

    def as_dict(self) -> dict[str, float]:
        """The numbers as ``{"z1": ..., "f_z1": ..., "E": ...}``."""
        return asdict(self)


def _checked(
    values: Mapping[str, Any] | None,
    names: tuple[str, ...],
    default: Mapping[str, float],
    what: str,
) -> dict[str, float]:
    """``values`` as a dict of floats with exactly ``names`` as keys, or a clear error."""
    if values is None:
        return dict(default)
    if not isinstance(values, Mapping):
        raise TypeError(
            f"{what} must be a mapping like {dict(default)}, got {type(values).__name__}"
        )
    unknown = [key for key in values if key not in names]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; the names are {', '.join(names)}")
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"{what} lack {', '.join(missing)} (all of {', '.join(names)} needed)")
    return {name: _as_float(values[name], f"{what[:-1]} {name!r}") for name in names}


def _check_all(
    params: Mapping[str, float] | None,
    inputs: Mapping[str, float] | None,
    targets: Mapping[str, float] | None,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    return (
        _checked(params, PARAM_NAMES, INITIAL_PARAMS, "parameters"),
        _checked(inputs, INPUT_NAMES, INPUTS, "inputs"),
        _checked(targets, TARGET_NAMES, TARGETS, "targets"),
    )


def _check_lr(lr: object) -> float:
    value = _as_float(lr, "the learning rate")
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"the learning rate must be a positive finite number, got {value!r}")
    return value


def _network(
    p: Mapping[str, T], x: Mapping[str, T], t: Mapping[str, T], f: Callable[[T], T]
) -> dict[str, T]:
    """The network's equations, written once for plain floats and for engine ``Value``s."""
    z1 = x["x1"] * p["w1"] + x["x2"] * p["w3"] + p["b1"]
    z2 = x["x1"] * p["w2"] + x["x2"] * p["w4"] + p["b1"]
    f_z1, f_z2 = f(z1), f(z2)
    i1 = f_z1 * p["w5"] + f_z2 * p["w7"] + p["b2"]
    i2 = f_z1 * p["w6"] + f_z2 * p["w8"] + p["b2"]
    o1, o2 = f(i1), f(i2)
    error = 0.5 * (o1 - t["target1"]) ** 2 + 0.5 * (o2 - t["target2"]) ** 2
    return {
        "z1": z1,
        "z2": z2,
        "f_z1": f_z1,
        "f_z2": f_z2,
        "i1": i1,
        "i2": i2,
        "o1": o1,
        "o2": o2,
        "E": error,
    }


def forward(
    params: Mapping[str, float] | None = None,
    inputs: Mapping[str, float] | None = None,
    targets: Mapping[str, float] | None = None,
) -> ForwardPass:
    """Run the network forward and return every net input, every output and the error E.

    ``params`` maps all of w1..w8, b1, b2 to numbers, ``inputs`` maps x1, x2 and ``targets``
    maps target1, target2; each defaults to the worked example's values.
    """
    p, x, t = _check_all(params, inputs, targets)
    return ForwardPass(**_network(p, x, t, _sigmoid))


def _grads_by_hand(
    p: Mapping[str, float], x: Mapping[str, float], t: Mapping[str, float], include_biases: bool
) -> dict[str, float]:
    fp = _network(p, x, t, _sigmoid)
    # Output deltas δ = ∂E/∂i = ∂E/∂o · ∂o/∂i.
    delta_o1 = (fp["o1"] - t["target1"]) * fp["o1"] * (1.0 - fp["o1"])
    delta_o2 = (fp["o2"] - t["target2"]) * fp["o2"] * (1.0 - fp["o2"])
    # Hidden deltas ∂E/∂z: both output neurons' deltas flow back through the (old) weights.
    delta_h1 = (delta_o1 * p["w5"] + delta_o2 * p["w6"]) * fp["f_z1"] * (1.0 - fp["f_z1"])
    delta_h2 = (delta_o1 * p["w7"] + delta_o2 * p["w8"]) * fp["f_z2"] * (1.0 - fp["f_z2"])
    grads = {
        "w1": delta_h1 * x["x1"],
        "w2": delta_h2 * x["x1"],
        "w3": delta_h1 * x["x2"],
        "w4": delta_h2 * x["x2"],
        "w5": delta_o1 * fp["f_z1"],
        "w6": delta_o2 * fp["f_z1"],
        "w7": delta_o1 * fp["f_z2"],
        "w8": delta_o2 * fp["f_z2"],
    }
    if include_biases:
        # Each bias is shared by two neurons, so its gradient sums their deltas.
        grads["b1"] = delta_h1 + delta_h2
        grads["b2"] = delta_o1 + delta_o2
    return grads


def gradients_by_hand(
    params: Mapping[str, float] | None = None,
    inputs: Mapping[str, float] | None = None,
    targets: Mapping[str, float] | None = None,
    *,
    include_biases: bool = False,
) -> dict[str, float]:
    """∂E/∂w1..∂E/∂w8 (and ∂E/∂b1, ∂E/∂b2 if asked) from the hand-derived delta formulas.

    Output layer: δo1 = (o1 - target1)·o1·(1 - o1), ∂E/∂w5 = δo1·f(z1), ∂E/∂w7 = δo1·f(z2),
    and likewise δo2 for w6, w8. Hidden layer: δh1 = (δo1·w5 + δo2·w6)·f(z1)·(1 - f(z1)),
    ∂E/∂w1 = δh1·x1, ∂E/∂w3 = δh1·x2, and δh2 = (δo1·w7 + δo2·w8)·f(z2)·(1 - f(z2)) for w2, w4.
    """
    p, x, t = _check_all(params, inputs, targets)
    return _grads_by_hand(p, x, t, include_biases)


def error_graph(
    params: Mapping[str, float] | None = None,
    inputs: Mapping[str, float] | None = None,
    targets: Mapping[str, float] | None = None,
) -> tuple[Value, dict[str, Value]]:
    """Build the network out of engine ``Value`` objects.

    Returns the error E (a ``Value``; call ``E.backward()``) and the named nodes: the leaves
    x1, x2, target1, target2, w1..w8, b1, b2 and the intermediate z1, z2, f(z1), f(z2), i1,
    i2, o1, o2, each labelled with its name for printing and drawing.
    """
    p, x, t = _check_all(params, inputs, targets)
    leaves = {name: Value(v, label=name) for name, v in {**x, **p, **t}.items()}
    named = _network(leaves, leaves, leaves, Value.sigmoid)
    for name, node in named.items():
        node.label = {"f_z1": "f(z1)", "f_z2": "f(z2)"}.get(name, name)
    nodes = {**leaves, **{node.label: node for node in named.values()}}
    return nodes["E"], nodes


def gradients_by_engine(
    params: Mapping[str, float] | None = None,
    inputs: Mapping[str, float] | None = None,
    targets: Mapping[str, float] | None = None,
    *,
    include_biases: bool = False,
) -> dict[str, float]:
    """The same gradients as ``gradients_by_hand``, found by ``E.backward()`` on the graph."""
    error, nodes = error_graph(params, inputs, targets)
    error.backward()
    names = PARAM_NAMES if include_biases else WEIGHT_NAMES
    return {name: nodes[name].grad for name in names}


def gradient_step(
    params: Mapping[str, float], grads: Mapping[str, float], lr: float = LEARNING_RATE
) -> dict[str, float]:
    """One step of gradient descent, w⁺ = w - η·∂E/∂w, for every parameter named in ``grads``.

    Returns a new dict of all parameters; those without a gradient (the biases, in the worked
    example) keep their values. Every gradient is computed before any weight changes, so the
    hidden-layer gradients use the output weights from *before* the update.
    """
    p = _checked(params, PARAM_NAMES, INITIAL_PARAMS, "parameters")
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads must be a mapping from parameter names to numbers, got {grads!r}")
    unknown = [key for key in grads if key not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"gradients for unknown parameters {unknown}: the names are {PARAM_NAMES}")
    eta = _check_lr(lr)
    for name, g in grads.items():
        p[name] -= eta * _as_float(g, f"the gradient for {name!r}")
    return p


@dataclass(frozen=True)
class WorkedExample:
    """The worked example: forward pass, gradients found two ways, and one update."""

    lr: float
    params: dict[str, float]
    inputs: dict[str, float]
    targets: dict[str, float]
    forward: ForwardPass
    grads: dict[str, float]
    grads_engine: dict[str, float]
    weights_after: dict[str, float]

    @property
    def params_after(self) -> dict[str, float]:
        """All parameters after the update: the new weights and the unchanged biases."""
        return {**self.params, **self.weights_after}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with keys ``E``, ``grads``, ``weights_after`` and the rest."""
        return {
            "E": self.forward.E,
            "grads": dict(self.grads),
            "weights_after": dict(self.weights_after),
            "grads_engine": dict(self.grads_engine),
            "forward": self.forward.as_dict(),
            "lr": self.lr,
            "params": dict(self.params),
            "inputs": dict(self.inputs),
            "targets": dict(self.targets),
        }


def worked_example(
    lr: float = LEARNING_RATE,
    params: Mapping[str, float] | None = None,
    inputs: Mapping[str, float] | None = None,
    targets: Mapping[str, float] | None = None,
) -> WorkedExample:
    """Compute the worked example: forward pass, ∂E/∂w1..∂E/∂w8 and the weights after one step.

    The biases are held fixed; the gradients come from the delta formulas and are also
    computed by the engine (``grads_engine``), which must agree.
    """
    p, x, t = _check_all(params, inputs, targets)
    eta = _check_lr(lr)
    grads = _grads_by_hand(p, x, t, include_biases=False)
    after = gradient_step(p, grads, eta)
    return WorkedExample(
        lr=eta,
        params=p,
        inputs=x,
        targets=t,
        forward=ForwardPass(**_network(p, x, t, _sigmoid)),
        grads=grads,
        grads_engine=gradients_by_engine(p, x, t),
        weights_after={name: after[name] for name in WEIGHT_NAMES},
    )


@dataclass(frozen=True)
class TrainingRun:
    """The result of ``train``: ``history[k]`` is E after k gradient-descent steps.

    ``history[0]`` is the starting error and ``history[-1]`` the error after the last step.
    (Counting the other way, ``history[k - 1]`` is the error that the k-th step's forward pass
    measures before its update: the commonly quoted E = 0.0000351085 "after 10,000 rounds" of
    this example is ``history[9999]``.)
    """

    lr: float
    steps: int
    train_biases: bool
    history: list[float] = field(repr=False)
    params: dict[str, float]

    @property
    def final_error(self) -> float:
        """E after the last step."""
        return self.history[-1]


def train(
    steps: int,
    lr: float = LEARNING_RATE,
    *,
    params: Mapping[str, float] | None = None,
    inputs: Mapping[str, float] | None = None,
    targets: Mapping[str, float] | None = None,
    train_biases: bool = False,
    method: str = "formulas",
) -> TrainingRun:
    """Repeat the worked example's step ``steps`` times: all eight weights (and the biases if
    ``train_biases``) move against their gradient each step, and E is recorded each step.

    ``method`` picks how the gradients are found: ``"formulas"`` (the delta formulas, fast) or
    ``"engine"`` (backpropagation through a freshly built ``Value`` graph, about 50 times
    slower). Both give the same numbers.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if method not in ("formulas", "engine"):
        raise ValueError(f"method must be 'formulas' or 'engine', got {method!r}")
    p, x, t = _check_all(params, inputs, targets)
    eta = _check_lr(lr)
    history = [_network(p, x, t, _sigmoid)["E"]]
    for _ in range(steps):
        if method == "formulas":
            grads = _grads_by_hand(p, x, t, train_biases)
        else:
            grads = gradients_by_engine(p, x, t, include_biases=train_biases)
        for name, g in grads.items():
            p[name] -= eta * g
        history.append(_network(p, x, t, _sigmoid)["E"])
    return TrainingRun(lr=eta, steps=steps, train_biases=train_biases, history=history, params=p)


def learning_rate_sweep(
    lrs: Iterable[float], steps: int, **kwargs: Any
) -> dict[float, TrainingRun]:
    """``train`` once per learning rate, from the same start: ``{lr: run}``.

    Extra keyword arguments go to ``train`` (``train_biases=True``, ``method="engine"``...).
    """
    runs: dict[float, TrainingRun] = {}
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, Real):
            raise TypeError(f"learning rates must be numbers, got {lr!r}")
        runs[float(lr)] = train(steps, lr, **kwargs)
    return runs
