"""Attention as kernel regression: the Nadaraya-Watson estimator.

Given training pairs (x_i, y_i), predict y at a new point x (the *query*) as a weighted average
of the y_i (the *values*), weighting each by how close its x_i (the *key*) is to the query:

    f(x) = sum_i a(x, x_i) y_i,    a(x, x_i) = softmax_i( -(x - x_i)^2 / (2 w^2) ).

With the Gaussian kernel and width w = 1 this is the softmax of -(x - x_i)^2 / 2. The weights
of one query are positive and sum to one: the query *attends* to the keys near it. Nothing is
learned in the non-parametric form; the parametric form learns the width. Trained on its own
inputs the width would shrink to zero (each point attending only to itself reproduces every
y_i exactly), so it is fitted leave-one-out: each training point is predicted from the others.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def toy_regression(
    n_train: int = 50, n_test: int = 60, noise: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1-D problem: y = 2 sin(x) + x^0.8 plus Gaussian noise, x in [0, 5].

    Returns sorted training inputs and noisy targets, and a grid of test inputs with the
    noise-free truth: ``(x_train, y_train, x_test, y_true)``.
    """
    if n_train < 2 or n_test < 1:
        raise ValueError(f"need n_train >= 2 and n_test >= 1, got {n_train} and {n_test}")
    g = torch.Generator().manual_seed(seed)
    x_train = torch.sort(torch.rand(n_train, generator=g) * 5).values
    y_train = true_function(x_train) + noise * torch.randn(n_train, generator=g)
    x_test = torch.linspace(0, 5, n_test)
    return x_train, y_train, x_test, true_function(x_test)


def true_function(x: torch.Tensor) -> torch.Tensor:
    """The curve behind ``toy_regression``: 2 sin(x) + x^0.8."""
    return 2 * torch.sin(x) + x.clamp_min(0) ** 0.8


def _vectors(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
    for name, t in (("queries", queries), ("keys", keys), ("values", values)):
        if t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor, got shape {tuple(t.shape)}")
    if keys.shape != values.shape:
        raise ValueError(
            f"keys and values must pair up, got {tuple(keys.shape)} and {tuple(values.shape)}"
        )


def kernel_weights(
    queries: torch.Tensor, keys: torch.Tensor, width: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """The attention matrix a[j, i] = softmax_i(-(q_j - k_i)^2 / (2 width^2)), shape (m, n)."""
    if not torch.all(torch.as_tensor(width) > 0):
        raise ValueError(f"the kernel width must be positive, got {width}")
    distance2 = (queries.unsqueeze(1) - keys.unsqueeze(0)) ** 2
    return torch.softmax(-distance2 / (2 * torch.as_tensor(width) ** 2), dim=1)


def nadaraya_watson(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    width: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict at ``queries`` from the pairs (keys, values): returns (predictions, weights)."""
    _vectors(queries, keys, values)
    weights = kernel_weights(queries, keys, width)
    return weights @ values, weights


class KernelRegression(nn.Module):
    """Nadaraya-Watson with a learned width w = exp(log_width) (kept positive that way)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"the initial width must be positive, got {width}")
        self.log_width = nn.Parameter(torch.tensor(math.log(width)))

    @property
    def width(self) -> float:
        """The current kernel width."""
        return float(self.log_width.detach().exp())

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and attention weights, as ``nadaraya_watson`` with the learned width."""
        return nadaraya_watson(queries, keys, values, self.log_width.exp())

    def leave_one_out_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error of predicting each y_i from all the other pairs."""
        _vectors(x, x, y)
        distance2 = (x.unsqueeze(1) - x.unsqueeze(0)) ** 2
        scores = -distance2 / (2 * self.log_width.exp() ** 2)
        scores = scores.masked_fill(torch.eye(len(x), dtype=torch.bool), float("-inf"))
        return ((torch.softmax(scores, dim=1) @ y - y) ** 2).mean()


def fit_width(
    x: torch.Tensor, y: torch.Tensor, steps: int = 200, lr: float = 0.05, width: float = 1.0
) -> tuple[KernelRegression, list[float]]:
    """Learn the kernel width by gradient descent on the leave-one-out loss (Adam)."""
    model = KernelRegression(width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.leave_one_out_loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses
