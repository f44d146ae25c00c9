"""The training loop: it really fits, resumes exactly, logs, and stops on a diverging loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from llmcourse.metrics import MetricsLogger, read_metrics
from llmcourse.plots import close, plot_curves
from llmcourse.training import train

X = torch.linspace(-1, 1, 64).unsqueeze(1)
Y = 3 * X + 2 + 0.1 * torch.sin(7 * X)


def linear_fit(steps: int, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(step * 16, step * 16 + 16) % 64  # depends only on the step
        return X[idx], Y[idx]

    def mse(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.mse_loss(m(b[0]), b[1])

    history = train(model, opt, batch, mse, steps, progress=False, **kwargs)
    return model, history


def test_train_reaches_the_least_squares_solution() -> None:
    model, history = linear_fit(300)
    design = torch.cat([X, torch.ones_like(X)], dim=1)
    slope, intercept = torch.linalg.lstsq(design, Y).solution.squeeze(1)
    assert model.weight.item() == pytest.approx(slope.item(), abs=2e-2)
    assert model.bias.item() == pytest.approx(intercept.item(), abs=2e-2)
    assert history["train_loss"][-1] < history["train_loss"][0] / 100


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, _ = linear_fit(40)
    ckpt, csv = tmp_path / "ckpt.pt", tmp_path / "metrics.csv"
    linear_fit(20, checkpoint_path=ckpt, metrics_path=csv)
    resumed, _ = linear_fit(40, checkpoint_path=ckpt, metrics_path=csv, resume=True)
    assert torch.equal(straight.weight, resumed.weight)
    assert torch.equal(straight.bias, resumed.bias)
    assert read_metrics(csv)["step"] == list(map(float, range(1, 41)))


def test_evaluation_columns_and_log_every(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    _, history = linear_fit(
        20,
        log_every=5,
        eval_every=10,
        metrics_path=csv,
        evaluate=lambda m: {"val_loss": nn.functional.mse_loss(m(X), Y).item()},
    )
    assert history["step"] == [5, 10, 15, 20]
    columns = read_metrics(csv)
    assert math.isnan(columns["val_loss"][0]) and not math.isnan(columns["val_loss"][1])


def test_diverging_loss_stops_the_run() -> None:
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e6)
    with pytest.raises(FloatingPointError, match="loss became"):
        train(
            model,
            opt,
            lambda s: (X, Y * 1e20),
            lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
            50,
            progress=False,
        )


def test_metrics_logger_widens_its_header(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path / "m.csv", append=False)
    log.log({"step": 1, "loss": 2.0})
    log.log({"step": 2, "loss": 1.5, "acc": 0.5})
    assert read_metrics(tmp_path / "m.csv")["acc"][1] == 0.5
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "absent.csv")


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    fig = plot_curves({"a": [3, 2, 1], "b": ([0, 2], [1, 0.5])}, logy=True, path=tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes[0].lines) == 2
    close(fig)
