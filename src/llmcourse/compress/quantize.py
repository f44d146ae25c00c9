"""Round-to-nearest quantization of a weight matrix: absmax, zero-point, groups, int4 packing.

A float tensor ``w`` becomes small integers ``q`` and a few float *scales* (and *zero points*);
``dequantize`` maps them back. Two schemes:

* **absmax** (symmetric): ``scale = max|w| / (2^(b-1) - 1)`` (``/127`` for int8),
  ``q = round(w / scale)`` in ``[-127, 127]``, ``w' = q * scale``. Zero stays exactly zero, but a
  range that is not centred on zero wastes half the levels on one side.
* **zero-point** (asymmetric, "affine"): ``scale = (max - min) / (2^b - 1)``,
  ``z = round(-min / scale)``, ``q = clamp(round(w / scale) + z, 0, 2^b - 1)``,
  ``w' = (q - z) * scale``. All ``2^b`` levels cover ``[min, max]``; ``min`` and ``max`` are
  first widened to include 0, so that ``z`` is itself one of the levels.

Worked example (int8 absmax): ``w = [0.5, -1.27, 0.02]``, ``scale = 1.27 / 127 = 0.01``,
``q = [50, -127, 2]``, ``w' = [0.50, -1.27, 0.02]``: exact here, off by at most ``scale / 2``
in general, since rounding moves a value by at most half a step.

Where the maximum is taken decides the error. *Per tensor*: one scale for the whole matrix, so
one large weight coarsens every row. *Per channel*: one scale per output row (``dim=1``
reduces over the inputs). *Group-wise*: one scale (and zero) per ``group_size`` consecutive
inputs of a row; with int4 this is what makes 16 levels usable (group 32-128).

Four-bit integers are stored two to a byte: ``pack_int4`` puts the even-indexed value in the
low nibble and the odd-indexed one in the high nibble; ``unpack_int4`` reverses it.
"""

from __future__ import annotations

import torch

_TINY = 1e-12  # a scale for an all-zero row or group: any positive number reproduces zeros


def qmax_symmetric(bits: int) -> int:
    """Largest integer of symmetric b-bit absmax quantization: ``2^(b-1) - 1`` (127 for 8)."""
    return 2 ** (bits - 1) - 1


def absmax_quantize(
    w: torch.Tensor, bits: int = 8, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` with ``scale = max|w| / (2^(b-1) - 1)`` and ``q = round(w / scale)``.

    ``dim=None``: one scale for the tensor (shape ``()`` broadcast as ``(1, ..., 1)``);
    ``dim=d``: the maximum over dimension ``d`` (kept as size 1), e.g. ``dim=1`` on a Linear's
    ``(out, in)`` weight gives one scale per output channel. ``q`` is int8 for ``bits <= 8``.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"absmax quantization takes 2 to 8 bits, got {bits}")
    w = w.float()
    amax = w.abs().amax() if dim is None else w.abs().amax(dim=dim, keepdim=True)
    if dim is None:
        amax = amax.reshape([1] * w.dim())
    scale = absmax_scale(amax, bits)
    return absmax_round(w, scale, bits), scale


def absmax_scale(amax: torch.Tensor, bits: int) -> torch.Tensor:
    """``max|w| / (2^(b-1) - 1)`` (a tiny positive number for an all-zero range)."""
    return amax.float().clamp(min=_TINY) / qmax_symmetric(bits)


def absmax_round(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """``clamp(round(w / scale), -(2^(b-1) - 1), 2^(b-1) - 1)`` as int8."""
    qmax = qmax_symmetric(bits)
    return torch.round(w.float() / scale).clamp(-qmax, qmax).to(torch.int8)


def zeropoint_params(
    lo: torch.Tensor, hi: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero)`` of b-bit zero-point quantization of the range ``[lo, hi]`` (widened to
    include 0): ``scale = (hi - lo) / (2^b - 1)``, ``zero = round(-lo / scale)``."""
    lo, hi = lo.float().clamp(max=0), hi.float().clamp(min=0)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=_TINY)
    zero = torch.round(-lo / scale).clamp(0, 2**bits - 1)
    return scale, zero


def zeropoint_round(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int
) -> torch.Tensor:
    """``clamp(round(w / scale) + zero, 0, 2^b - 1)`` as uint8 (the scales broadcast)."""
    return (torch.round(w.float() / scale) + zero).clamp(0, 2**bits - 1).to(torch.uint8)


def zeropoint_quantize(
    w: torch.Tensor, bits: int = 8, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, scale, zero)`` of zero-point quantization (module docstring), ``q`` uint8 in
    ``[0, 2^b - 1]``; ``dim`` as in ``absmax_quantize``."""
    if not 2 <= bits <= 8:
        raise ValueError(f"zero-point quantization takes 2 to 8 bits, got {bits}")
    w = w.float()
    if dim is None:
        shape = [1] * w.dim()
        lo, hi = w.amin().reshape(shape), w.amax().reshape(shape)
    else:
        lo, hi = w.amin(dim=dim, keepdim=True), w.amax(dim=dim, keepdim=True)
    scale, zero = zeropoint_params(lo, hi, bits)
    return zeropoint_round(w, scale, zero, bits), scale, zero


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None
) -> torch.Tensor:
    """``(q - zero) * scale`` in float32 (``q * scale`` without a zero point)."""
    q = q.float()
    return (q if zero is None else q - zero.float()) * scale.float()


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(out, in)`` -> ``(out, in / group_size, group_size)``, with a clear error."""
    if w.dim() != 2:
        raise ValueError(f"group-wise quantization takes a 2-D weight, got {tuple(w.shape)}")
    if group_size < 1 or w.shape[1] % group_size:
        raise ValueError(
            f"group_size={group_size} must divide the {w.shape[1]} input features of the weight"
        )
    return w.float().reshape(w.shape[0], w.shape[1] // group_size, group_size)


def groupwise_quantize(
    w: torch.Tensor, bits: int = 4, group_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-point quantization of each run of ``group_size`` inputs of each row of ``w``
    ``(out, in)``: ``q`` uint8 ``(out, in)``, ``scale`` and ``zero`` ``(out, in / group_size)``."""
    g = _groups(w, group_size)
    q, scale, zero = zeropoint_quantize(g, bits, dim=2)
    return q.reshape(w.shape), scale.squeeze(2), zero.squeeze(2)


def groupwise_dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of ``groupwise_quantize``: group ``j`` of row ``i`` is
    ``(q - zero[i, j]) * scale[i, j]``. A ``(1, 1)`` scale is one scale for the whole matrix,
    ``(out, 1)`` one per row; ``zero=None`` is absmax (symmetric)."""
    n_groups = scale.shape[1]
    g = q.reshape(q.shape[0], n_groups, q.shape[1] // n_groups)
    z = None if zero is None else zero[..., None]
    return dequantize(g, scale[..., None], z).reshape(q.shape)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit values (0..15) per byte along the last dimension, which must be even:
    ``byte = q[..., 0::2] | q[..., 1::2] << 4``."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got {tuple(q.shape)}")
    q = q.to(torch.uint8)
    if q.numel() and int(q.max()) > 15:
        raise ValueError(f"pack_int4 takes values 0..15, got {int(q.max())}")
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_int4``: each byte gives its low nibble, then its high nibble."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 takes uint8 bytes, got {packed.dtype}")
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)
