"""GPTQ: round a weight matrix column by column, pushing each rounding error onto the columns
not yet rounded, weighted by what the calibration inputs say about them (Frantar et al., 2022).

Round-to-nearest (RTN) minimises the error of each weight alone. What matters is the layer's
output on real inputs: for inputs ``X`` (n, in) and a rounded weight ``W'``, the error is

    E(W') = || X W^T - X W'^T ||^2 = sum over rows r of (w_r - w'_r) H (w_r - w'_r)^T,
    H = X^T X  (in, in),

the same quadratic form for every output row, so one ``H`` serves the whole matrix. Optimal
Brain Quantization rounds one input column ``q`` and then moves the columns not yet rounded to
compensate, which is the least-squares optimum given ``H``:

    err = (w_q - round(w_q)) / [H^-1]_qq,      w_rest -= err * [H^-1]_(q, rest),

after which column ``q`` is removed from the problem (``H^-1`` updated by one Gaussian
elimination step). GPTQ's three changes make it fast and stable:

1. every row uses the same column order (left to right), so all rows share one sequence of
   inverse Hessians, and the rows of that sequence are exactly the rows of the upper Cholesky
   factor ``U`` of ``H^-1`` (``H^-1 = U^T U``): ``w_rest -= err * U[q, rest] / U[q, q]`` with
   ``err = w_q - round(w_q)``; this module writes ``err / U[q, q]`` and ``U[q, rest]``;
2. *lazy batches*: the updates are applied inside a block of 128 columns at once, and to the
   columns after the block only when it is done (one matrix product instead of 128);
3. *dampening*: ``lambda = 1 %`` of the mean of ``H``'s diagonal is added to it, so that the
   Cholesky factorisation exists even when some inputs are (nearly) constant.

With groups, a group's scale and zero are chosen when its first column is reached, from the
weights as updated so far. If ``H`` is diagonal (independent inputs) nothing is pushed anywhere
and GPTQ is RTN. ``H`` is averaged over the calibration tokens (the scale does not matter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .qlinear import QuantSpec
from .quantize import absmax_round, absmax_scale, zeropoint_params, zeropoint_round

BLOCK_SIZE = 128
DAMPING = 0.01


class HessianAccumulator:
    """Running ``H = mean over tokens of x x^T`` of a layer's inputs ``x`` (..., in)."""

    def __init__(self, in_features: int) -> None:
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        self.sum += x.T @ x
        self.count += x.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        if not self.count:
            raise ValueError("no calibration inputs were seen: the Hessian is undefined")
        return self.sum / self.count


def _params(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero) of a block of columns ``w`` (out, k): one per row, or one in all
    when ``spec.per_tensor``; the same formulas as round-to-nearest."""
    lo = w.amin() if spec.per_tensor else w.amin(dim=1)
    hi = w.amax() if spec.per_tensor else w.amax(dim=1)
    if spec.symmetric:
        return absmax_scale(torch.maximum(lo.abs(), hi.abs()), spec.bits), None
    return zeropoint_params(lo, hi, spec.bits)


def _round(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers, dequantized values) of one column."""
    if zero is None:
        q = absmax_round(w, scale, spec.bits)
        return q, q.float() * scale
    q = zeropoint_round(w, scale, zero, spec.bits)
    return q, (q.float() - zero) * scale


def inverse_hessian_factor(hessian: torch.Tensor, damping: float = DAMPING) -> torch.Tensor:
    """The upper Cholesky factor ``U`` of ``(H + lambda I)^-1``, ``lambda = damping *
    mean(diag H)``, in float64. A ``torch.linalg.LinAlgError`` becomes a ``ValueError``."""
    h = hessian.double().clone()
    h.diagonal().add_(damping * h.diagonal().mean().clamp(min=1e-12))
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError as err:
        raise ValueError(f"the damped Hessian is not positive definite: {err}") from err


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    spec: QuantSpec,
    block_size: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GPTQ of ``weight`` (out, in) against ``hessian`` (in, in): ``(q, scale, zero)`` laid out
    as ``qlinear.quantize_weight`` lays out round-to-nearest's (module docstring)."""
    out_features, in_features = weight.shape
    if hessian.shape != (in_features, in_features):
        raise ValueError(
            f"the Hessian is {tuple(hessian.shape)}, expected ({in_features}, {in_features})"
        )
    n_groups = spec.n_groups(in_features)
    group = in_features // n_groups
    w = weight.detach().float().clone()
    hessian = hessian.double().clone()
    dead = hessian.diagonal() == 0  # inputs that were always 0: their weights do not matter
    hessian[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = inverse_hessian_factor(hessian, damping).float()

    q = torch.zeros(out_features, in_features, dtype=torch.int8 if spec.symmetric else torch.uint8)
    rows = 1 if spec.per_tensor else out_features
    scales = torch.zeros(rows, n_groups)
    zeros = None if spec.symmetric else torch.zeros(rows, n_groups, dtype=torch.uint8)
    scale, zero = _params(w, spec)  # per tensor or per row: fixed from the start
    if spec.group_size is not None:
        block_size = group * max(1, block_size // group)  # a group never straddles two blocks
    for start in range(0, in_features, block_size):
        end = min(start + block_size, in_features)
        block, errors, u_block = w[:, start:end].clone(), torch.zeros_like(w[:, start:end]), \
            u[start:end, start:end]  # fmt: skip
        for j in range(end - start):
            col = start + j
            if spec.group_size is not None and col % group == 0:
                scale, zero = _params(block[:, j : j + group], spec)
            if col % group == 0:
                scales[:, col // group] = scale
                if zeros is not None:
                    zeros[:, col // group] = zero.to(torch.uint8)
            q[:, col], rounded = _round(block[:, j], scale, zero, spec)
            err = (block[:, j] - rounded) / u_block[j, j]
            block[:, j:] -= err[:, None] * u_block[j, j:][None, :]
            errors[:, j] = err
        w[:, end:] -= errors @ u[start:end, end:]
    return q, scales, zeros


@dataclass(frozen=True)
class CalibrationConfig:
    """The calibration set: ``windows`` windows of ``seq_len`` training ids drawn with ``seed``
    (the GPTQ paper uses 128 windows of 2048 tokens; 64 of 128 cover the tiny model's inputs)."""

    windows: int = 64
    seq_len: int = 128
    seed: int = 0


def calibration_windows(
    ids: torch.Tensor, n_windows: int = 64, seq_len: int = 128, seed: int = 0
) -> torch.Tensor:
    """``n_windows`` windows of ``seq_len`` ids (n_windows, seq_len) at random offsets of the
    training stream ``ids`` (seeded), the calibration set of GPTQ and of outlier detection."""
    if ids.dim() != 1 or len(ids) <= seq_len:
        raise ValueError(f"need a 1-D stream longer than seq_len={seq_len}, got {tuple(ids.shape)}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seq_len, (n_windows,), generator=gen)
    return ids[starts[:, None] + torch.arange(seq_len)].long()
