"""A trained model on disk: weights in safetensors, its config and tokenizer in JSON.

A run's folder holds

* ``model.safetensors``: the weights. safetensors is a flat table of tensors with a JSON
  header: reading it cannot execute code, unlike a pickle. A tensor shared by two names (GPT's
  ``lm_head.weight`` is ``transformer.wte.weight``) is stored once, under its first name, as
  Hugging Face does; loading ties it again because the fresh model shares it already;
* ``config.json``: the architecture (``"gpt"`` or ``"llama"``), the model's config, the
  tokenizer's kind and the training settings;
* ``tokenizer.json``: the tokenizer (``data.save_tokenizer``);
* ``train_state.pt``: the resumable training state (``llmcourse.checkpoint``: weights,
  optimizer, scheduler, step, random generators), read with ``weights_only=True``.

``load_trained(folder)`` gives back ``(model, tokenizer)`` ready to generate; a folder whose
``config.json`` has a ``"compression"`` entry (``python -m llmcourse.compress``) is loaded by
``llmcourse.compress.model.load_compressed``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from llmcourse.checkpoint import CheckpointError

from .data import ByteTokenizer, Tokenizer, load_tokenizer, save_tokenizer

FORMAT = "llmcourse-causal-lm"
WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
STATE_FILE = "train_state.pt"


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"{type(model).__name__} has no dataclass .config: cannot save it")
    return dataclasses.asdict(config)


def architecture_of(model: nn.Module) -> str:
    """``"gpt"`` for ``llmcourse.gpt.GPT``, ``"llama"`` for ``llmcourse.llama.Llama``."""
    from llmcourse.gpt import GPT
    from llmcourse.llama import Llama

    if isinstance(model, GPT):
        return "gpt"
    if isinstance(model, Llama):
        return "llama"
    raise TypeError(f"cannot save a {type(model).__name__}: expected llmcourse's GPT or Llama")


def write_run_files(
    out: str | Path, arch: str, model: nn.Module, tokenizer: Tokenizer, train: dict[str, Any]
) -> None:
    """Write ``config.json`` and ``tokenizer.json`` into ``out`` (created if needed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "bytes" if isinstance(tokenizer, ByteTokenizer) else "bpe"
    config = {
        "format": FORMAT,
        "version": 1,
        "architecture": arch,
        "model": _model_config(model),
        "tokenizer": {"kind": kind, "n_vocab": tokenizer.n_vocab, "file": TOKENIZER_FILE},
        "train": train,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_tokenizer(tokenizer, out / TOKENIZER_FILE)


def unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``state_dict`` on the CPU with each shared tensor under its first name only."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
        if key not in seen:
            seen.add(key)
            state[name] = tensor.detach().to("cpu").contiguous()
    return state


def save_trained(out: str | Path, model: nn.Module) -> Path:
    """Write the weights to ``out/model.safetensors`` (atomically) and return the path."""
    path = Path(out) / WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(unique_state(model), tmp, metadata={"format": "pt"})
    tmp.replace(path)
    return path


def load_weights(model: nn.Module, path: str | Path, exact_dtypes: bool = False) -> None:
    """Load ``model.safetensors`` into ``model``; ``CheckpointError`` for an unreadable file or
    tensors that do not fit (names missing or unknown, shapes that differ, and with
    ``exact_dtypes`` dtypes that differ: a compressed checkpoint's integers must stay integers
    rather than be cast into the model's buffers)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    expected = unique_state(model)
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(model.state_dict()))

    def fits(k: str, v: torch.Tensor) -> bool:
        return state[k].shape == v.shape and (not exact_dtypes or state[k].dtype == v.dtype)

    wrong = sorted(
        f"{k} {tuple(state[k].shape)}{f' {state[k].dtype}' if exact_dtypes else ''} "
        f"(model {tuple(v.shape)}{f' {v.dtype}' if exact_dtypes else ''})"
        for k, v in expected.items()
        if k in state and not fits(k, v)
    )
    if missing or unknown or wrong:
        kinds = "shapes or types" if exact_dtypes else "shapes"
        raise CheckpointError(
            f"{path} does not fit the {type(model).__name__} of its config.json: missing "
            f"{missing or 'none'}; unknown {unknown or 'none'}; other {kinds} {wrong or 'none'}"
        )
    model.load_state_dict(state, strict=False)  # the tied aliases are filled through sharing


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {folder}: not a trained-model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f'{path} is not an llmcourse causal-LM config (no "format": "{FORMAT}"); '
            "a Hugging Face folder loads with GPT.from_hf / Llama.from_hf instead"
        )
    return config


def build_from_config(architecture: str, model_config: dict[str, Any]) -> nn.Module:
    """A fresh model of a saved architecture and config."""
    if architecture == "gpt":
        from llmcourse.gpt import GPT, GPTConfig

        return GPT(GPTConfig(**model_config))
    if architecture == "llama":
        from llmcourse.llama import Llama, LlamaConfig

        return Llama(LlamaConfig(**model_config))
    raise CheckpointError(f"unknown architecture {architecture!r} (expected gpt or llama)")


def load_trained(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Tokenizer]:
    """The model (in eval mode, on ``device``) and tokenizer of a folder written by training."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"no trained-model folder at {folder}")
    config = _read_config(folder)
    if "compression" in config:  # written by llmcourse.compress: integer weights and scales
        from llmcourse.compress.model import load_compressed

        return load_compressed(folder, device)
    try:
        model = build_from_config(config["architecture"], dict(config["model"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE} has a bad model config: {err}") from err
    load_weights(model, folder / WEIGHTS_FILE)
    try:
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the tokenizer of {folder}: {err}") from err
    return model.to(device).eval(), tokenizer
