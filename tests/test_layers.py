"""Tests of `llmcourse.layers` against `torch.nn` and `torch.nn.functional`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse import layers as L


def rand(*shape: int, seed: int = 0, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


def test_dense_matches_linear_with_gradients() -> None:
    x, w, b = rand(4, 5, 7, grad=True), rand(3, 7, seed=1, grad=True), rand(3, seed=2, grad=True)
    ours = L.dense(x, w, b)
    theirs = F.linear(x, w, b)
    assert torch.allclose(ours, theirs, atol=1e-12)
    grads = torch.autograd.grad(ours.sum(), (x, w, b))
    expected = torch.autograd.grad(theirs.sum(), (x, w, b))
    for a, e in zip(grads, expected, strict=True):
        assert torch.allclose(a, e, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding"),
    [
        ((2, 3, 8, 8), (4, 3, 3, 3), 1, 0),
        ((1, 1, 5, 7), (2, 1, 2, 3), 2, 1),
        ((3, 2, 9, 6), (5, 2, 3, 1), (2, 1), (0, 2)),
        ((1, 4, 3, 3), (1, 4, 3, 3), 1, 0),  # the kernel covers the whole image
    ],
)
def test_conv2d_matches_torch(shape, kernel, stride, padding) -> None:
    x, w, b = rand(*shape, grad=True), rand(*kernel, seed=1, grad=True), rand(kernel[0], seed=2)
    ours = L.conv2d(x, w, b, stride=stride, padding=padding)
    theirs = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-10)
    g_ours = torch.autograd.grad((ours**2).sum(), (x, w))
    g_theirs = torch.autograd.grad((theirs**2).sum(), (x, w))
    for a, e in zip(g_ours, g_theirs, strict=True):
        assert torch.allclose(a, e, atol=1e-9)
    assert torch.allclose(L.conv2d(x, w), F.conv2d(x, w), atol=1e-10)  # no bias


def test_conv2d_detects_a_pattern_anywhere() -> None:
    # a vertical-edge kernel responds where the edge is, wherever that is
    image = torch.zeros(1, 1, 5, 6)
    image[..., 3:] = 1.0
    kernel = torch.tensor([[[[-1.0, 1.0]]]])
    out = L.conv2d(image, kernel)
    assert out[0, 0].tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0]] * 5


@pytest.mark.parametrize(("kernel", "stride"), [(2, None), (3, 1), ((2, 3), (1, 2)), (3, 2)])
def test_pooling_matches_torch(kernel, stride) -> None:
    x = rand(2, 3, 7, 8)
    assert torch.equal(L.max_pool2d(x, kernel, stride), F.max_pool2d(x, kernel, stride))
    assert torch.allclose(L.avg_pool2d(x, kernel, stride), F.avg_pool2d(x, kernel, stride))


def test_rnn_matches_torch_rnn() -> None:
    torch.manual_seed(0)
    reference = torch.nn.RNN(3, 5, dtype=torch.float64)
    xs, h0 = rand(7, 2, 3), rand(1, 2, 5, seed=1)
    weights = (
        reference.weight_ih_l0,
        reference.weight_hh_l0,
        reference.bias_ih_l0,
        reference.bias_hh_l0,
    )
    states, last = L.rnn(xs, h0[0], *weights)
    expected_states, expected_last = reference(xs, h0)
    assert torch.allclose(states, expected_states, atol=1e-12)
    assert torch.allclose(last, expected_last[0], atol=1e-12)
    cell = torch.nn.RNNCell(3, 5, dtype=torch.float64)
    params = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert torch.allclose(L.rnn_cell(xs[0], h0[0], *params), cell(xs[0], h0[0]), atol=1e-12)


def test_dropout() -> None:
    x = torch.ones(200, 500)
    g = torch.Generator().manual_seed(0)
    out = L.dropout(x, 0.3, training=True, generator=g)
    zero_fraction = float((out == 0).float().mean())
    assert abs(zero_fraction - 0.3) < 0.01  # 100 000 draws: the std of the fraction is 0.0015
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.7))
    assert abs(float(out.mean()) - 1.0) < 0.02  # the expected value is kept
    assert L.dropout(x, 0.3, training=False) is x
    assert L.dropout(x, 0.0) is x
    again = L.dropout(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    # the same statistics as PyTorch's own dropout
    theirs = F.dropout(x, 0.3, training=True)
    assert abs(float((theirs == 0).float().mean()) - zero_fraction) < 0.02
    assert set(theirs.unique().tolist()) == set(out.unique().tolist())


@pytest.mark.parametrize("shape", [(16, 5), (4, 5, 3, 2)])
def test_batch_norm_matches_torch(shape) -> None:
    x = rand(*shape) * 3 + 1
    gamma, beta = rand(5, seed=1), rand(5, seed=2)
    ours_mean, ours_var = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    th_mean, th_var = ours_mean.clone(), ours_var.clone()
    ours = L.batch_norm(x, gamma, beta, ours_mean, ours_var, training=True, momentum=0.2)
    theirs = F.batch_norm(x, th_mean, th_var, gamma, beta, training=True, momentum=0.2)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert torch.allclose(ours_mean, th_mean, atol=1e-12)
    assert torch.allclose(ours_var, th_var, atol=1e-12)  # unbiased variance, as torch
    y = rand(*shape, seed=3)
    assert torch.allclose(
        L.batch_norm(y, gamma, beta, ours_mean, ours_var, training=False),
        F.batch_norm(y, th_mean, th_var, gamma, beta, training=False),
        atol=1e-12,
    )
    plain = L.batch_norm(x)  # no affine: each feature has mean 0 and (biased) variance 1
    dims = (0,) if len(shape) == 2 else (0, 2, 3)
    assert torch.allclose(plain.mean(dim=dims), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(plain.var(dim=dims, unbiased=False), torch.ones(5, dtype=torch.float64))


def test_layer_norm_matches_torch() -> None:
    x, gamma, beta = rand(3, 4, 6, grad=True), rand(6, seed=1), rand(6, seed=2)
    ours, theirs = L.layer_norm(x, gamma, beta), F.layer_norm(x, (6,), gamma, beta)
    assert torch.allclose(ours, theirs, atol=1e-12)
    g1 = torch.autograd.grad((ours**3).sum(), x)[0]
    g2 = torch.autograd.grad((theirs**3).sum(), x)[0]
    assert torch.allclose(g1, g2, atol=1e-10)


def test_compare_with_torch_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    gaps = L.compare_with_torch()
    assert set(gaps) == {"dense", "conv2d", "max_pool2d", "avg_pool2d", "rnn", "batch_norm",
                         "layer_norm"}  # fmt: skip
    assert max(gaps.values()) < 1e-12
    assert L.main([]) == 0
    assert "conv2d" in capsys.readouterr().out


def test_bad_input() -> None:
    x = rand(1, 3, 5, 5)
    cases = [
        (lambda: L.conv2d(rand(3, 5, 5), rand(2, 3, 3, 3)), "4-D"),
        (lambda: L.conv2d(x, rand(2, 4, 3, 3)), "3 channels"),
        (lambda: L.conv2d(x, rand(2, 3, 6, 6)), "does not fit"),
        (lambda: L.conv2d(x, rand(2, 3, 3, 3), stride=0), "positive"),
        (lambda: L.conv2d(x, rand(2, 3, 3, 3), padding=-1), "padding"),
        (lambda: L.conv2d(x, rand(2, 3, 3, 3), rand(3)), "bias"),
        (lambda: L.max_pool2d(rand(4), 2), "height and width"),
        (lambda: L.dense(rand(2, 4), rand(3, 5)), "4 features"),
        (lambda: L.rnn(rand(0, 2, 3), rand(2, 4), rand(4, 3), rand(4, 4)), "empty"),
        (lambda: L.rnn_cell(rand(2, 3), rand(2, 4), rand(4, 3), rand(4, 5)), "square"),
        (lambda: L.dropout(x, 1.0), r"\[0, 1\)"),
        (lambda: L.batch_norm(rand(1, 5)), "more than one value"),
        (lambda: L.batch_norm(rand(3, 5), training=False), "running_mean"),
        (lambda: L.batch_norm(rand(3, 5, 2)), "batch, features"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
