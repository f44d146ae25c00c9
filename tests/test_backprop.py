"""The worked example of ``llmcourse.backprop`` against published figures and torch.autograd.

The published figures are Matt Mazur's well-known "step by step backpropagation example", which
uses the same network and numbers; his labels swap w2/w3 and w6/w7 relative to the course's
source document, so the figures below are already translated to the course's labels.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from llmcourse import backprop as bp
from llmcourse.backprop.__main__ import main

PUBLISHED_E = 0.298371109
PUBLISHED_AFTER_ONE_STEP = {
    "w5": 0.35891648,
    "w7": 0.408666186,
    "w6": 0.511301270,
    "w8": 0.561370121,
    "w1": 0.149780716,
    "w3": 0.19956143,
    "w2": 0.24975114,
    "w4": 0.29950229,
}
# Published as "after 10,000 rounds": the error of the 10,000th forward pass, which is measured
# before that round's update, i.e. after 9,999 updates.
PUBLISHED_E_10000TH_PASS = 0.0000351085


def _torch_leaves(params):
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}


def _torch_error(p, inputs, targets):
    """The 2-2-2 network written independently in torch (float64, matrix form): E, f(z), o."""
    x = torch.tensor([inputs["x1"], inputs["x2"]], dtype=torch.float64)
    w_hidden = torch.stack([torch.stack([p["w1"], p["w3"]]), torch.stack([p["w2"], p["w4"]])])
    w_out = torch.stack([torch.stack([p["w5"], p["w7"]]), torch.stack([p["w6"], p["w8"]])])
    hidden = torch.sigmoid(w_hidden @ x + p["b1"])
    out = torch.sigmoid(w_out @ hidden + p["b2"])
    target = torch.tensor([targets["target1"], targets["target2"]], dtype=torch.float64)
    return 0.5 * ((out - target) ** 2).sum(), hidden, out


def _random_setup(rng: random.Random):
    params = {name: rng.uniform(-1.5, 1.5) for name in bp.PARAM_NAMES}
    inputs = {"x1": rng.uniform(-1, 1), "x2": rng.uniform(-1, 1)}
    targets = {"target1": rng.uniform(0, 1), "target2": rng.uniform(0, 1)}
    return params, inputs, targets


def test_forward_pass_matches_the_published_error():
    fp = bp.forward()
    error = fp.E
    assert error == pytest.approx(PUBLISHED_E, abs=5e-10)
    # Intermediate values published with the same example (net_h1, out_h1, net_o1, out_o1...).
    assert fp.z1 == pytest.approx(0.3775, abs=1e-12)
    assert fp.f_z1 == pytest.approx(0.593269992, abs=5e-10)
    assert fp.f_z2 == pytest.approx(0.596884378, abs=5e-10)
    assert fp.i1 == pytest.approx(1.105905967, abs=5e-10)
    assert fp.o1 == pytest.approx(0.75136507, abs=5e-9)
    assert fp.o2 == pytest.approx(0.772928465, abs=5e-10)


def test_one_update_matches_the_published_weights():
    ex = bp.worked_example()
    for name, published in PUBLISHED_AFTER_ONE_STEP.items():
        assert ex.weights_after[name] == pytest.approx(published, abs=1e-8), name
    # The biases are not part of the update.
    assert set(ex.weights_after) == set(bp.WEIGHT_NAMES)


def test_worked_example_matches_torch_autograd():
    leaves = _torch_leaves(bp.INITIAL_PARAMS)
    error, hidden, out = _torch_error(leaves, bp.INPUTS, bp.TARGETS)
    error.backward()
    fp = bp.forward()
    ours = fp.E
    assert ours == pytest.approx(error.item(), rel=1e-13)
    assert [fp.f_z1, fp.f_z2] == pytest.approx(hidden.tolist(), rel=1e-13)
    assert [fp.o1, fp.o2] == pytest.approx(out.tolist(), rel=1e-13)
    ex = bp.worked_example()
    for name in bp.WEIGHT_NAMES:
        assert ex.grads[name] == pytest.approx(leaves[name].grad.item(), rel=1e-12), name
        assert ex.grads_engine[name] == pytest.approx(leaves[name].grad.item(), rel=1e-12), name


@pytest.mark.parametrize("seed", range(20))
def test_hand_formulas_engine_and_torch_agree_on_random_networks(seed):
    params, inputs, targets = _random_setup(random.Random(seed))
    by_hand = bp.gradients_by_hand(params, inputs, targets, include_biases=True)
    by_engine = bp.gradients_by_engine(params, inputs, targets, include_biases=True)
    leaves = _torch_leaves(params)
    error, _, _ = _torch_error(leaves, inputs, targets)
    error.backward()
    ours = bp.forward(params, inputs, targets).E
    assert ours == pytest.approx(error.item(), rel=1e-12)
    assert set(by_hand) == set(by_engine) == set(bp.PARAM_NAMES)
    for name in bp.PARAM_NAMES:
        expected = leaves[name].grad.item()
        assert by_hand[name] == pytest.approx(expected, rel=1e-10, abs=1e-15), name
        assert by_engine[name] == pytest.approx(expected, rel=1e-10, abs=1e-15), name


def test_seed_sign_and_derivative_facts():
    fp = bp.forward()
    # ∂E/∂o1 = o1 - target1 (not its negative), ∂o1/∂i1 = o1(1 - o1) (not f(z1)(1 - f(z1))).
    error, nodes = bp.error_graph()
    error.backward()
    assert nodes["o1"].grad == pytest.approx(fp.o1 - bp.TARGETS["target1"], rel=1e-14)
    assert nodes["i1"].grad == pytest.approx(
        (fp.o1 - bp.TARGETS["target1"]) * fp.o1 * (1 - fp.o1), rel=1e-14
    )
    # The sigmoid has e^-x: f(0) = 1/2 and f(1) = 1/(1 + 1/e).
    assert bp.sigmoid(0.0) == 0.5
    assert bp.sigmoid(1.0) == pytest.approx(0.7310585786300049, rel=1e-15)
    assert bp.sigmoid(-800.0) == pytest.approx(0.0) and bp.sigmoid(800.0) == 1.0
    assert bp.sigmoid_derivative(0.0) == 0.25


def test_gradient_step_uses_the_gradients_from_before_the_update():
    params = dict(bp.INITIAL_PARAMS)
    grads = bp.gradients_by_hand(params)
    after = bp.gradient_step(params, grads, 0.5)
    assert after["b1"] == params["b1"] and after["b2"] == params["b2"]
    # dE/dw1 recomputed with the *updated* w5, w6 differs: the worked example must not use it.
    stale = bp.gradients_by_hand({**params, "w5": after["w5"], "w6": after["w6"]})
    assert abs(stale["w1"] - grads["w1"]) > 1e-6
    assert after["w1"] == pytest.approx(params["w1"] - 0.5 * grads["w1"], rel=1e-15)
    assert params == dict(bp.INITIAL_PARAMS)  # the input dict is not modified


def test_training_matches_the_published_error_after_10000_rounds():
    run = bp.train(10000, 0.5)
    assert len(run.history) == 10001
    assert run.history[0] == pytest.approx(PUBLISHED_E, abs=5e-10)
    assert run.history[9999] == pytest.approx(PUBLISHED_E_10000TH_PASS, abs=5e-11)
    assert run.final_error == pytest.approx(3.5101878e-05, abs=5e-12)
    assert run.final_error < run.history[9999]
    assert all(b < a for a, b in zip(run.history, run.history[1:], strict=False))


def test_training_matches_a_torch_gradient_descent_loop_and_the_engine():
    steps = 100
    for train_biases in (False, True):
        run = bp.train(steps, 0.5, train_biases=train_biases)
        leaves = _torch_leaves(bp.INITIAL_PARAMS)
        trained = [leaves[n] for n in (bp.PARAM_NAMES if train_biases else bp.WEIGHT_NAMES)]
        history = []
        for _ in range(steps):
            error, _, _ = _torch_error(leaves, bp.INPUTS, bp.TARGETS)
            history.append(error.item())
            grads = torch.autograd.grad(error, trained)
            with torch.no_grad():
                for tensor, grad in zip(trained, grads, strict=True):
                    tensor -= 0.5 * grad
        history.append(_torch_error(leaves, bp.INPUTS, bp.TARGETS)[0].item())
        assert run.history == pytest.approx(history, rel=1e-11)
        assert run.params == pytest.approx({k: v.item() for k, v in leaves.items()}, rel=1e-11)
    by_engine = bp.train(30, 0.5, method="engine", train_biases=True)
    assert by_engine.history == pytest.approx(bp.train(30, 0.5, train_biases=True).history)


def test_learning_rate_sweep_orders_the_runs():
    runs = bp.learning_rate_sweep([0.05, 0.5, 500], 200)
    assert list(runs) == [0.05, 0.5, 500.0]
    assert runs[0.05].final_error > runs[0.5].final_error
    # Far too large: one step throws o1 past its target into the flat tail of the sigmoid.
    assert 9e-5 < runs[500.0].final_error < 1.1e-4


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: bp.forward({"w1": 0.1}), ValueError, "lack"),
        (lambda: bp.forward({**bp.INITIAL_PARAMS, "w9": 0.1}), ValueError, "unknown"),
        (lambda: bp.forward({**bp.INITIAL_PARAMS, "w1": "a"}), TypeError, "real number"),
        (lambda: bp.forward([0.1] * 10), TypeError, "mapping"),
        (lambda: bp.forward(inputs={"x1": 1.0}), ValueError, "x2"),
        (lambda: bp.gradient_step(bp.INITIAL_PARAMS, {"v1": 0.0}), ValueError, "unknown"),
        (lambda: bp.gradient_step(bp.INITIAL_PARAMS, {}, lr=-1), ValueError, "positive"),
        (lambda: bp.train(-1), ValueError, "non-negative"),
        (lambda: bp.train(2.5), ValueError, "non-negative"),
        (lambda: bp.train(2, method="magic"), ValueError, "method"),
        (lambda: bp.sigmoid("x"), TypeError, "real number"),
    ],
)
def test_bad_input_gives_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_cli_json_has_the_required_keys(capsys):
    assert main(["--worked-example", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["E"] == pytest.approx(PUBLISHED_E, abs=5e-10)
    assert set(data["grads"]) == set(data["weights_after"]) == set(bp.WEIGHT_NAMES)
    for name, published in PUBLISHED_AFTER_ONE_STEP.items():
        assert data["weights_after"][name] == pytest.approx(published, abs=1e-8)


def test_cli_text_mentions_every_label(capsys):
    assert main(["--worked-example"]) == 0
    out = capsys.readouterr().out
    labels = ["x1", "x2", "target1", "target2", "b1", "b2", "z1", "z2", "f(z1)", "f(z2)"]
    labels += ["i1", "i2", "o1", "o2", "E =", *bp.WEIGHT_NAMES, "0.298371109", "0.358916480"]
    for label in labels:
        assert label in out, label


def test_cli_lr_changes_the_update(capsys):
    main(["--worked-example", "--json", "--lr", "1.0"])
    data = json.loads(capsys.readouterr().out)
    assert data["weights_after"]["w5"] == pytest.approx(0.4 - data["grads"]["w5"])


def test_cli_steps_json_metrics_and_plot(tmp_path, capsys):
    metrics, plot = tmp_path / "m.csv", tmp_path / "loss.png"
    argv = ["--steps", "10000", "--json", "--metrics", str(metrics), "--plot", str(plot)]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["history"]) == 10001
    assert data["history"][9999] == pytest.approx(PUBLISHED_E_10000TH_PASS, abs=5e-11)
    assert data["E"] == data["history"][-1]
    rows = metrics.read_text().splitlines()
    assert rows[0] == "lr,step,E" and len(rows) == 10002
    assert plot.stat().st_size > 1000


def test_cli_steps_text_and_learning_rates(capsys):
    assert main(["--steps", "100", "--lrs", "0.05", "5"]) == 0
    out = capsys.readouterr().out
    assert "learning rate 0.05" in out and "learning rate 5" in out
    assert "E after     100 steps" in out
    assert main(["--steps", "5", "--json", "--lrs", "0.5", "50"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [run["lr"] for run in data["runs"]] == [0.5, 50.0]
    assert main(["--steps", "20", "--json", "--train-biases", "--method", "engine"]) == 0
    by_engine = json.loads(capsys.readouterr().out)
    assert set(by_engine["weights"]) == set(bp.PARAM_NAMES)
    expected = bp.train(20, train_biases=True).history
    assert by_engine["history"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --worked-example --steps is required"),
        (["--worked-example", "--steps", "3"], "not allowed with"),
        (["--steps", "-1"], "negative"),
        (["--steps", "ten"], "not a whole number"),
        (["--worked-example", "--lr", "0"], "positive"),
        (["--worked-example", "--lr", "fast"], "not a number"),
        (["--worked-example", "--plot", "x.png"], "need(s) --steps"),
        (["--worked-example", "--bogus"], "unrecognized arguments"),
    ],
)
def test_cli_bad_arguments_exit_with_an_argparse_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--worked-example" in capsys.readouterr().out
