"""Tests of `llmcourse.mlp`, `llmcourse.datasets2d` and `llmcourse.playground`."""

from __future__ import annotations

import builtins
import json
import math

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from llmcourse import datasets2d as D
from llmcourse import mlp as M
from llmcourse import playground as P
from llmcourse.plots import close

# ------------------------------------------------------------------------------------------
# Data sets and features
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.DATASETS)
def test_datasets_shapes_balance_and_seeds(name: str) -> None:
    X, y = D.make_dataset(name, 301, seed=3)
    assert X.shape == (301, 2) and y.shape == (301,)
    assert X.dtype == y.dtype == torch.float32
    assert int(y.sum()) == 151 and set(y.tolist()) == {0.0, 1.0}
    assert torch.equal(X, D.make_dataset(name, 301, seed=3)[0])
    assert not torch.equal(X, D.make_dataset(name, 301, seed=4)[0])
    assert X.abs().max() < 1.5


def test_dataset_geometry() -> None:
    X, y = D.make_dataset("xor", 400)
    assert torch.equal(y, (X[:, 0] * X[:, 1] < 0).float())  # label 1: the signs differ
    X, y = D.make_dataset("circles", 400)
    radius = X.norm(dim=1)
    assert radius[y == 1].max() < 0.45 and radius[y == 0].min() > 0.65
    X, y = D.make_dataset("spiral", 400)
    # each point is at radius r = 0.05 + 0.9 t and angle 3.5 pi t (+ pi for class 1)
    t = (X.norm(dim=1) - 0.05) / 0.9
    assert t.min() >= -1e-6 and t.max() <= 1 + 1e-6
    angle = torch.atan2(X[:, 1], X[:, 0])
    expected = 3.5 * math.pi * t + math.pi * y
    gap = torch.remainder(angle - expected + math.pi, 2 * math.pi) - math.pi
    assert gap.abs().max() < 1e-4
    X, y = D.xor_gate()
    assert y.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_featurize() -> None:
    X = torch.tensor([[0.5, -1.0], [0.0, 0.25]])
    out = D.featurize(X, ["x1", "x2", "x1^2", "x2^2", "x1*x2", "sin(x1)", "sin(x2)"])
    expected = [
        [0.5, -1.0, 0.25, 1.0, -0.5, 1.0, 0.0],
        [0.0, 0.25, 0.0, 0.0625, 0.0, 0.0, math.sin(math.pi / 4)],
    ]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-6)


def test_dataset_bad_input() -> None:
    cases = [
        (lambda: D.make_dataset("moons"), "unknown data set"),
        (lambda: D.make_dataset("xor", 1), "at least 2"),
        (lambda: D.make_dataset("xor", noise=-0.1), "noise"),
        (lambda: D.featurize(torch.zeros(3, 3)), r"\(n, 2\)"),
        (lambda: D.featurize(torch.zeros(3, 2), []), "at least one"),
        (lambda: D.featurize(torch.zeros(3, 2), ["x3"]), "unknown feature"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ------------------------------------------------------------------------------------------
# The MLP and its initialization
# ------------------------------------------------------------------------------------------


def test_mlp_forward_is_the_formula() -> None:
    torch.manual_seed(0)
    model = M.MLP(3, [5, 4], "tanh")
    x = torch.randn(6, 3)
    h = x
    for k, layer in enumerate(model.linears):
        h = h @ layer.weight.T + layer.bias
        if k < 2:
            h = torch.tanh(h)
    assert torch.allclose(model(x), h[:, 0], atol=1e-6)
    assert model(x).shape == (6,)
    assert M.MLP(3, [4], out_features=3)(x).shape == (6, 3)
    assert len(M.MLP(2, [], "relu").linears) == 1  # no hidden layer: logistic regression
    with_dropout = M.MLP(2, [4, 4], dropout=0.5)
    assert sum(isinstance(m, torch.nn.Dropout) for m in with_dropout.net) == 2


@pytest.mark.parametrize(("scheme", "std"), [("he", math.sqrt(2 / 400)), ("xavier", 0.05)])
def test_init_variances(scheme: str, std: float) -> None:
    model = M.MLP(400, [400], init=scheme)  # xavier: sqrt(2 / (400 + 400)) = 0.05
    w = model.linears[0].weight.detach()
    assert abs(float(w.std()) / std - 1) < 0.02  # 160 000 draws
    assert not model.linears[0].bias.detach().any()


def test_zero_init_never_breaks_symmetry() -> None:
    X, y = D.make_dataset("circles", 100)
    model = M.MLP(2, [6], "sigmoid", init="zeros")
    M.fit(model, X, y, steps=30, lr=0.1, optimizer="sgd")
    w = model.linears[0].weight
    assert torch.allclose(w, w[0].expand_as(w))  # every hidden unit is still the same


def test_gradient_norms_agree_with_autograd() -> None:
    torch.manual_seed(0)
    model = M.MLP(2, [8, 8], "relu")
    X, y = D.make_dataset("spiral", 64)
    loss = F.binary_cross_entropy_with_logits(model(X), y)
    weights = [layer.weight for layer in model.linears]
    expected = [float(g.norm()) for g in torch.autograd.grad(loss, weights)]
    assert M.gradient_norms(model, X, y) == pytest.approx(expected, rel=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_vanishing_gradients_sigmoid_vs_he_relu() -> None:
    X, y = D.make_dataset("spiral", 128)
    torch.manual_seed(0)
    sigmoid = M.gradient_norms(M.MLP(2, [32] * 8, "sigmoid", init="xavier"), X, y)
    torch.manual_seed(0)
    relu = M.gradient_norms(M.MLP(2, [32] * 8, "relu", init="he"), X, y)
    assert sigmoid[0] / sigmoid[-1] < 1e-4  # the first layer's gradient has all but vanished
    assert 0.01 < relu[0] / relu[-1] < 10
    torch.manual_seed(0)
    normalized = M.gradient_norms(M.MLP(2, [32] * 8, "sigmoid", init="xavier", norm="batch"), X, y)
    assert normalized[0] / normalized[-1] > 0.01  # batch norm keeps the sigmoid net's gradients


def test_normalization_layers() -> None:
    for norm, kind in (("layer", torch.nn.LayerNorm), ("batch", torch.nn.BatchNorm1d)):
        model = M.MLP(2, [4, 3], norm=norm)
        found = [m for m in model.net if isinstance(m, kind)]
        assert [m.num_features if norm == "batch" else m.normalized_shape[0] for m in found] == [
            4, 3
        ]  # fmt: skip
        assert model(torch.randn(5, 2)).shape == (5,)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def test_fit_learns_xor_and_records_history(tmp_path) -> None:
    X, y = D.make_dataset("xor", 200, seed=0)
    Xv, yv = D.make_dataset("xor", 200, seed=1)
    torch.manual_seed(0)
    model = M.MLP(2, [8], "tanh")
    result = M.fit(model, X, y, steps=300, lr=0.05, X_val=Xv, y_val=yv, eval_every=100,
                   metrics_path=tmp_path / "m.csv")  # fmt: skip
    assert result.final["val_acc"] >= 0.95
    assert result.eval_steps == [100, 200, 300]
    assert len(result.history["train_loss"]) == 300 and len(result.history["val_acc"]) == 3
    assert result.history["train_loss"][-1] < 0.5 * result.history["train_loss"][0]
    assert (tmp_path / "m.csv").read_text().startswith("step,train_loss")


def test_features_let_a_single_neuron_separate_circles() -> None:
    X, y = D.make_dataset("circles", 200)
    linear = M.fit(M.MLP(2, [], "linear"), X, y, steps=200, lr=0.1, eval_every=200)
    squares = D.featurize(X, ["x1^2", "x2^2"])
    helped = M.fit(M.MLP(2, [], "linear"), squares, y, steps=200, lr=0.1, eval_every=200)
    assert linear.final["train_acc"] < 0.75  # no straight line separates a disc from a ring
    assert helped.final["train_acc"] == 1.0


def test_weight_decay_shrinks_weights() -> None:
    X, y = D.make_dataset("gauss", 100)
    norms = {}
    for wd in (0.0, 0.1):
        torch.manual_seed(0)
        model = M.MLP(2, [16], "relu")
        M.fit(model, X, y, steps=200, lr=0.05, optimizer="adamw", weight_decay=wd)
        norms[wd] = sum(float(layer.weight.detach().norm()) for layer in model.linears)
    assert norms[0.1] < 0.8 * norms[0.0]


def test_minibatches_and_accuracy() -> None:
    X, y = D.make_dataset("gauss", 200)
    torch.manual_seed(0)
    model = M.MLP(2, [4])
    result = M.fit(model, X, y, steps=100, lr=0.05, batch_size=16, optimizer="momentum")
    assert result.final["train_acc"] == M.accuracy(model, X, y) >= 0.95
    assert model.training  # accuracy() puts the mode back


# ------------------------------------------------------------------------------------------
# The scalar-engine MLP
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_scalar_mlp_matches_torch(activation: str) -> None:
    torch.manual_seed(1)
    model = M.MLP(2, [5, 3], activation).double()
    scalar = M.ScalarMLP.from_torch(model)
    X, y = D.make_dataset("spiral", 12)
    X = X.double()
    logits = model(X)
    for point, logit in zip(X.tolist(), logits.tolist(), strict=True):
        assert scalar(point).data == pytest.approx(logit, abs=1e-12)
    loss = scalar.loss(X.tolist(), y.tolist())
    loss.backward()
    reference = F.binary_cross_entropy_with_logits(logits, y.double())
    reference.backward()
    assert loss.data == pytest.approx(reference.item(), abs=1e-12)
    ours = [p.grad for p in scalar.parameters()]
    theirs = []
    for layer in model.linears:
        for row, b in zip(layer.weight.grad.tolist(), layer.bias.grad.tolist(), strict=True):
            theirs.extend([*row, b])
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_scalar_mlp_solves_xor() -> None:
    X, y = D.xor_gate()
    model = M.ScalarMLP([2, 4, 1], "tanh", seed=1)
    history = M.train_scalar(model, X.tolist(), y.tolist(), steps=300, lr=0.5)
    assert model.predict(X.tolist()) == [0, 1, 1, 0]
    assert history[-1] < 0.1 < history[0]


def test_scalar_loss_is_stable_for_large_logits() -> None:
    model = M.ScalarMLP([1, 1], "tanh")
    model.layers[0][0][0][0].data = 1000.0  # logit = 1000 x
    loss = model.loss([[1.0], [-1.0]], [0.0, 1.0])  # two confident mistakes: loss 1000
    assert loss.data == pytest.approx(1000.0)


# ------------------------------------------------------------------------------------------
# Figures, playground, command lines, bad input
# ------------------------------------------------------------------------------------------


def test_figures_and_playground() -> None:
    X, y = D.make_dataset("circles", 60)
    fig = M.plot_decision_boundary(M.MLP(4, [3]), X, y, ["x1", "x2", "x1^2", "x2^2"], resolution=20)
    assert isinstance(fig, Figure)
    close(fig)
    close(M.plot_gradient_norms({"a": [1e-3, 1e-2]}))
    run = P.run_playground(dataset="gauss", n=60, hidden=[4], steps=30)
    assert run.knobs.hidden == (4,) and run.X_train.shape == (60, 2)
    assert 0 <= run.test_accuracy <= 1 and len(run.result.history["val_acc"]) == 30
    close(P.plot_playground(run))
    with pytest.raises(ValueError, match="unknown knob"):
        P.run_playground(layers=3)


def test_interactive_playground_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # ipywidgets is optional for learners but always installed with the dev extra (nbgrader)
    shown = []
    monkeypatch.setattr(P.plt, "show", lambda: shown.append(P.plt.gcf()))
    panel = P.interactive_playground(dataset="gauss", n=30, hidden=(3,), steps=10)
    assert not shown  # nothing runs before "Run" is pressed
    panel.update()  # what the button does
    assert len(shown) == 1 and "gauss" in shown[0].axes[1].get_title()
    close(shown[0])


def test_interactive_playground_needs_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_widgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ModuleNotFoundError("No module named 'ipywidgets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_widgets)
    with pytest.raises(ModuleNotFoundError, match="pip install ipywidgets"):
        P.interactive_playground()


def test_cli(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "b.png"
    argv = ["--dataset", "gauss", "-n", "50", "--hidden", "4", "--steps", "40", "--json"]
    assert M.main([*argv, "--plot", str(png), "--checkpoint", str(tmp_path / "m.pt")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 40 and 0 <= report["val_acc"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "m.pt").is_file()
    assert M.main(["--gradient-norms", "--hidden", "8", "8", "--activation", "sigmoid"]) == 0
    assert capsys.readouterr().out.count("layer") == 3
    assert P.main(["--dataset", "gauss", "-n", "40", "--steps", "20", "--plot", str(png)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert D.main(["--dataset", "xor", "--plot", str(png)]) == 0
    for bad in (["--steps", "-1"], ["--dropout", "1.5"], ["--activation", "swish"]):
        with pytest.raises(SystemExit):
            M.main(bad)


def test_bad_input() -> None:
    X, y = D.make_dataset("gauss", 20)
    cases = [
        (lambda: M.MLP(2, [4], "swish"), "unknown activation"),
        (lambda: M.MLP(2, [0]), "positive integers"),
        (lambda: M.MLP(2, [4], dropout=1.0), "dropout"),
        (lambda: M.MLP(2, [4], init="orthogonal"), "unknown init"),
        (lambda: M.MLP(2, [4], norm="group"), "unknown norm"),
        (lambda: M.ScalarMLP.from_torch(M.MLP(2, [3], "tanh", norm="layer")), "plain MLP"),
        (lambda: M.MLP(2, [4])(torch.zeros(3, 5)), r"\(n, 2\)"),
        (lambda: M.fit(M.MLP(2), X, y[:5]), "shape"),
        (lambda: M.fit(M.MLP(2), X[:0], y[:0]), "non-empty"),
        (lambda: M.fit(M.MLP(2), X, y, X_val=X), "both"),
        (lambda: M.fit(M.MLP(2), X, y, batch_size=0), "batch_size"),
        (lambda: M.ScalarMLP([2, 3], "gelu"), "supports"),
        (lambda: M.ScalarMLP([2]), "at least two"),
        (lambda: M.ScalarMLP([2, 1])([1.0]), "2 inputs"),
        (lambda: M.ScalarMLP.from_torch(M.MLP(2, [3], "gelu")), "no 'gelu'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
