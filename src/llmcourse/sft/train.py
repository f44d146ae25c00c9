"""Full supervised fine-tuning, with the auxiliary language-modelling loss.

Every parameter of the pretrained model trains on the instruction data (``data``), on the
course's shared loop ``llmcourse.training.train``. The differences from pretraining are few:

* the loss is ``sft_loss``, on the answer tokens only (the chat template's labels);
* the learning rate is small (here ten times below the pretraining run's) and the run short:
  the data is a tiny fraction of the pretraining tokens, and large steps would wreck what the
  base model knows;
* optionally, as in GPT-1's fine-tuning, the pretraining objective is kept on the side:
  ``L = L_FT + lambda * L_PT``, with ``L_PT`` the next-token loss on windows of the pretraining
  text. It anchors the model to its old distribution and reduces *catastrophic forgetting*,
  the rise of the pretraining loss while the model learns the new task.

``load_sft(name)`` gives the course's fine-tuned checkpoints: trained on first use from the
base ``course_models.load("gpt-tiny-tasks")`` with a fixed, seeded recipe, cached, and loaded
from the cache afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmcourse.causal_lm.data import Tokenizer, random_windows, spaced_windows, step_generator
from llmcourse.causal_lm.loss import causal_lm_loss
from llmcourse.causal_lm.optim import lr_scheduler, make_adamw
from llmcourse.causal_lm.saving import (
    CONFIG_FILE,
    FORMAT,
    architecture_of,
    build_from_config,
    load_weights,
    save_trained,
)
from llmcourse.checkpoint import CheckpointError
from llmcourse.data import cache_dir
from llmcourse.pretrain.tokenfile import TokenFile
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.training import train

from .data import Example, build_splits
from .packing import Tokenized, pack_rows, pad_batch, truncate_examples
from .template import ChatTemplate, ChatTokenizer, add_special_tokens, sft_loss


@dataclass
class SFTConfig:
    """A fine-tuning run. ``base``: a ``course_models`` name, a trained-model folder, or
    ``"standin:<causal_lm preset>"`` (a base of that preset's shape pretrained here on the
    token files of ``gpt-tiny-tasks``, cached: the GPU preset's bigger base)."""

    base: str = "gpt-tiny-tasks"
    # data
    n_train: int = 6000
    n_heldout: int = 400
    data_seed: int = 1
    seq_len: int = 128
    packing: bool = True
    # optimisation
    steps: int = 600
    batch_size: int = 16
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    aux_lm_weight: float = 0.5  # lambda of L = L_FT + lambda * L_PT (0: plain SFT)
    # hardware and bookkeeping
    device: str | None = None
    bf16: bool = True
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    progress: bool = False

    def check(self) -> None:
        positive = ("n_train", "n_heldout", "seq_len", "steps", "batch_size")
        bad = [k for k in positive if getattr(self, k) < 1]
        if bad:
            raise ValueError(f"these settings must be >= 1: {', '.join(bad)}")
        if self.aux_lm_weight < 0:
            raise ValueError(f"aux_lm_weight (lambda) must be >= 0, got {self.aux_lm_weight}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def replace(self, **changes: Any) -> SFTConfig:
        """A copy with some fields changed (``None`` values ignored, as from a CLI)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, SFTConfig] = {
    # CPU: the course checkpoint's recipe, about 3 minutes on a CPU core (1.5 with lambda = 0)
    "tiny": SFTConfig(),
    # GPU: a 6-layer d=384 base pretrained here (causal_lm's "small"), then SFT in bf16 with
    # torch.compile and fused AdamW on ten times the data
    "gpu": SFTConfig(
        base="standin:small", n_train=60_000, n_heldout=1000, seq_len=256, steps=2000,
        batch_size=64, lr=1e-4, min_lr=1e-5, warmup=100, bf16=True, compile=True,
        log_every=50,
    ),
}  # fmt: skip
"""Fine-tuning presets: ``tiny`` for a CPU, ``gpu`` for a bigger model in bf16."""

RECIPES: dict[str, SFTConfig] = {
    "gpt-tiny-sft": PRESETS["tiny"],
    "gpt-tiny-sft-noaux": PRESETS["tiny"].replace(aux_lm_weight=0.0),
}
"""The course's fine-tuned checkpoints and their fixed recipes (``load_sft``)."""


def pretraining_tokens(base: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, validation ids): the token files ``base`` was pretrained on, end-of-text
    separators included, exactly as its pretraining run read them. ``L_PT`` draws windows
    from the first; forgetting is measured on the second, which neither run trained on."""
    folder = pretraining_data(base)
    return tuple(  # type: ignore[return-value]
        torch.from_numpy(np.asarray(TokenFile.open(folder / f"{part}.bin").tokens, np.int64))
        for part in ("train", "val")
    )


@torch.no_grad()
def pretraining_loss(
    model: nn.Module, val_ids: torch.Tensor, seq_len: int = 128, windows: int = 256
) -> float:
    """Mean next-token loss (nats per token) on ``windows`` evenly spaced windows of the
    validation ids (256 windows of 128 cover two thirds of ``gpt-tiny-tasks``' ``val.bin``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = spaced_windows(val_ids, windows, min(seq_len, model.max_seq_len) + 1).to(device)
    total = sum(causal_lm_loss(model(w[:, :-1]), w).item() * len(w) for w in batch.split(32))
    model.train(was_training)
    return total / len(batch)


def tokenize_examples(
    tokenizer: ChatTokenizer, examples: list[Example], seq_len: int
) -> list[Tokenized]:
    """``ChatTemplate().encode`` of each example, dropping those longer than ``seq_len``."""
    template = ChatTemplate()
    return truncate_examples([template.encode(tokenizer, e.chat()) for e in examples], seq_len)


def finetune(
    model: nn.Module,
    tokenizer: ChatTokenizer,
    config: SFTConfig,
    train_examples: list[Example] | None = None,
    pretrain_ids: torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """Fine-tune every parameter of ``model`` per ``config``; return the logged history
    (``step``, ``train_loss``, ``sft_loss``, ``lm_loss`` when lambda > 0, ``lr``).

    ``tokenizer`` must carry the chat tokens (``add_special_tokens``). ``train_examples``
    defaults to ``build_splits``' training part; ``pretrain_ids`` (the ``L_PT`` text) to
    ``pretraining_tokens(config.base)``' training part. Each step draws ``batch_size`` rows
    seeded by ``(seed, step)``: packed rows of ``seq_len`` tokens, or single examples padded
    to the longest of the batch.
    """
    config.check()
    if not isinstance(tokenizer, ChatTokenizer):
        raise TypeError("finetune needs the chat tokens: call add_special_tokens(model, tok)")
    if model.config.vocab_size < tokenizer.n_vocab:
        raise ValueError("the model has no rows for the chat tokens: call add_special_tokens")
    seed_everything(config.seed)
    device = pick_device(config.device)
    model.to(device).train()
    if train_examples is None:
        train_examples = build_splits(config.n_train, config.n_heldout, config.data_seed)[0]
    seq_len = min(config.seq_len, model.max_seq_len)
    tokenized = tokenize_examples(tokenizer, train_examples, seq_len)
    if not tokenized:
        raise ValueError(f"no training example fits in {seq_len} tokens")
    rows = pack_rows(tokenized, seq_len) if config.packing else tokenized
    pad_id = tokenizer.token_id("<|end|>")
    lam = config.aux_lm_weight
    if lam > 0 and pretrain_ids is None:
        pretrain_ids = pretraining_tokens(config.base)[0]

    def next_batch(step: int) -> tuple[torch.Tensor, ...]:
        gen = step_generator(config.seed, step)
        picks = torch.randint(0, len(rows), (config.batch_size,), generator=gen).tolist()
        ids, labels = pad_batch(
            [rows[i] for i in picks], pad_id, seq_len if config.packing else None
        )
        batch = [ids.to(device), labels.to(device)]
        if lam > 0:
            batch.append(
                random_windows(pretrain_ids, config.batch_size, seq_len + 1, gen).to(device)
            )
        return tuple(batch)

    parts: dict[str, list[float]] = {"sft_loss": [], "lm_loss": []}

    def forward_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with autocast(device, enabled=config.bf16):
            ft = sft_loss(model(batch[0]), batch[1])
            parts["sft_loss"].append(ft.item())
            if lam == 0:
                return ft
            pt = causal_lm_loss(model(batch[2][:, :-1]), batch[2])
            parts["lm_loss"].append(pt.item())
            return ft + lam * pt

    step_loss = torch.compile(forward_loss) if config.compile else forward_loss
    optimizer = make_adamw(model, config.lr, config.weight_decay, device=device)
    scheduler = lr_scheduler(
        optimizer, "cosine", max_lr=config.lr, min_lr=config.min_lr, warmup=config.warmup,
        total=config.steps,
    )  # fmt: skip

    def on_log(step: int, _: float) -> dict[str, float]:
        row = {"lr": scheduler.get_last_lr()[0], "sft_loss": parts["sft_loss"][-1]}
        if lam > 0:
            row["lm_loss"] = parts["lm_loss"][-1]
        return row

    history = train(
        model, optimizer, next_batch, lambda _, b: step_loss(b), config.steps,
        log_every=config.log_every, grad_clip=config.grad_clip, progress=config.progress,
        scheduler=scheduler, on_log=on_log,
    )  # fmt: skip
    model.eval()
    return history


# --------------------------------------------------------------------------------------------
# Checkpoints: the base model, saving a chat model, the course's fine-tuned checkpoints
# --------------------------------------------------------------------------------------------


def save_chat_model(
    folder: str | Path, model: nn.Module, tokenizer: ChatTokenizer, info: dict[str, Any]
) -> Path:
    """Write a fine-tuned model: ``config.json`` (causal-LM format, ``info`` under ``"sft"``),
    ``model.safetensors``, ``tokenizer.json`` (the base) and ``chat_tokenizer.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(folder)
    config = {
        "format": FORMAT,
        "version": 1,
        "architecture": architecture_of(model),
        "model": dataclasses.asdict(model.config),
        "sft": info,
    }
    save_trained(folder, model)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")  # last: marks done
    return folder


def load_chat_model(
    folder: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ChatTokenizer]:
    """The model (eval mode) and chat tokenizer of a folder written by ``save_chat_model``;
    ``CheckpointError`` with the reason for anything else."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {folder}: not a fine-tuned checkpoint")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        model = build_from_config(config["architecture"], dict(config["model"]))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable model config: {err}") from None
    load_weights(model, folder / "model.safetensors")
    try:
        tokenizer = ChatTokenizer.load(folder)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the chat tokenizer of {folder}: {err}") from None
    if tokenizer.n_vocab > model.config.vocab_size:
        raise CheckpointError(f"{folder}: the tokenizer has more ids than the model has rows")
    return model.to(device).eval(), tokenizer


def _standin_folder(preset_name: str) -> Path:
    """A base of the ``causal_lm`` preset's shape pretrained here on ``gpt-tiny-tasks``' token
    files (bytes + end-of-text), trained on first use and cached; its folder."""
    from llmcourse import course_models
    from llmcourse.causal_lm import preset
    from llmcourse.pretrain.trainer import pretrain

    folder = cache_dir() / "course_models" / f"sft-base-standin-{preset_name}"
    if not (folder / CONFIG_FILE).is_file():
        data = course_models.token_files("gpt-tiny-tasks")
        cfg = preset(preset_name, tokenizer="bytes-eot", data=str(data), out=str(folder))
        pretrain(cfg.replace(eval_every=cfg.steps, checkpoint_every=cfg.steps))
    return folder


def base_folder(name: str) -> Path:
    """The folder of a fine-tuning base (see ``SFTConfig.base``), trained first if it is a
    course model or stand-in not yet in the cache."""
    if name.startswith("standin:"):
        return _standin_folder(name.split(":", 1)[1])
    if Path(name).is_dir():
        return Path(name).resolve()
    from llmcourse import course_models

    return course_models.train(name)


def pretraining_data(base: str) -> Path:
    """The folder of the token files (``train.bin``, ``val.bin``) the base was pretrained on:
    a course model's own (``course_models.token_files``), otherwise the ``data`` that the
    base's ``config.json`` records."""
    from llmcourse import course_models

    if base in course_models.RECIPES:
        return course_models.token_files(base)
    config = base_folder(base) / CONFIG_FILE
    try:
        data = json.loads(config.read_text(encoding="utf-8"))["train"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        data = None
    if not data or not (Path(data) / "val.bin").is_file():
        raise ValueError(
            f"{config} names no token files (train.data) to measure the pretraining loss on: "
            "pass pretrain_ids to finetune, or use a base trained by llmcourse.pretrain"
        )
    return Path(data)


def load_base(name: str) -> tuple[nn.Module, Tokenizer, str]:
    """``(model, tokenizer, source)`` of a fine-tuning base (see ``SFTConfig.base``)."""
    from llmcourse import course_models
    from llmcourse.causal_lm import load_trained

    if name.startswith("standin:") or Path(name).is_dir():
        model, tok = load_trained(base_folder(name))
        return model, tok, _expected_source(name)
    model, tok = course_models.load(name)
    return model, tok, _expected_source(name)


def provenance(recipe: SFTConfig) -> dict[str, Any]:
    """What decides a fine-tuned checkpoint's weights: the base (with its course recipe's
    hash, so a retrained base retrains its fine-tunes), the recipe and torch's version."""
    from llmcourse import course_models

    fingerprint = None
    if recipe.base in course_models.RECIPES:
        fingerprint = course_models.recipe(recipe.base).fingerprint()
    return {
        "base": _expected_source(recipe.base),
        "base_fingerprint": fingerprint,
        "recipe": dataclasses.asdict(recipe),
        "torch": torch.__version__.split("+")[0],
    }


def load_sft(
    name: str = "gpt-tiny-sft", device: torch.device | str = "cpu"
) -> tuple[nn.Module, ChatTokenizer]:
    """A course fine-tuned checkpoint (``RECIPES``): trained on first use (a minute or two on
    a CPU), then cached under ``cache_dir()/course_models/<name>``. A cached checkpoint of
    another recipe or base, or a damaged one, is trained again, never loaded stale."""
    if name not in RECIPES:
        raise ValueError(
            f"unknown fine-tuned checkpoint {name!r}: choose from {', '.join(RECIPES)}"
        )
    from llmcourse import course_models

    recipe = RECIPES[name]
    folder = cache_dir() / "course_models" / name
    wanted = provenance(recipe)
    cached = _load_cached(folder, wanted, device)
    if cached is not None:
        return cached
    with course_models.cache_lock(name):
        cached = _load_cached(folder, wanted, device)  # trained meanwhile by another process
        if cached is not None:
            return cached
        began = time.perf_counter()
        model, base_tok, _ = load_base(recipe.base)
        tokenizer = add_special_tokens(model, base_tok)
        history = finetune(model, tokenizer, recipe.replace(device="cpu"))
        record = {
            **wanted,
            "seconds": round(time.perf_counter() - began, 1),
            "final_sft_loss": history["sft_loss"][-1],
            "trained_on": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        tmp = folder.with_name(f"{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            save_chat_model(tmp, model, tokenizer, record)
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model.to(device).eval(), tokenizer


def _load_cached(
    folder: Path, wanted: dict[str, Any], device: torch.device | str
) -> tuple[nn.Module, ChatTokenizer] | None:
    """The cached fine-tuned model in ``folder`` if it was made by ``wanted``, else ``None``
    (missing, another recipe or base, or damaged)."""
    if not (folder / CONFIG_FILE).is_file():
        return None
    try:
        model, tok = load_chat_model(folder, device)
        info = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["sft"]
    except (CheckpointError, KeyError, ValueError):
        return None
    if isinstance(info, dict) and all(info.get(k) == v for k, v in wanted.items()):
        return model, tok
    return None


def _expected_source(base: str) -> str:
    if base.startswith("standin:"):
        return base
    if Path(base).is_dir():
        return str(Path(base).resolve())
    return f"course_models:{base}"
