"""A Linear layer that stores its weight as integers and scales: weight-only quantization.

``QuantLinear`` keeps, as buffers (what ``state_dict`` and safetensors store):

* ``weight_q``: the integers, int8 ``(out, in)`` for 8-bit absmax, uint8 ``(out, in)`` for
  8-bit zero-point, and for 4 bits or fewer uint8 ``(out, in / 2)``: two values per byte
  (``quantize.pack_int4``);
* ``scale`` (float32) and, for zero-point, ``zero`` (uint8): ``(1, 1)`` for one scale per
  tensor, ``(out, in / group_size)`` otherwise (``(out, 1)``: one per output channel);
* ``bias`` in float32, untouched;
* optionally LLM.int8()-style *outlier columns*: ``outlier_cols`` (the input features whose
  activations are large) and ``outlier_weight`` ``(out, k)``, the float weights of those
  columns, kept exact. Their integer columns are zero and do not widen any scale.

``forward`` rebuilds the float weight (``dequantize``) and calls ``F.linear``: the memory saved
is the stored weight; the arithmetic stays in float. (Dettmers et al.'s LLM.int8() also does
the matrix product in int8 for the non-outlier part; weight-only quantization, as here and in
GPTQ, saves memory and bandwidth, which is what limits generation.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .quantize import (
    absmax_quantize,
    groupwise_dequantize,
    pack_int4,
    unpack_int4,
    zeropoint_quantize,
)


@dataclass(frozen=True)
class QuantSpec:
    """How a weight is quantized: ``bits``; ``group_size`` inputs share a scale (``None``: a
    whole row, i.e. per output channel); ``symmetric`` absmax or zero-point; ``per_tensor``:
    one scale for the whole matrix. Four bits or fewer are zero-point and packed two per byte."""

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True
    per_tensor: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be 2 to 8, got {self.bits}")
        if self.bits <= 4 and self.symmetric:
            raise ValueError("4 bits or fewer are stored zero-point (symmetric=False), packed")
        if self.per_tensor and self.group_size is not None:
            raise ValueError("per_tensor and group_size exclude each other")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size must be positive, got {self.group_size}")

    @property
    def packed(self) -> bool:
        return self.bits <= 4

    def n_groups(self, in_features: int) -> int:
        """Scales per row: 1 per channel or per tensor, and for a row no longer than a group;
        otherwise the group size must divide ``in_features``."""
        if self.group_size is None or self.group_size >= in_features:
            return 1
        if in_features % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} does not divide in_features={in_features}"
            )
        return in_features // self.group_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def quantize_weight(
    w: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest ``(q (out, in), scale, zero or None)`` of a 2-D weight by ``spec``."""
    out_features, in_features = w.shape
    n_groups = spec.n_groups(in_features)
    grouped = w.float().reshape(out_features, n_groups, in_features // n_groups)
    dim = None if spec.per_tensor else 2
    if spec.symmetric:
        q, scale = absmax_quantize(grouped, spec.bits, dim)
        zero = None
    else:
        q, scale, zero = zeropoint_quantize(grouped, spec.bits, dim)
        zero = zero.squeeze(2).to(torch.uint8)
    return q.reshape(w.shape), scale.squeeze(2), zero


class QuantLinear(nn.Module):
    """``y = x W'^T + b`` with ``W'`` dequantized from stored integers (module docstring)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spec: QuantSpec,
        bias: bool = True,
        n_outliers: int = 0,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        n_groups = spec.n_groups(in_features)
        if spec.packed and in_features % 2:
            raise ValueError(f"packing two values per byte needs an even in_features, got "
                             f"{in_features}")  # fmt: skip
        width = in_features // 2 if spec.packed else in_features
        dtype = torch.int8 if spec.symmetric else torch.uint8
        rows = (1, 1) if spec.per_tensor else (out_features, n_groups)
        self.register_buffer("weight_q", torch.zeros(out_features, width, dtype=dtype))
        self.register_buffer("scale", torch.ones(rows))
        self.register_buffer(
            "zero", None if spec.symmetric else torch.zeros(rows, dtype=torch.uint8)
        )
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("outlier_cols", torch.zeros(n_outliers, dtype=torch.long))
        self.register_buffer("outlier_weight", torch.zeros(out_features, n_outliers))

    @classmethod
    def from_integers(
        cls,
        q: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | None,
        bias: torch.Tensor | None,
        spec: QuantSpec,
        outlier_cols: torch.Tensor | None = None,
        outlier_weight: torch.Tensor | None = None,
    ) -> QuantLinear:
        """A layer holding already-quantized integers ``q (out, in)`` (from RTN or GPTQ)."""
        out_features, in_features = q.shape
        k = 0 if outlier_cols is None else len(outlier_cols)
        layer = cls(in_features, out_features, spec, bias is not None, k)
        layer.weight_q.copy_(pack_int4(q) if spec.packed else q)
        layer.scale.copy_(scale)
        if zero is not None:
            layer.zero.copy_(zero)
        if bias is not None:
            layer.bias.copy_(bias.detach().float())
        if k:
            layer.outlier_cols.copy_(outlier_cols)
            layer.outlier_weight.copy_(outlier_weight.detach().float())
        return layer

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, spec: QuantSpec, outlier_cols: torch.Tensor | None = None
    ) -> QuantLinear:
        """Round-to-nearest quantization of ``linear``; the ``outlier_cols`` input features (if
        any) are kept in float and left out of the integer part."""
        w = linear.weight.detach().float()
        outlier_weight = None
        if outlier_cols is not None and len(outlier_cols):
            outlier_weight = w[:, outlier_cols].clone()
            w = w.clone()
            w[:, outlier_cols] = 0.0
        q, scale, zero = quantize_weight(w, spec)
        return cls.from_integers(q, scale, zero, linear.bias, spec, outlier_cols, outlier_weight)

    def integers(self) -> torch.Tensor:
        """The stored integers as ``(out, in)`` (unpacked when packed)."""
        return unpack_int4(self.weight_q) if self.spec.packed else self.weight_q

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight ``(out, in)`` the layer computes with."""
        w = groupwise_dequantize(self.integers(), self.scale, self.zero)
        if self.outlier_cols.numel():
            w[:, self.outlier_cols] = self.outlier_weight
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        s = self.spec
        kind = "per tensor" if s.per_tensor else f"group {s.group_size or self.in_features}"
        scheme = "absmax" if s.symmetric else "zero-point"
        extra = (
            f", {self.outlier_cols.numel()} outlier columns" if self.outlier_cols.numel() else ""
        )
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int{s.bits} {scheme} {kind}{extra}")  # fmt: skip
