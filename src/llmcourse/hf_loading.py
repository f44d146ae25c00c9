"""Read Hugging Face checkpoints without ``transformers``, and load them into our models.

A model published in the Hugging Face format is a folder with ``config.json`` (the sizes) and
``model.safetensors`` (the weights, by parameter name), or for big models several
``model-0000k-of-0000n.safetensors`` shards listed in ``model.safetensors.index.json``.
safetensors is a plain table of tensors: reading it cannot run code, unlike a pickled
``pytorch_model.bin``, which this module refuses to open.

``read_source`` accepts either such a folder or a live ``transformers`` model (duck-typed:
anything with ``.config`` and ``.state_dict()``), so the chapter code needs no
``transformers`` import. ``load_into`` then checks every name and shape against our model and
lists whatever is missing, unexpected or of the wrong size in one clear error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def read_source(source: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config as a dict, state dict) of an HF model instance or an HF-format folder."""
    if hasattr(source, "config") and hasattr(source, "state_dict"):
        config = source.config
        config = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
        return config, dict(source.state_dict())
    if not isinstance(source, (str, Path)):
        raise TypeError(
            "from_hf needs a Hugging Face model instance (with .config and .state_dict()) or "
            f"the path of a folder with config.json and model.safetensors, got {type(source)}"
        )
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such checkpoint folder: {folder}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None
    return config, _read_safetensors(folder)


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        hint = (
            f" (found {pickles}: pickled weights are not loaded, convert them)" if pickles else ""
        )
        raise FileNotFoundError(f"{folder} has no model.safetensors{hint}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read {file}: {error}") from None
    return state


def check_config(
    config: dict[str, Any],
    model_type: str,
    required: tuple[str, ...],
    unsupported: dict[str, bool],
) -> None:
    """Refuse a config of another model type, without the ``required`` sizes, or with options
    our model does not implement (``unsupported`` maps a description of each option to whether
    this config uses it)."""
    found = config.get("model_type")
    if found is not None and found != model_type:
        raise ValueError(f"expected a {model_type!r} checkpoint, got model_type {found!r}")
    absent = [key for key in required if config.get(key) is None]
    if absent:
        raise ValueError(f"the {model_type} config lacks {', '.join(absent)}")
    used = [option for option, present in unsupported.items() if present]
    if used:
        raise ValueError(f"unsupported {model_type} configuration: {'; '.join(used)}")


def load_into(
    build: Callable[[], M],
    state: dict[str, torch.Tensor],
    tied: dict[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
    copy: bool = True,
) -> M:
    """Build a model without initialising it, then give it the tensors of ``state``.

    ``build()`` runs on PyTorch's "meta" device (shapes only, no memory, no random init: a 7B
    model is not drawn at random just to be overwritten). Every parameter name must be in
    ``state`` with the right shape, and every name of ``state`` must be a parameter, else a
    ``ValueError`` lists the differences. ``tied`` maps a parameter that shares its tensor with
    another (``lm_head.weight`` -> the token embedding) to that one: it may be absent from
    ``state`` (HF files store a tied tensor once) and is tied again after loading. Tensors are
    converted to ``dtype`` (copied unless ``copy`` is False and nothing needs converting).
    """
    tied = tied or {}
    with torch.device("meta"):
        model = build()
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(state) - set(tied))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{name}: {tuple(state[name].shape)} instead of {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    )
    if missing or unexpected or wrong:
        parts = [
            f"{label} ({len(names)}): {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
            )
            if names
        ]
        raise ValueError("the checkpoint does not fit the model: " + "; ".join(parts))
    for name, source in tied.items():
        state[name] = state[source]
    tensors = {name: state[name].to(dtype=dtype, copy=copy).contiguous() for name in expected}
    model.load_state_dict(tensors, strict=True, assign=True)
    for name, source in tied.items():
        owner, attr = _owner(model, name)
        setattr(owner, attr, model.get_parameter(source))
    return model.eval()


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr
