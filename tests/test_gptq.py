"""GPTQ (llmcourse.compress.gptq): RTN when the Hessian is diagonal, the least-squares update
checked by hand on two columns, lower layer-output error than RTN on correlated inputs, lazy
batches, dead inputs, and sequential GPTQ of a whole model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_gpt

from llmcourse.compress.gptq import (
    HessianAccumulator,
    calibration_windows,
    gptq_quantize,
    inverse_hessian_factor,
)
from llmcourse.compress.model import quantize_model
from llmcourse.compress.qlinear import QuantSpec, quantize_weight
from llmcourse.compress.quantize import groupwise_dequantize

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = [
    QuantSpec(bits=4, group_size=16, symmetric=False),
    QuantSpec(bits=3, symmetric=False),
    QuantSpec(bits=8),
    QuantSpec(bits=8, per_tensor=True),
]


def _weight(rows: int = 24, cols: int = 64, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def _correlated_inputs(n: int = 512, cols: int = 64, seed: int = 1) -> torch.Tensor:
    """Inputs driven by 8 hidden factors plus a little noise: strongly correlated columns."""
    gen = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, 8, generator=gen) @ torch.randn(8, cols, generator=gen)
    return factors + 0.1 * torch.randn(n, cols, generator=gen)


def _output_error(x: torch.Tensor, w: torch.Tensor, q, scale, zero) -> float:
    return (x @ (w - groupwise_dequantize(q, scale, zero)).T).square().sum().item()


@pytest.mark.parametrize("spec", SPECS)
def test_diagonal_hessian_gives_round_to_nearest(spec: QuantSpec) -> None:
    w = _weight()
    scales = torch.rand(64, generator=torch.Generator().manual_seed(3)) + 0.1
    hessian = torch.diag(scales)  # independent inputs: no error is pushed anywhere
    q, scale, zero = gptq_quantize(w, hessian, spec)
    q_rtn, scale_rtn, zero_rtn = quantize_weight(w, spec)
    assert torch.equal(q, q_rtn) and torch.equal(scale, scale_rtn)
    assert (zero is None and zero_rtn is None) or torch.equal(zero, zero_rtn)


def test_two_columns_update_is_least_squares() -> None:
    """After column 0 is rounded, column 1 becomes the least-squares best answer to
    || X_0 (w_0 - q_0) + X_1 (w_1 - v) ||, i.e. v = w_1 + (X_1.X_0 / X_1.X_1)(w_0 - q_0),
    which is then rounded: an oracle that never mentions an inverse Hessian."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(200, 2, generator=gen) @ torch.tensor([[1.0, 0.8], [0.0, 0.6]])
    w = torch.randn(40, 2, generator=gen)
    spec = QuantSpec(bits=3, symmetric=False, per_tensor=True)  # one scale, known in advance
    q, scale, zero = gptq_quantize(w, x.T @ x / len(x), spec, damping=0.0)
    deq = groupwise_dequantize(q, scale, zero)
    v = w[:, 1] + (x[:, 1] @ x[:, 0]) / (x[:, 1] @ x[:, 1]) * (w[:, 0] - deq[:, 0])
    expected = (torch.round(v / scale) + zero).clamp(0, 7).flatten()
    assert torch.equal(q[:, 1].float(), expected.float())
    assert not torch.equal(q[:, 1], quantize_weight(w, spec)[0][:, 1])  # it did move


@pytest.mark.parametrize("spec", SPECS[:2])
def test_gptq_beats_rtn_on_correlated_inputs(spec: QuantSpec) -> None:
    w, x = _weight(), _correlated_inputs()
    q, scale, zero = gptq_quantize(w, x.T @ x / len(x), spec)
    gptq_error = _output_error(x, w, q, scale, zero)
    rtn_error = _output_error(x, w, *quantize_weight(w, spec))
    assert gptq_error < 0.5 * rtn_error
    # ... while its weights are further from the originals: it trades weight error for output
    assert (groupwise_dequantize(q, scale, zero) - w).square().sum() > (
        groupwise_dequantize(*quantize_weight(w, spec)) - w
    ).square().sum()


def test_lazy_batches_change_nothing() -> None:
    w, x = _weight(), _correlated_inputs()
    spec = QuantSpec(bits=4, group_size=16, symmetric=False)
    h = x.T @ x / len(x)
    wide = gptq_quantize(w, h, spec, block_size=64)
    narrow = gptq_quantize(w, h, spec, block_size=16)
    assert (wide[0] == narrow[0]).float().mean() > 0.99  # float order only: a rare tie flips
    assert torch.allclose(wide[1], narrow[1], rtol=1e-4)


def test_hessian_accumulator_and_factor() -> None:
    x = _correlated_inputs(100, 16)
    acc = HessianAccumulator(16)
    for chunk in x.reshape(4, 25, 16):
        acc.add(chunk)
    h = x.double().T @ x.double() / 100
    assert torch.allclose(acc.hessian, h)
    u = inverse_hessian_factor(h, damping=0.01)
    damped = h + 0.01 * h.diagonal().mean() * torch.eye(16, dtype=torch.float64)
    assert torch.allclose(u.T @ u, torch.linalg.inv(damped), rtol=1e-6, atol=1e-8)
    assert torch.equal(u, u.triu())
    with pytest.raises(ValueError, match="no calibration inputs"):
        _ = HessianAccumulator(4).hessian


def test_dead_inputs_and_bad_shapes() -> None:
    w, x = _weight(8, 16), _correlated_inputs(64, 16)
    x[:, 3] = 0.0  # an input that is always zero: its weights do not matter and become 0
    q, scale, zero = gptq_quantize(w, x.T @ x, QuantSpec(bits=4, symmetric=False))
    assert groupwise_dequantize(q, scale, zero)[:, 3].abs().max() == 0
    with pytest.raises(ValueError, match=r"Hessian is \(8, 8\), expected \(16, 16\)"):
        gptq_quantize(w, torch.eye(8), QuantSpec(bits=8))


def test_calibration_windows() -> None:
    ids = torch.arange(1000)
    windows = calibration_windows(ids, 12, 32, seed=5)
    assert windows.shape == (12, 32) and windows.dtype == torch.long
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(12, 31, dtype=torch.long))
    assert torch.equal(windows, calibration_windows(ids, 12, 32, seed=5))
    with pytest.raises(ValueError, match="longer than seq_len=32"):
        calibration_windows(ids[:20], 4, 32)


def test_sequential_gptq_of_a_model_beats_rtn() -> None:
    model = tiny_gpt(vocab=40, seed=1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (16, 32), generator=gen)
    calibration, held_out = ids[:12], ids[12:]
    with torch.no_grad():
        reference = model(held_out)
        errors = {
            method: (quantize_model(model, method, calibration)(held_out) - reference)
            .square()
            .mean()
            .item()
            for method in ("int3-rtn", "int3-gptq")
        }
    assert errors["int3-gptq"] < 0.8 * errors["int3-rtn"]
