"""Tests of `llmcourse.perceptron` against values worked out by hand and independent checks."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from matplotlib.figure import Figure

from llmcourse import perceptron as P
from llmcourse.plots import close

GATE_INPUTS = [(0, 0), (0, 1), (1, 0), (1, 1)]
TRUTH = {  # written out independently of the module's GATES table
    "and": [0, 0, 0, 1],
    "or": [0, 1, 1, 1],
    "nand": [1, 1, 1, 0],
    "xor": [0, 1, 1, 0],
}


def classify_by_hand(weights: list[float], bias: float, x: tuple[int, ...]) -> int:
    """An independent perceptron: plain Python, no tensors."""
    return int(sum(w * xi for w, xi in zip(weights, x, strict=True)) + bias > 0)


# ------------------------------------------------------------------------------------------
# The step function and the movie decision
# ------------------------------------------------------------------------------------------


def test_step_fires_only_above_zero() -> None:
    out = P.step(torch.tensor([-3.0, -1e-6, 0.0, 1e-6, 2.0]))
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert out.dtype == torch.float32
    assert float(P.step(0.0)) == 0.0


def test_movie_sums_and_decisions_by_hand() -> None:
    # weather 8, price 4, partner 4, threshold 8; every line computed by hand
    expected = [
        # weather, price, partner, sum, decision
        (0, 0, 0, 0, 0),
        (0, 0, 1, 4, 0),
        (0, 1, 0, 4, 0),
        (0, 1, 1, 8, 0),  # 8 is not greater than 8
        (1, 0, 0, 8, 0),  # good weather alone: 8, not enough
        (1, 0, 1, 12, 1),
        (1, 1, 0, 12, 1),  # weather and price: 8 + 4 = 12 > 8
        (1, 1, 1, 16, 1),  # all three: 8 + 4 + 4 = 16
    ]
    rows = P.movie_table()
    assert [tuple(row) for row in rows] == expected
    for weather, price, partner, _, decision in expected:
        assert P.movie_decision(weather, price, partner) == decision
    assert P.movie_decision(True, True, False) == 1


def test_threshold_is_a_negative_bias() -> None:
    for threshold in (-1, 0, 4, 7.5, 8, 12, 16):
        p = P.movie_perceptron(threshold=threshold)
        assert p.bias == -threshold
        for x in itertools.product((0, 1), repeat=3):
            assert float(p.predict(torch.tensor(x, dtype=torch.float32))) == P.movie_decision(
                *x, threshold=threshold
            )


def test_lower_threshold_means_keener() -> None:
    goes = {t: sum(row.decision for row in P.movie_table(threshold=t)) for t in (4, 8, 12, 16)}
    # threshold 4: every sum above 4 (8, 8, 12, 12, 16); 8: 12, 12, 16; 12: only 16; 16: none
    assert goes == {4: 5, 8: 3, 12: 1, 16: 0}


def test_movie_table_text() -> None:
    text = P.format_movie_table(P.movie_table())
    lines = text.splitlines()
    assert len(lines) == 2 + 8
    assert lines[-1] == "| 1 | 1 | 1 | 16 | yes | go |"
    assert lines[6] == "| 1 | 0 | 0 | 8 | no | stay home |"


# ------------------------------------------------------------------------------------------
# The perceptron rule
# ------------------------------------------------------------------------------------------


def test_first_two_epochs_on_and_traced_by_hand() -> None:
    """Zero start, lr 1, samples (0,0), (0,1), (1,0), (1,1) in this order; y_hat = [w.x + b > 0]."""
    X, y = P.gate_dataset("and")
    p = P.Perceptron.zeros(2)
    expected = [
        # epoch 1
        ((0.0, 0.0), 0.0, 0.0),  # z = 0 -> 0, target 0: no change
        ((0.0, 0.0), 0.0, 0.0),  # z = 0 -> 0, target 0
        ((0.0, 0.0), 0.0, 0.0),  # z = 0 -> 0, target 0
        ((1.0, 1.0), 1.0, 1.0),  # z = 0 -> 0, target 1: w += (1, 1), b += 1
        # epoch 2
        ((1.0, 1.0), 0.0, -1.0),  # z = 1 -> 1, target 0: w -= (0, 0), b -= 1
        ((1.0, 0.0), -1.0, -1.0),  # z = 1 + 0 = 1 -> 1, target 0: w -= (0, 1), b -= 1
        ((1.0, 0.0), -1.0, 0.0),  # z = 1 - 1 = 0 -> 0, target 0: no change
        ((2.0, 1.0), 0.0, 1.0),  # z = 1 - 1 = 0 -> 0, target 1: w += (1, 1), b += 1
    ]
    for i, (weights, bias, error) in enumerate(expected):
        assert p.update(X[i % 4], float(y[i % 4]), lr=1.0) == error
        assert p.weights.tolist() == list(weights), f"after sample {i}"
        assert p.bias == bias, f"after sample {i}"

    q = P.Perceptron.zeros(2)
    assert P.train_epoch(q, X, y) == 1
    assert P.train_epoch(q, X, y) == 3
    assert q.weights.tolist() == [2.0, 1.0] and q.bias == 0.0


def test_training_on_and_to_the_end_by_hand() -> None:
    # continuing the trace above: epochs 3, 4, 5 make 3, 2, 1 mistakes, epoch 6 none
    result = P.train_perceptron(*P.gate_dataset("and"), lr=1.0)
    assert result.mistakes == [1, 3, 3, 2, 1, 0]
    assert result.converged and result.epochs == 6
    assert result.perceptron.weights.tolist() == [2.0, 1.0]
    assert result.perceptron.bias == -2.0
    assert [h.weights.tolist() for h in result.history[:2]] == [[1.0, 1.0], [2.0, 1.0]]
    assert [h.bias for h in result.history[:2]] == [1.0, 0.0]


@pytest.mark.parametrize("gate", ["and", "or", "nand"])
@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3])
def test_converges_on_separable_gates(gate: str, seed: int | None) -> None:
    result = P.train_perceptron(*P.gate_dataset(gate), lr=0.5, epochs=200, seed=seed)
    assert result.converged
    assert result.mistakes[-1] == 0 and all(m > 0 for m in result.mistakes[:-1])
    w, b = result.perceptron.weights.tolist(), result.perceptron.bias
    assert [classify_by_hand(w, b, x) for x in GATE_INPUTS] == TRUTH[gate]


def test_learning_rate_only_scales_weights_from_zero() -> None:
    # from zero weights, lr multiplies every weight and the bias, and the signs never change
    X, y = P.gate_dataset("or")
    one = P.train_perceptron(X, y, lr=1.0)
    quarter = P.train_perceptron(X, y, lr=0.25)
    assert one.mistakes == quarter.mistakes
    assert torch.equal(quarter.perceptron.weights * 4, one.perceptron.weights)
    assert quarter.perceptron.bias * 4 == one.perceptron.bias


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_xor_never_converges(seed: int | None) -> None:
    result = P.train_perceptron(*P.gate_dataset("xor"), epochs=500, seed=seed)
    assert not result.converged
    assert len(result.mistakes) == 500
    assert min(result.mistakes) >= 1


def test_xor_from_zero_cycles() -> None:
    # traced by hand: after epoch 2 the weights come back to w = (-1, 0), b = 1 every epoch
    result = P.train_perceptron(*P.gate_dataset("xor"), epochs=6)
    assert result.mistakes == [2, 3, 4, 4, 4, 4]
    for h in result.history[1:]:
        assert h.weights.tolist() == [-1.0, 0.0] and h.bias == 1.0


def test_no_line_separates_xor() -> None:
    # the fact behind the failure, checked by brute force over a grid of lines
    values = [v / 2 for v in range(-8, 9)]
    for w1, w2, b in itertools.product(values, repeat=3):
        outputs = [classify_by_hand([w1, w2], b, x) for x in GATE_INPUTS]
        assert outputs != TRUTH["xor"]


def test_mistake_bound_by_hand_and_respected() -> None:
    X, y = P.gate_dataset("and")
    # separator w = (1, 1), b = -1.5: margins 1.5, 0.5, 0.5, 0.5 over |v| = sqrt(4.25), and
    # R^2 = |(1, 1, 1)|^2 = 3, so (R / gamma)^2 = 3 * 4.25 / 0.25 = 51
    assert P.mistake_bound(X, y, [1.0, 1.0], -1.5) == pytest.approx(51.0)
    assert sum(P.train_perceptron(X, y).mistakes) <= 51
    with pytest.raises(ValueError, match="do not separate"):
        P.mistake_bound(*P.gate_dataset("xor"), [1.0, 1.0], -0.5)


@pytest.mark.parametrize("seed", range(5))
def test_mistake_bound_on_random_separable_data(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 3, generator=g)
    w_star, b_star = torch.randn(3, generator=g), 0.3
    z = X @ w_star + b_star
    keep = z.abs() > 0.3  # leave a margin
    X, y = X[keep], (z[keep] > 0).float()
    bound = P.mistake_bound(X, y, w_star, b_star)
    for lr in (0.5, 1.0, 2.0):
        result = P.train_perceptron(X, y, lr=lr, epochs=10_000)
        assert result.converged
        assert sum(result.mistakes) <= bound
        assert P.count_errors(result.perceptron, X, y) == 0


def test_predict_matches_an_independent_formula() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randint(-3, 4, (50, 4), generator=g).float()
    w = torch.randint(-3, 4, (4,), generator=g).float()
    p = P.Perceptron(w, 1.0)
    expected = [classify_by_hand(w.tolist(), 1.0, tuple(row)) for row in X.tolist()]
    assert p.predict(X).tolist() == expected
    assert float(p.predict(X[0])) == expected[0]
    assert p.weighted_sum(X).tolist() == (X @ w + 1.0).tolist()


# ------------------------------------------------------------------------------------------
# Gates and the two-layer XOR network
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["and", "or", "nand", "xor"])
def test_gate_datasets(gate: str) -> None:
    X, y = P.gate_dataset(gate.upper())
    assert X.tolist() == [list(map(float, x)) for x in GATE_INPUTS]
    assert y.tolist() == TRUTH[gate]


@pytest.mark.parametrize("gate", ["and", "or", "nand"])
def test_hand_set_gates(gate: str) -> None:
    X, y = P.gate_dataset(gate)
    assert P.gate_perceptron(gate).predict(X).tolist() == TRUTH[gate]
    assert P.count_errors(P.gate_perceptron(gate), X, y) == 0


def test_xor_network_truth_table() -> None:
    X, y = P.gate_dataset("xor")
    inputs, hidden, out = P.network_activations(P.xor_network(), X)
    assert torch.equal(inputs, X)
    # hidden units: OR and NAND of the inputs
    assert hidden.tolist() == [[0, 1], [1, 1], [1, 1], [1, 0]]
    assert out.shape == (4, 1)
    assert P.network_predict(P.xor_network(), X).tolist() == TRUTH["xor"]
    assert P.count_errors(P.xor_network(), X, y) == 0


def test_network_with_several_outputs() -> None:
    X, _ = P.gate_dataset("and")
    layer = [P.gate_perceptron(name) for name in ("and", "or", "nand")]
    out = P.network_predict([layer], X)
    assert out.shape == (4, 3)
    assert out.T.tolist() == [TRUTH["and"], TRUTH["or"], TRUTH["nand"]]


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_bad_input_raises_value_error() -> None:
    X, y = P.gate_dataset("and")
    cases = [
        (lambda: P.movie_decision(2, 0, 0), "weather must be 0"),
        (lambda: P.movie_decision(1, 0.5, 0), "price must be 0"),
        (lambda: P.movie_decision(1, 0, 0, weights=(8, 4)), "3 weights"),
        (lambda: P.train_perceptron(X, [0, 0, 2, 1]), "labels must be 0 or 1"),
        (lambda: P.train_perceptron(X, y[:3]), "shape"),
        (lambda: P.train_perceptron(torch.zeros(0, 2), []), "empty"),
        (lambda: P.train_perceptron(torch.zeros(4), y), "2-D"),
        (lambda: P.train_perceptron(X, y, lr=0.0), "learning rate"),
        (lambda: P.train_perceptron(X, y, epochs=0), "epochs"),
        (lambda: P.train_perceptron([[0, float("nan")]], [1]), "NaN"),
        (lambda: P.train_perceptron([["a", "b"]], [1]), "matrix of numbers"),
        (lambda: P.Perceptron(torch.zeros(2, 2)), "1-D"),
        (lambda: P.Perceptron(torch.zeros(2), float("inf")), "finite"),
        (lambda: P.Perceptron.zeros(0), "at least one input"),
        (lambda: P.Perceptron.zeros(3).predict(X), "3 inputs"),
        (lambda: P.Perceptron.zeros(2).update(X, 1.0), "one sample"),
        (lambda: P.Perceptron.zeros(2).update(X[0], 0.5), "label must be 0 or 1"),
        (lambda: P.train_epoch(P.Perceptron.zeros(3), X, y), "3 inputs"),
        (lambda: P.gate_dataset("nor"), "unknown gate"),
        (lambda: P.gate_perceptron("xor"), "no single perceptron"),
        (lambda: P.network_predict([], X), "at least one layer"),
        (lambda: P.network_predict([[P.Perceptron.zeros(3)]], X), "layer 1"),
        (lambda: P.mistake_bound(X, y, [1.0], 0.0), "weights"),
        (lambda: P.plot_decision_boundary(P.Perceptron.zeros(3), torch.eye(3), y[:3]), "two"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ------------------------------------------------------------------------------------------
# Figures and the command line
# ------------------------------------------------------------------------------------------


def test_figures() -> None:
    X, y = P.gate_dataset("xor")
    result = P.train_perceptron(X, y, epochs=5)
    for model in (result.perceptron, P.xor_network(), P.Perceptron.zeros(2)):
        fig = P.plot_decision_boundary(model, X, y, title="xor")
        assert isinstance(fig, Figure)
        close(fig)
    fig = P.plot_mistakes({"xor": result.mistakes, "and": [1, 3, 3, 2, 1, 0]})
    assert fig.axes[0].get_xlabel() == "epoch"
    close(fig)


def test_cli_movie(capsys: pytest.CaptureFixture[str]) -> None:
    assert P.main(["--movie"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | 1 | 0 | 12 | yes | go |" in out
    assert P.main(["--movie", "--threshold", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["decision"] for row in report["rows"]] == [0, 0, 0, 0, 0, 0, 0, 1]


def test_cli_gate(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    png = tmp_path / "plots" / "and.png"
    assert P.main(["--gate", "and", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "converged after 6 epochs" in out and "epoch   2: 3 mistakes" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert P.main(["--gate", "xor", "--epochs", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["converged"] is False and len(report["mistakes"]) == 12

    assert P.main(["--gate", "nand", "--seed", "3", "--lr", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["converged"] is True and report["predictions"] == TRUTH["nand"]


def test_cli_xor_network(capsys: pytest.CaptureFixture[str]) -> None:
    assert P.main(["--xor-network", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["output"] for row in rows] == TRUTH["xor"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--movie", "--gate", "and"],
        ["--movie", "--plot", "x.png"],
        ["--gate", "and", "--lr", "0"],
    ],
)
def test_cli_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        P.main(argv)
    assert exit_info.value.code == 2


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        P.main(["--help"])
    assert exit_info.value.code == 0
    assert "--gate" in capsys.readouterr().out
