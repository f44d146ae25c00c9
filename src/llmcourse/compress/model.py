"""Quantize a whole model, count its stored bytes, and save and load the compressed checkpoint.

``quantize_model(model, method, calibration)`` returns a quantized *copy*: every ``nn.Linear``
becomes a ``QuantLinear`` except one whose weight is an embedding table (GPT's tied
``lm_head``); embeddings, LayerNorms and biases stay float32. The methods (``METHODS``):

=================  ==========================================================================
``fp32``           the model unchanged (4 bytes per weight)
``bf16``           every tensor in bfloat16 (2 bytes)
``int8``           absmax int8 per output channel, weight-only
``int8-tensor``    absmax int8, one scale per matrix
``int8-outlier``   ``int8`` with LLM.int8()-style outlier input columns kept in float32
``int4-rtn``       zero-point int4, groups of 128 inputs, round-to-nearest, packed
``int4-gptq``      the same format, rounded by GPTQ on calibration data
``int4-*-row``     int4 with one scale per row (the whole row is a group)
``int3-*``         3-bit levels in groups of 128 (stored in nibbles, like int4)
``int2-*``         2-bit levels in groups of 128 (stored in nibbles too)
=================  ==========================================================================

``calibration`` (token ids, ``(n_windows, seq_len)``, e.g. ``gptq.calibration_windows`` of the
training stream) is needed by GPTQ and by outlier detection. GPTQ goes *sequentially*, layer
by layer in the order the forward pass uses them: each layer's Hessian comes from its inputs
in the model whose earlier layers are already quantized, so later layers correct for the
rounding of earlier ones as well as their own.

``save_compressed(model, tokenizer, folder)`` writes chapter 7's folder layout
(``model.safetensors`` with the integer tensors, ``config.json`` with a ``"compression"``
entry naming the method and each quantized layer's format, ``tokenizer.json``);
``causal_lm.load_trained`` (and so ``python -m llmcourse.generate``) recognises it and calls
``load_compressed``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcourse.causal_lm.saving import (
    CONFIG_FILE,
    FORMAT,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    architecture_of,
    build_from_config,
    load_weights,
    save_trained,
    unique_state,
    write_run_files,
)
from llmcourse.checkpoint import CheckpointError

from .gptq import HessianAccumulator, gptq_quantize
from .qlinear import QuantLinear, QuantSpec

OUTLIER_THRESHOLD = 6.0  # LLM.int8(): a feature is an outlier where some |activation| >= 6


@dataclass(frozen=True)
class Method:
    """A compression method: the float ``dtype`` of what stays float; the integer format of
    the Linear weights (``None``: none); rounding by ``gptq`` instead of to nearest;
    ``outliers``: keep the input columns whose calibration activations reach
    ``OUTLIER_THRESHOLD`` in float."""

    dtype: str = "float32"
    spec: QuantSpec | None = None
    gptq: bool = False
    outliers: bool = False

    @property
    def needs_calibration(self) -> bool:
        return self.gptq or self.outliers


_INT4 = QuantSpec(bits=4, group_size=128, symmetric=False)
_INT4_ROW = QuantSpec(bits=4, group_size=None, symmetric=False)
_INT3 = QuantSpec(bits=3, group_size=128, symmetric=False)
_INT2 = QuantSpec(bits=2, group_size=128, symmetric=False)
METHODS: dict[str, Method] = {
    "fp32": Method(),
    "bf16": Method(dtype="bfloat16"),
    "int8": Method(spec=QuantSpec(bits=8)),
    "int8-tensor": Method(spec=QuantSpec(bits=8, per_tensor=True)),
    "int8-outlier": Method(spec=QuantSpec(bits=8), outliers=True),
    "int4-rtn": Method(spec=_INT4),
    "int4-gptq": Method(spec=_INT4, gptq=True),
    "int4-rtn-row": Method(spec=_INT4_ROW),
    "int4-gptq-row": Method(spec=_INT4_ROW, gptq=True),
    "int3-rtn": Method(spec=_INT3),
    "int3-gptq": Method(spec=_INT3, gptq=True),
    "int2-rtn": Method(spec=_INT2),
    "int2-gptq": Method(spec=_INT2, gptq=True),
}


def method_of(name: str) -> Method:
    """The ``Method`` called ``name``, or a ``ValueError`` listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown compression method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def quantizable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(name, module)`` of each ``nn.Linear`` in forward order, less those whose weight is an
    ``nn.Embedding``'s table (a tied output head stays float with its embedding)."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and id(m.weight) not in tables
    ]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class _Stop(Exception):
    """Raised by a hook once the layer it watches has seen its input: nothing after it runs."""


def _feed_inputs(
    model: nn.Module,
    layer: nn.Module,
    calibration: torch.Tensor,
    see: Callable[[torch.Tensor], None],
) -> None:
    """Run the calibration windows through ``model`` up to ``layer``, giving ``see`` each
    input batch of ``layer``."""

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        see(args[0])
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in calibration.split(16):
                with contextlib.suppress(_Stop):
                    model(batch.to(device))
    finally:
        handle.remove()


def _check_calibration(calibration: torch.Tensor | None, method: str) -> torch.Tensor:
    if calibration is None:
        raise ValueError(
            f"{method} needs calibration token ids (n_windows, seq_len), e.g. "
            "compress.gptq.calibration_windows(train_ids)"
        )
    if not isinstance(calibration, torch.Tensor) or calibration.dim() != 2:
        shape = tuple(calibration.shape) if isinstance(calibration, torch.Tensor) else calibration
        raise ValueError(
            f"calibration must be token ids of shape (n_windows, seq_len), got {shape}"
        )
    return calibration.long()


def outlier_columns(
    model: nn.Module, layer: nn.Linear, calibration: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Input features of ``layer`` where some calibration activation has ``|x| >= threshold``."""
    peak = torch.zeros(layer.in_features)

    def see(x: torch.Tensor) -> None:
        peak.copy_(torch.maximum(peak, x.detach().abs().reshape(-1, x.shape[-1]).amax(0).cpu()))

    _feed_inputs(model, layer, calibration, see)
    return torch.nonzero(peak >= threshold).flatten()


def quantize_model(
    model: nn.Module, method: str, calibration: torch.Tensor | None = None
) -> nn.Module:
    """A compressed copy of ``model`` (eval mode) by ``method`` (module docstring);
    ``calibration``: token ids ``(n_windows, seq_len)`` for the methods that need them."""
    m = method_of(method)
    if m.needs_calibration:
        calibration = _check_calibration(calibration, method)
    out = copy.deepcopy(model).eval()
    if m.dtype == "bfloat16":
        out = out.to(torch.bfloat16)
    for name, linear in quantizable_linears(out) if m.spec is not None else []:
        if m.gptq:
            acc = HessianAccumulator(linear.in_features)
            _feed_inputs(out, linear, calibration, lambda x, acc=acc: acc.add(x.cpu()))
            q, scale, zero = gptq_quantize(linear.weight, acc.hessian, m.spec)
            layer = QuantLinear.from_integers(q, scale, zero, linear.bias, m.spec)
        else:
            cols = None
            if m.outliers:
                cols = outlier_columns(out, linear, calibration, OUTLIER_THRESHOLD)
            layer = QuantLinear.from_linear(linear, m.spec, cols)
        _set_module(out, name, layer.to(linear.weight.device))
    out.compression_method = method
    return out


def stored_bytes(model: nn.Module) -> int:
    """Bytes of everything the model stores (its ``state_dict``: integers, scales, zero points,
    float tensors), a tensor shared by two names counted once."""
    return sum(t.numel() * t.element_size() for t in unique_state(model).values())


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, QuantLinear]]:
    """``(name, layer)`` of each ``QuantLinear`` of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            yield name, m


def save_compressed(
    model: nn.Module, tokenizer: Any, folder: str | Path, train: dict[str, Any] | None = None
) -> Path:
    """Write a compressed ``model`` (from ``quantize_model``) and its tokenizer into ``folder``
    in chapter 7's layout, with ``config.json["compression"]`` saying how to rebuild it."""
    folder = Path(folder)
    float_dtype = next(p for p in model.parameters()).dtype
    write_run_files(folder, architecture_of(model), model, tokenizer, train or {})
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config["compression"] = {
        "method": getattr(model, "compression_method", "fp32"),
        "dtype": str(float_dtype).removeprefix("torch."),
        "layers": {
            name: {"spec": m.spec.to_dict(), "outliers": m.outlier_cols.numel()}
            for name, m in quantized_layers(model)
        },
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_trained(folder, model)
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no {CONFIG_FILE} in {folder}: not a checkpoint folder") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not readable JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f'{path} is not an llmcourse config (no "format": "{FORMAT}")')
    if not isinstance(config.get("compression"), dict):
        raise CheckpointError(f'{path} has no "compression" entry: not a compressed checkpoint')
    return config


def _skeleton(config: dict[str, Any], where: Path) -> nn.Module:
    """An empty model of the saved architecture with the saved ``QuantLinear`` layers."""
    comp = config["compression"]
    try:
        model = build_from_config(config["architecture"], dict(config["model"]))
        model = model.to(getattr(torch, comp.get("dtype", "float32")))
        for name, entry in comp.get("layers", {}).items():
            linear = model.get_submodule(name)
            if not isinstance(linear, nn.Linear):
                raise TypeError(f"{name} is a {type(linear).__name__}, not a Linear")
            spec = QuantSpec(**entry["spec"])
            layer = QuantLinear(linear.in_features, linear.out_features, spec,
                                linear.bias is not None, int(entry["outliers"]))  # fmt: skip
            _set_module(model, name, layer)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{where} has a bad model or compression config: {err}") from err
    return model


def load_compressed(
    folder: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a folder written by ``save_compressed``, in eval mode on
    ``device``; ``CheckpointError`` naming what is wrong with a damaged folder."""
    from llmcourse.causal_lm.data import load_tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no compressed checkpoint folder at {folder}")
    config = _read_config(folder)
    model = _skeleton(config, folder / CONFIG_FILE)
    load_weights(model, folder / WEIGHTS_FILE, exact_dtypes=True)
    try:
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the tokenizer of {folder}: {err}") from err
    model.compression_method = config["compression"].get("method", "fp32")
    return model.to(device).eval(), tokenizer
