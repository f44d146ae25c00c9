"""Scaling laws: the loss of a language model as a function of its size and its data.

**The law.** Hoffmann et al. (2022, "Chinchilla") model the final loss of a run that trains a
model of ``N`` parameters on ``D`` tokens as

    L(N, D) = E + A / N^alpha + B / D^beta

``E`` is the loss no model can beat (the entropy of the text), ``A / N^alpha`` what a finite
model gives away, ``B / D^beta`` what finite data (finite training) gives away. Each term
shrinks as a power of its resource, so on log-log axes the reducible loss is a straight line.

**Fitting it** (their approach 3). With ``a = log A``, ``b = log B``, ``e = log E`` the
predicted log-loss is a log-sum-exp, smooth and free of sign constraints:

    log L(N, D) = LSE(a - alpha log N, b - beta log D, e)

The five parameters minimise the Huber loss (``delta = 1e-3``) between that and the measured
log-loss over all runs; Huber instead of squares so that one bad run cannot drag the fit. The
objective is not convex, so L-BFGS starts from several points of a grid: we score the whole
grid at once, then run L-BFGS (torch's, float64, on the analytic gradient) from the best few
and keep the best result.

**Compute-optimal allocation.** Training costs ``C = 6 N D`` FLOPs (``compute``). For a fixed
``C`` the law along ``D = C / (6 N)`` is the *IsoFLOP* curve, a valley in ``N``: a model too
small wastes compute on data it cannot absorb, one too large sees too few tokens. Setting the
derivative to zero gives the bottom of the valley,

    N_opt(C) = G (C / 6)^(beta / (alpha + beta)),
    D_opt(C) = G^-1 (C / 6)^(alpha / (alpha + beta)),
    G = (alpha A / (beta B))^(1 / (alpha + beta)),

so both grow as powers of ``C`` whose exponents add up to one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

FLOPS_PER_PARAM_TOKEN = 6
"""Training FLOPs per parameter per token: 2 forward, 4 backward (see ``compute``)."""


@dataclass(frozen=True)
class ScalingLaw:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (``N`` parameters, ``D`` tokens, loss in
    nats per token)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        """The predicted final loss of a model of ``n`` parameters trained on ``d`` tokens."""
        n, d = _positive("n", n), _positive("d", d)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    __call__ = loss

    def isoflop(self, compute: float, n: float | np.ndarray) -> float | np.ndarray:
        """The loss along the IsoFLOP curve of ``compute`` FLOPs: models of ``n`` parameters,
        each trained on the ``D = C / (6 N)`` tokens the budget leaves."""
        n = _positive("n", n)
        return self.loss(n, _positive("compute", compute) / (FLOPS_PER_PARAM_TOKEN * n))

    def optimal_allocation(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N_opt, D_opt)``: the bottom of the IsoFLOP curve of ``compute`` (see the module
        docstring); ``6 N_opt D_opt == compute``."""
        c = _positive("compute", compute) / FLOPS_PER_PARAM_TOKEN
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError("an optimal allocation needs alpha > 0 and beta > 0")
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / s)
        return g * c ** (self.beta / s), c ** (self.alpha / s) / g

    def optimal_loss(self, compute: float | np.ndarray) -> np.ndarray:
        """The lowest loss ``compute`` FLOPs can buy under this law."""
        return self.loss(*self.optimal_allocation(compute))

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> ScalingLaw:
        missing = {"E", "A", "alpha", "B", "beta"} - set(data)
        if missing:
            raise ValueError(f"a scaling law needs E, A, alpha, B, beta; missing {sorted(missing)}")
        return cls(**{k: float(data[k]) for k in ("E", "A", "alpha", "B", "beta")})


CHINCHILLA = ScalingLaw(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
"""The fit Hoffmann et al. (2022) publish for approach 3 (their equation 10): MassiveText,
their tokenizer, ``N`` all parameters. Its ``beta / (alpha + beta) = 0.45`` is the exponent of
``N_opt`` in ``C`` (the paper quotes 0.46 from the unrounded values)."""


def _positive(name: str, value: float | np.ndarray) -> np.ndarray | float:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return array if array.ndim else float(array)


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
"""Starting points of the fit, in the log parameterisation (``a = log A``, ``b = log B``,
``e = log E``); the grid Hoffmann et al. describe for approach 3."""

_ORDER = ("a", "alpha", "b", "beta", "e")


@dataclass(frozen=True)
class ScalingFit:
    """The result of ``fit_scaling_law``: the law, its Huber objective (summed over runs),
    the root-mean-square relative error of its predictions on the fitted runs, and how many
    starts L-BFGS ran from."""

    law: ScalingLaw
    objective: float
    rms_rel_error: float
    n_runs: int
    starts: int

    def to_dict(self) -> dict:
        return {
            **self.law.to_dict(),
            "objective": self.objective,
            "rms_rel_error": self.rms_rel_error,
            "n_runs": self.n_runs,
            "starts": self.starts,
        }


def huber(residual: np.ndarray, delta: float) -> np.ndarray:
    """Huber's loss: ``r^2 / 2`` for ``|r| <= delta``, ``delta (|r| - delta / 2)`` beyond."""
    r = np.abs(residual)
    return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """The three exponents ``a - alpha log N``, ``b - beta log D``, ``e`` for parameter rows
    ``theta[..., 5]`` (ordered as ``_ORDER``) against every run: shape ``(3, ..., runs)``."""
    a, alpha, b, beta, e = (theta[..., i, None] for i in range(5))
    return np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))


def _objective(theta, log_n, log_d, log_loss, delta) -> np.ndarray:
    """The summed Huber loss of the log-loss residuals, for one or a batch of ``theta``."""
    terms = _terms(theta, log_n, log_d)
    top = terms.max(axis=0)
    predicted = top + np.log(np.exp(terms - top).sum(axis=0))  # log-sum-exp
    return huber(predicted - log_loss, delta).sum(-1)


def _objective_and_grad(theta, log_n, log_d, log_loss, delta) -> tuple[float, np.ndarray]:
    """The objective of one ``theta`` and its gradient. With ``p`` the softmax of the three
    terms (each term's share of the predicted loss) and ``h'`` Huber's derivative at the
    residual: d/da = sum h' p1, d/dalpha = -sum h' p1 log N, and so on."""
    terms = _terms(theta, log_n, log_d)
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    residual = top + np.log(total) - log_loss
    share = weights / total
    slope = np.clip(residual, -delta, delta)  # Huber's derivative
    grad = np.array(
        [
            (slope * share[0]).sum(),
            -(slope * share[0] * log_n).sum(),
            (slope * share[1]).sum(),
            -(slope * share[1] * log_d).sum(),
            (slope * share[2]).sum(),
        ]
    )
    return float(huber(residual, delta).sum()), grad


def fit_scaling_law(
    n: np.ndarray | list[float],
    d: np.ndarray | list[float],
    loss: np.ndarray | list[float],
    *,
    delta: float = 1e-3,
    grid: dict[str, tuple[float, ...]] | None = None,
    refine: int = 4,
    max_iter: int = 300,
) -> ScalingFit:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` to runs (``n`` parameters, ``d``
    tokens, final ``loss``) by Chinchilla's approach 3 (see the module docstring).

    Every point of ``grid`` (default ``GRID``) is scored; L-BFGS (torch's, fed the analytic
    gradient) then starts from the ``refine`` best and the lowest objective wins.
    Deterministic: the same runs give the same law. Needs at least five runs (five
    parameters) with more than one distinct ``N`` and ``D``.
    """
    data = _check_runs(n, d, loss)
    grid = GRID if grid is None else grid
    if set(grid) != set(_ORDER):
        raise ValueError(f"the grid needs exactly the keys {sorted(_ORDER)}, got {sorted(grid)}")
    starts = np.array(list(itertools.product(*(grid[k] for k in _ORDER))), dtype=np.float64)
    scores = _objective(starts, *data, delta)
    best_starts = starts[np.argsort(scores, kind="stable")[: max(1, refine)]]

    best_theta, best_value = None, math.inf
    for start in best_starts:
        theta = torch.tensor(start, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [theta],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-12,
            tolerance_change=1e-14,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure(theta: torch.Tensor = theta) -> torch.Tensor:
            value, grad = _objective_and_grad(theta.detach().numpy(), *data, delta)
            theta.grad = torch.from_numpy(grad)
            return torch.tensor(value, dtype=torch.float64)

        optimizer.step(closure)
        found = theta.detach().numpy().copy()
        value = float(_objective(found, *data, delta))
        if math.isfinite(value) and value < best_value:
            best_theta, best_value = found, value
    if best_theta is None:
        raise RuntimeError("the fit diverged from every start: check the runs' losses")

    a, alpha, b, beta, e = best_theta.tolist()
    law = ScalingLaw(E=math.exp(e), A=math.exp(a), alpha=alpha, B=math.exp(b), beta=beta)
    log_n, log_d, log_loss = data
    predicted = law.loss(np.exp(log_n), np.exp(log_d))
    rms = float(np.sqrt(np.mean((predicted / np.exp(log_loss) - 1) ** 2)))
    return ScalingFit(law, best_value, rms, log_n.size, len(best_starts))


def _check_runs(n, d, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(x, dtype=np.float64).ravel() for x in (n, d, loss)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(
            f"n, d and loss need one value per run, got sizes {[a.size for a in arrays]}"
        )
    for name, a in zip(("n", "d", "loss"), arrays, strict=True):
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"every {name} must be positive and finite")
    n_arr, d_arr, _ = arrays
    if n_arr.size < 5:
        raise ValueError(f"fitting five parameters needs at least 5 runs, got {n_arr.size}")
    if np.unique(n_arr).size < 2 or np.unique(d_arr).size < 2:
        raise ValueError("the runs need at least two model sizes and two token budgets")
    return tuple(np.log(a) for a in arrays)  # type: ignore[return-value]


def isoflop_minimum(
    n: np.ndarray | list[float], loss: np.ndarray | list[float]
) -> tuple[float, float]:
    """Chinchilla's approach 2 on one IsoFLOP slice: fit a parabola to loss against ``log N``
    and return its bottom ``(N_opt, loss at N_opt)``. Needs three or more sizes and a valley
    (an upward parabola)."""
    log_n = np.log(_positive("n", np.asarray(n, dtype=np.float64)))
    loss = np.asarray(loss, dtype=np.float64)
    if log_n.size < 3 or log_n.shape != loss.shape:
        raise ValueError("need at least three (N, loss) pairs of the same length")
    c2, c1, c0 = np.polyfit(log_n, loss, 2)
    if c2 <= 0:
        raise ValueError("these losses have no minimum in N (the parabola opens downward)")
    x = -c1 / (2 * c2)
    return float(np.exp(x)), float(c0 + c1 * x + c2 * x * x)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.pretrain.scaling RESULTS``: fit the law to a sweep's runs."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(
        description="Fit L(N, D) = E + A/N^alpha + B/D^beta to the runs of a sweep's results "
        "JSON (as scripts/scaling_sweep.py writes it) and print the compute-optimal sizes."
    )
    parser.add_argument("results", type=Path, help="e.g. benchmarks/scaling_results.json")
    parser.add_argument("--role", default="fit", help="fit the runs of this role ('fit')")
    parser.add_argument(
        "--budgets", type=float, nargs="*", default=[1e12, 1e13, 1e14], help="FLOP budgets"
    )
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"no results file at {args.results}")
    try:
        runs = [r for r in json.loads(args.results.read_text())["runs"] if r["role"] == args.role]
        n, d, loss = ([r[k] for r in runs] for k in ("n_params", "tokens", "val_loss"))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        parser.error(f"{args.results} is not a sweep's results file ({err!r})")
    fit = fit_scaling_law(n, d, loss)
    law = fit.law
    print(f"{fit.n_runs} runs: L = {law.E:.4f} + {law.A:.4g} / N^{law.alpha:.4f} "
          f"+ {law.B:.4g} / D^{law.beta:.4f}  (rms error {fit.rms_rel_error:.2%})")  # fmt: skip
    for budget in args.budgets:
        n_opt, d_opt = law.optimal_allocation(budget)
        print(f"C = {budget:.3g}: N_opt = {n_opt:,.0f}, D_opt = {d_opt:,.0f}, "
              f"loss {law.loss(n_opt, d_opt):.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
