"""Backpropagation, from the chain rule to a tiny automatic-differentiation engine.

* ``engine``: ``Value``, a scalar that remembers how it was computed, and ``backward()``, which
  applies the chain rule through the whole computation graph (reverse-mode autodiff).
* ``network``: the worked example of chapter 2, a 2-2-2 sigmoid network with the source
  document's labels: the forward pass, ∂E/∂w1..∂E/∂w8 by hand-derived formulas and by the
  engine, one gradient-descent update and many (``train``).
* ``descent``: gradient descent on a function of one variable (step sizes, local minima).
* ``drawing``: the network diagram and computation-graph pictures of the book.

Run ``python -m llmcourse.backprop --worked-example`` for the worked example, or
``python -m llmcourse.backprop --help`` for the rest.
"""

from .descent import DescentPath, gradient_descent_1d
from .engine import Value, topological_order
from .network import (
    BIAS_NAMES,
    INITIAL_PARAMS,
    INPUTS,
    LEARNING_RATE,
    PARAM_NAMES,
    TARGETS,
    WEIGHT_NAMES,
    ForwardPass,
    TrainingRun,
    WorkedExample,
    error_graph,
    forward,
    gradient_step,
    gradients_by_engine,
    gradients_by_hand,
    learning_rate_sweep,
    sigmoid,
    sigmoid_derivative,
    train,
    worked_example,
)

__all__ = [
    "BIAS_NAMES",
    "INITIAL_PARAMS",
    "INPUTS",
    "LEARNING_RATE",
    "PARAM_NAMES",
    "TARGETS",
    "WEIGHT_NAMES",
    "DescentPath",
    "ForwardPass",
    "TrainingRun",
    "Value",
    "WorkedExample",
    "error_graph",
    "forward",
    "gradient_descent_1d",
    "gradient_step",
    "gradients_by_engine",
    "gradients_by_hand",
    "learning_rate_sweep",
    "sigmoid",
    "sigmoid_derivative",
    "topological_order",
    "train",
    "worked_example",
]
