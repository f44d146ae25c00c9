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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcourse.causal_lm.data import (
    Tokenizer,
    encode,
    get_tokenizer,
    random_windows,
    spaced_windows,
    step_generator,
)
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
from llmcourse.data import cache_dir, load_corpus
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.training import train

from .data import Example, build_splits
from .packing import Tokenized, pack_rows, pad_batch, truncate_examples
from .template import ChatTemplate, ChatTokenizer, add_special_tokens, sft_loss

PRETRAINING_CORPORA = ("instructions", "arithmetic")
"""The corpora the base model was pretrained on (its ``L_PT`` and forgetting are measured on
their validation parts)."""


@dataclass
class SFTConfig:
    """A fine-tuning run. ``base``: a ``course_models`` name, a trained-model folder, or
    ``"standin:<causal_lm preset>"`` (a base pretrained here on ``PRETRAINING_CORPORA``)."""

    base: str = "gpt-tiny-tasks"
    # data
    n_train: int = 6000
    n_heldout: int = 400
    data_seed: int = 1
    seq_len: int = 128
    packing: bool = True
    # optimisation
    steps: int = 300
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
    # CPU: the course checkpoint's recipe, about a minute on two cores
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


def pretraining_ids(tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, validation ids) of ``PRETRAINING_CORPORA`` in the base tokenizer's ids,
    each corpus split with ``train_val_split(0.1, seed=0)`` as the pretraining run did."""
    base = tokenizer.base if isinstance(tokenizer, ChatTokenizer) else tokenizer
    parts = [load_corpus(name).train_val_split(0.1, seed=0) for name in PRETRAINING_CORPORA]
    train_text = "\n".join(t for t, _ in parts)
    val_text = "\n".join(v for _, v in parts)
    return encode(base, train_text), encode(base, val_text)


@torch.no_grad()
def pretraining_loss(
    model: nn.Module, val_ids: torch.Tensor, seq_len: int = 128, windows: int = 32
) -> float:
    """Mean next-token loss on ``windows`` evenly spaced windows of the validation ids."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = spaced_windows(val_ids, windows, min(seq_len, model.max_seq_len) + 1).to(device)
    loss = sum(causal_lm_loss(model(w[:, :-1]), w).item() * len(w) for w in batch.split(16)) / len(
        batch
    )
    model.train(was_training)
    return loss


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
    ``pretraining_ids``' training part. Each step draws ``batch_size`` rows seeded by
    ``(seed, step)``: packed rows of ``seq_len`` tokens, or single examples padded to the
    longest of the batch.
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
        pretrain_ids = pretraining_ids(tokenizer)[0]

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


def _standin_base(preset_name: str) -> tuple[nn.Module, Tokenizer]:
    """A base pretrained here on ``PRETRAINING_CORPORA`` (bytes + end-of-text), cached."""
    from llmcourse.causal_lm import load_trained, preset, train_causal_lm
    from llmcourse.causal_lm.data import CorpusBatches

    folder = cache_dir() / "course_models" / f"sft-base-standin-{preset_name}"
    if not (folder / "model.safetensors").is_file():
        tokenizer = get_tokenizer("bytes-eot")
        train_ids, val_ids = pretraining_ids(tokenizer)
        steps = 600 if preset_name == "tiny" else None
        cfg = preset(preset_name, tokenizer="bytes-eot", steps=steps, out=str(folder))
        batches = CorpusBatches(train_ids, val_ids, tokenizer.n_vocab)
        train_causal_lm(
            cfg.replace(eval_every=cfg.steps, checkpoint_every=cfg.steps), batches=batches
        )
    return load_trained(folder)


def load_base(name: str) -> tuple[nn.Module, Tokenizer, str]:
    """``(model, tokenizer, source)`` of a fine-tuning base (see ``SFTConfig.base``)."""
    if name.startswith("standin:"):
        model, tok = _standin_base(name.split(":", 1)[1])
        return model, tok, name
    if Path(name).is_dir():
        from llmcourse.causal_lm import load_trained

        model, tok = load_trained(name)
        return model, tok, str(Path(name).resolve())
    try:
        from llmcourse import course_models
    except ImportError:  # not on main yet: a base pretrained here on the same corpora
        model, tok = _standin_base("tiny")
        return model, tok, "standin:tiny"
    model, tok = course_models.load(name)
    return model, tok, f"course_models:{name}"


def load_sft(
    name: str = "gpt-tiny-sft", device: torch.device | str = "cpu"
) -> tuple[nn.Module, ChatTokenizer]:
    """A course fine-tuned checkpoint (``RECIPES``): trained on first use, then cached under
    ``cache_dir()/course_models/<name>``. A cache made from another base is trained again."""
    if name not in RECIPES:
        raise ValueError(
            f"unknown fine-tuned checkpoint {name!r}: choose from {', '.join(RECIPES)}"
        )
    recipe = RECIPES[name]
    folder = cache_dir() / "course_models" / name
    if (folder / CONFIG_FILE).is_file():
        try:
            model, tok = load_chat_model(folder, device)
            info = json.loads((folder / CONFIG_FILE).read_text())["sft"]
        except (CheckpointError, KeyError, ValueError):
            info = None  # damaged: train again
        if info is not None and info.get("base") == _expected_source(recipe.base):
            return model, tok
    model, base_tok, source = load_base(recipe.base)
    tokenizer = add_special_tokens(model, base_tok)
    finetune(model, tokenizer, recipe.replace(device="cpu"))
    save_chat_model(
        folder, model, tokenizer, {"base": source, "recipe": dataclasses.asdict(recipe)}
    )
    return model.to(device).eval(), tokenizer


def _expected_source(base: str) -> str:
    if base.startswith("standin:") or Path(base).is_dir():
        return base if base.startswith("standin:") else str(Path(base).resolve())
    try:
        from llmcourse import course_models  # noqa: F401
    except ImportError:
        return "standin:tiny"
    return f"course_models:{base}"
