"""Scaling laws and training compute: the fit recovers a known law, the IsoFLOP optimum agrees
with a grid search, the compute formulas reproduce published figures, and the committed sweep
results are well formed and reproduce their recorded prediction."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmcourse.pretrain import compute, scaling
from llmcourse.pretrain.compute import (
    LLAMA2_TOTAL_GPU_HOURS,
    PUBLISHED,
    Hardware,
    chinchilla_optimal,
    energy_kwh,
    gpu_hours,
    implied_mfu,
    training_cost,
    training_flops,
)
from llmcourse.pretrain.scaling import (
    CHINCHILLA,
    ScalingLaw,
    fit_scaling_law,
    huber,
    isoflop_minimum,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "scaling_results.json"
TRUE = ScalingLaw(E=0.9, A=30.0, alpha=0.35, B=80.0, beta=0.3)


def synthetic_runs(noise: float, seed: int = 0):
    """A 5 x 5 grid of (N, D) with losses from ``TRUE`` times log-normal noise."""
    n = np.repeat(np.geomspace(2e4, 4e5, 5), 5)
    d = np.tile(np.geomspace(1.3e5, 2.1e6, 5), 5)
    rng = np.random.default_rng(seed)
    return n, d, TRUE.loss(n, d) * np.exp(noise * rng.standard_normal(n.size))


# ---------------------------------------------------------------------------------------------
# compute
# ---------------------------------------------------------------------------------------------


def test_six_n_d_is_forward_plus_backward():
    assert compute.forward_flops(3e6, 5e8) == 2 * 3e6 * 5e8
    assert compute.backward_flops(3e6, 5e8) == 4 * 3e6 * 5e8
    assert training_flops(3e6, 5e8) == 6 * 3e6 * 5e8 == 9e15


def test_gpt3_flops_match_the_paper():
    gpt3 = PUBLISHED["gpt3-175b"]
    assert gpt3.flops == pytest.approx(3.14e23, rel=2e-3)  # table D.1
    pf_days = gpt3.flops / (1e15 * 86400)
    assert pf_days == pytest.approx(3640, rel=2e-3)  # the paper's 3.64e3 PF-days


def test_llama2_gpu_hours_and_implied_mfu():
    runs = [PUBLISHED[f"llama2-{size}"] for size in ("7b", "13b", "34b", "70b")]
    assert sum(r.gpu_hours for r in runs) == LLAMA2_TOTAL_GPU_HOURS == 3_311_616
    seventy = PUBLISHED["llama2-70b"]
    # by hand: 6 * 70e9 * 2e12 = 8.4e23 FLOPs; 1,720,320 h * 3600 s * 312e12 = 1.9323e24
    assert seventy.flops == 8.4e23
    assert seventy.implied_mfu == pytest.approx(8.4e23 / 1.93226e24, rel=1e-4)
    assert seventy.implied_mfu == pytest.approx(0.4347, abs=1e-4)
    # the paper's emissions are GPU-hours x power x one carbon intensity: the same ratio for
    # every size, which checks that the table was copied consistently
    intensity = [r.tco2eq / (r.gpu_hours * r.watts / 1000) for r in runs]
    assert max(intensity) / min(intensity) < 1.001
    # seed 004: "6000 GPUs for 12 days" is 1,728,000 GPU-hours, 0.45 % above the paper's
    assert 6000 * 12 * 24 / seventy.gpu_hours == pytest.approx(1.0045, abs=1e-4)


def test_gpu_hours_energy_and_money():
    hours = gpu_hours(3600 * 1e14, peak_flops=1e14, mfu=0.5)
    assert hours == pytest.approx(2.0)
    assert implied_mfu(3600 * 1e14, hours, 1e14) == pytest.approx(0.5)
    assert energy_kwh(1000, watts_per_gpu=400, pue=1.1) == pytest.approx(440.0)
    hw = Hardware(peak_flops=1e14, mfu=0.5, watts=500, pue=1.2, usd_per_gpu_hour=3.0)
    cost = training_cost(1e6, 6e7, hw)  # 6 N D = 3.6e14 FLOPs = 2 GPU-hours
    assert cost.flops == pytest.approx(3.6e14)
    assert cost.gpu_hours == pytest.approx(2 * 3.6e14 / (3600 * 1e14))
    assert cost.energy_kwh == pytest.approx(cost.gpu_hours * 0.5 * 1.2)
    assert cost.usd == pytest.approx(cost.gpu_hours * 3.0)
    assert cost.days(4) == pytest.approx(cost.gpu_hours / 96)


def test_chinchilla_rule_of_thumb():
    n, d = chinchilla_optimal(6 * 70e9 * 1.4e12)  # Chinchilla itself: 70 B on 1.4 T tokens
    assert n == pytest.approx(70e9) and d == pytest.approx(1.4e12)
    n, d = chinchilla_optimal(1e21, tokens_per_param=5)
    assert 6 * n * d == pytest.approx(1e21) and d == pytest.approx(5 * n)


@pytest.mark.parametrize(
    "call",
    [
        lambda: training_flops(-1, 10),
        lambda: gpu_hours(1e20, 1e14, 1.5),
        lambda: energy_kwh(10, 400, pue=0.9),
        lambda: chinchilla_optimal(0),
        lambda: PUBLISHED["gpt3-175b"].implied_mfu,
        lambda: training_cost(1e9, 1e10).days(0),
    ],
)
def test_compute_rejects_bad_input(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------------------------------------
# the law and its fit
# ---------------------------------------------------------------------------------------------


def test_huber_matches_torch():
    r = np.linspace(-0.01, 0.01, 41)
    expected = torch.nn.functional.huber_loss(
        torch.tensor(r), torch.zeros(41, dtype=torch.float64), reduction="none", delta=1e-3
    )
    np.testing.assert_allclose(huber(r, 1e-3), expected.numpy(), rtol=1e-12, atol=1e-18)


def test_analytic_gradient_matches_autograd():
    n, d, loss = synthetic_runs(noise=0.02)
    data = tuple(np.log(x) for x in (n, d, loss))
    theta = np.array([3.0, 0.3, 4.5, 0.35, -0.2])
    value, grad = scaling._objective_and_grad(theta, *data, 1e-3)

    t = torch.tensor(theta, requires_grad=True)
    log_n, log_d, log_loss = (torch.from_numpy(x) for x in data)
    a, alpha, b, beta, e = t
    predicted = torch.logsumexp(
        torch.stack([a - alpha * log_n, b - beta * log_d, e.expand_as(log_n)]), dim=0
    )
    reference = torch.nn.functional.huber_loss(predicted, log_loss, reduction="sum", delta=1e-3)
    reference.backward()
    assert value == pytest.approx(reference.item(), rel=1e-10)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-8, atol=1e-14)


def test_fit_recovers_an_exact_law():
    fit = fit_scaling_law(*synthetic_runs(noise=0.0), refine=2)
    for name in ("E", "A", "alpha", "B", "beta"):
        assert getattr(fit.law, name) == pytest.approx(getattr(TRUE, name), rel=1e-3), name
    assert fit.rms_rel_error < 1e-6 and fit.n_runs == 25


def test_fit_recovers_a_noisy_law_and_extrapolates():
    fit = fit_scaling_law(*synthetic_runs(noise=0.005, seed=1))
    law = fit.law
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.08)
    assert law.beta == pytest.approx(TRUE.beta, abs=0.08)
    assert abs(law.E - TRUE.E) < 0.15
    assert fit.rms_rel_error < 0.01
    # a run beyond the grid in both N and D (2.5x and 2.5x) is predicted within 1 %
    assert law.loss(1e6, 5e6) == pytest.approx(TRUE.loss(1e6, 5e6), rel=0.01)


def test_fit_is_deterministic_and_robust_to_an_outlier():
    n, d, loss = synthetic_runs(noise=0.0)
    loss = loss.copy()
    loss[7] *= 1.5  # one broken run
    fit = fit_scaling_law(n, d, loss, refine=2)
    assert fit.law.alpha == pytest.approx(TRUE.alpha, rel=0.02)
    assert fit.law.beta == pytest.approx(TRUE.beta, rel=0.02)


@pytest.mark.parametrize(
    ("n", "d", "loss", "match"),
    [
        ([1e4, 2e4, 3e4, 4e4], [1e5, 2e5, 3e5, 4e5], [3, 2.9, 2.8, 2.7], "at least 5 runs"),
        ([1e4] * 6, np.geomspace(1e5, 1e6, 6), [3.0] * 6, "two model sizes"),
        ([1e4, 2e4, 3e4, 4e4, 5e4], [1e5] * 5, [3, 2.9, 2.8, 2.7, -1], "positive"),
        ([1e4, 2e4], [1e5, 2e5, 3e5], [3, 2.9], "one value per run"),
    ],
)
def test_fit_rejects_bad_runs(n, d, loss, match):
    with pytest.raises(ValueError, match=match):
        fit_scaling_law(n, d, loss)


def test_loss_is_monotone_and_bounded_by_e():
    n = np.geomspace(1e3, 1e12, 50)
    assert np.all(np.diff(TRUE.loss(n, 1e9)) < 0)
    assert np.all(np.diff(TRUE.loss(1e9, n)) < 0)
    assert np.all(TRUE.loss(n, n) > TRUE.E)


@pytest.mark.parametrize("law", [TRUE, CHINCHILLA])
def test_isoflop_minimum_matches_a_grid_search(law):
    for c in (1e15, 1e18, 1e21):
        n_opt, d_opt = law.optimal_allocation(c)
        assert 6 * n_opt * d_opt == pytest.approx(c)
        grid = np.geomspace(n_opt / 100, n_opt * 100, 20001)
        best = grid[np.argmin(law.isoflop(c, grid))]
        assert best == pytest.approx(n_opt, rel=2e-3)
        assert law.optimal_loss(c) <= law.isoflop(c, grid).min() + 1e-12


def test_compute_optimal_growth():
    budgets = np.geomspace(1e15, 1e25, 11)
    n_opt, d_opt = CHINCHILLA.optimal_allocation(budgets)
    assert np.all(np.diff(n_opt) > 0) and np.all(np.diff(d_opt) > 0)
    assert np.all(np.diff(CHINCHILLA.optimal_loss(budgets)) < 0)
    slope_n = np.polyfit(np.log(budgets), np.log(n_opt), 1)[0]
    slope_d = np.polyfit(np.log(budgets), np.log(d_opt), 1)[0]
    assert slope_n + slope_d == pytest.approx(1.0)
    assert slope_n == pytest.approx(0.46, abs=0.01)  # the paper's a = 0.46 for approach 3


def test_isoflop_parabola():
    log_n = np.linspace(10, 14, 7)
    loss = 2.0 + 0.3 * (log_n - 12.2) ** 2
    n_opt, loss_opt = isoflop_minimum(np.exp(log_n), loss)
    assert math.log(n_opt) == pytest.approx(12.2) and loss_opt == pytest.approx(2.0)
    # on a law's own IsoFLOP curve, near its bottom, the parabola finds the bottom
    c = 1e19
    n_star, _ = TRUE.optimal_allocation(c)
    sizes = n_star * np.geomspace(0.5, 2, 9)
    assert isoflop_minimum(sizes, TRUE.isoflop(c, sizes))[0] == pytest.approx(n_star, rel=0.02)
    with pytest.raises(ValueError, match="no minimum"):
        isoflop_minimum(np.exp(log_n), -loss)


def test_law_round_trips_and_rejects_bad_input():
    assert ScalingLaw.from_dict(TRUE.to_dict()) == TRUE
    with pytest.raises(ValueError, match="missing"):
        ScalingLaw.from_dict({"E": 1.0})
    with pytest.raises(ValueError, match="positive"):
        TRUE.loss(0, 1e6)


# ---------------------------------------------------------------------------------------------
# the committed sweep
# ---------------------------------------------------------------------------------------------


def load_sweep_script():
    spec = importlib.util.spec_from_file_location(
        "scaling_sweep", ROOT / "scripts/scaling_sweep.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["scaling_sweep"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results() -> dict:
    assert RESULTS.is_file(), f"{RESULTS} is missing: run scripts/scaling_sweep.py"
    return json.loads(RESULTS.read_text())


def test_results_are_well_formed(results):
    runs = results["runs"]
    assert {"settings", "machine", "runs", "prediction"} <= set(results)
    names = [r["name"] for r in runs]
    assert len(names) == len(set(names))
    fit_runs = [r for r in runs if r["role"] == "fit"]
    assert len({r["n_params"] for r in fit_runs}) >= 5
    assert len({r["tokens"] for r in fit_runs}) >= 4
    for r in runs:
        assert r["flops"] == 6 * r["n_params"] * r["tokens"]
        assert 0 < r["val_loss"] < math.log(256)  # better than uniform over the bytes
        assert r["wall_s"] > 0
    large = next(r for r in runs if r["role"] == "predict")
    assert large["n_params"] > max(r["n_params"] for r in fit_runs)
    assert large["tokens"] > max(r["tokens"] for r in fit_runs)
    # at a fixed model size, more tokens never made the final loss worse
    grid = [r for r in runs if r["role"] in ("fit", "early")]
    for n in {r["n_params"] for r in grid}:
        losses = [
            r["val_loss"] for r in sorted(grid, key=lambda r: r["tokens"]) if r["n_params"] == n
        ]
        assert all(b < a for a, b in itertools.pairwise(losses)), n


def test_results_reproduce_the_recorded_prediction(results):
    pred = results["prediction"]
    fit_runs = [r for r in results["runs"] if r["name"] in set(pred["fit_runs"])]
    assert len(fit_runs) == len(pred["fit_runs"])
    fit = fit_scaling_law(
        [r["n_params"] for r in fit_runs], [r["tokens"] for r in fit_runs],
        [r["val_loss"] for r in fit_runs],
    )  # fmt: skip
    recorded = ScalingLaw.from_dict(pred["fit"])
    assert fit.law.loss(pred["n_params"], pred["tokens"]) == pytest.approx(
        pred["predicted_val_loss"], rel=1e-3
    )
    assert recorded.loss(pred["n_params"], pred["tokens"]) == pytest.approx(
        pred["predicted_val_loss"], rel=1e-9
    )
    measured = next(r for r in results["runs"] if r["name"] == pred["run"])["val_loss"]
    assert pred["measured_val_loss"] == measured
    assert pred["error"] == pytest.approx(pred["predicted_val_loss"] - measured)


def test_sweep_counts_n_as_the_model_does_and_skips_finished_runs(tmp_path):
    sweep = load_sweep_script()
    from llmcourse.causal_lm import build_model

    spec = sweep.RunSpec(3, 80, 128, "fit")
    model = build_model(sweep.train_config(spec), 256)
    tables = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    n = sum(p.numel() for p in model.parameters()) - tables
    assert sweep.non_embedding_params(3, 80) == n
    results = {"runs": [{"name": spec.name}]}
    path = tmp_path / "results.json"
    sweep.run_all([spec], results, path, workers=1, threads=1)  # nothing to do: no pool
    assert not path.exists() and results["runs"] == [{"name": spec.name}]


def test_command_lines(tmp_path, capsys):
    assert compute.main(["--params", "70e9", "--tokens", "2e12", "--mfu", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "8.4e+23 FLOPs" in out and f"{8.4e23 / (0.5 * 312e12 * 3600):,.0f} GPU-hours" in out
    n, d, loss = synthetic_runs(noise=0.0)
    keys = ("n_params", "tokens", "val_loss")
    runs = [
        {"role": "fit", **dict(zip(keys, row, strict=True))} for row in zip(n, d, loss, strict=True)
    ]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": runs}))
    assert scaling.main([str(path), "--budgets", "1e15"]) == 0
    n_opt, _ = TRUE.optimal_allocation(1e15)
    assert f"N_opt = {n_opt:,.0f}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        scaling.main([str(tmp_path / "missing.json")])
