"""Gradient descent on a function of one variable, with the derivative from the engine.

One number is enough to see the two things that go wrong with gradient descent:

* **the step size.** Each step is x ← x - η·f'(x). On f(x) = a·x² the step multiplies x by
  (1 - 2aη): for η < 1/(2a) the iterates creep towards 0 from one side, for 1/(2a) < η < 1/a
  they overshoot and oscillate around 0 while converging, and for η > 1/a the oscillation grows
  without bound.
* **where it ends.** Descent only follows the local slope, so on a function with several valleys
  it stops in the bottom of whichever valley it started in: a *local* minimum, which need not be
  the global one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .engine import Value, _as_float

__all__ = ["DescentPath", "gradient_descent_1d"]


@dataclass(frozen=True)
class DescentPath:
    """The iterates ``xs[k]`` and the function values ``fs[k] = f(xs[k])``, k = 0..steps."""

    xs: list[float]
    fs: list[float]


def gradient_descent_1d(
    f: Callable[[Value], Value], x0: float, lr: float, steps: int
) -> DescentPath:
    """Minimise ``f`` from ``x0`` with ``steps`` steps x ← x - lr·f'(x).

    ``f`` must be written with engine operations (``x ** 2``, ``x.exp()``, ...) so that
    ``f(Value(x)).backward()`` gives f'(x). The run stops early once x or f(x) is too large
    for a float (a learning rate far too large), so the path may hold fewer than steps + 1 points.
    """
    if not callable(f):
        raise TypeError(f"f must be a function of one Value, got {type(f).__name__}")
    x = _as_float(x0, "x0")
    eta = _as_float(lr, "the learning rate")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    xs: list[float] = []
    fs: list[float] = []
    for k in range(steps + 1):
        point = Value(x, label="x")
        try:
            y = f(point)
        except OverflowError:
            if k == 0:
                raise
            break  # diverged: the previous step flew too far
        if not isinstance(y, Value):
            raise TypeError(f"f must return a Value (built from its argument), got {y!r}")
        xs.append(x)
        fs.append(y.data)
        if k == steps:
            break
        y.backward()
        x = x - eta * point.grad
        if not math.isfinite(x):
            break
    return DescentPath(xs=xs, fs=fs)
