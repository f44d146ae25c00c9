"""Pretraining BERT: masked language model + next-sentence prediction, on offline text.

One step draws a batch of sentence pairs (half of them true continuations), corrupts 15 % of
the tokens with the 80/10/10 rule (``masking.mask_tokens``) and minimises

    L = CE(MLM logits at the selected positions, original tokens) + CE(NSP logits, is-next)

the sum of BERT's two losses. The MLM head is only applied at the selected positions (the
others have no label), which saves most of the (B, T, V) output layer. AdamW with weight decay
on the matrices only, a linear warm-up then linear decay of the learning rate (BERT's
schedule), gradient clipping, bf16 autocast on a GPU and optional ``torch.compile``.

The tokenizer is a WordPiece vocabulary trained with ``llmcourse.tokenizers.train_wordpiece``
on the start of the corpus (or read from a ``vocab.txt``). A run folder holds ``config.json``,
``model.safetensors``, ``vocab.txt``, ``metrics.csv``, ``loss.png`` and ``train_state.pt`` (the
resumable state); ``load_pretrained`` reads it back.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.data import load_corpus
from llmcourse.plots import close, plot_curves
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.tokenizers import WordPieceTokenizer, train_wordpiece
from llmcourse.training import train

from .data import BertInputs, SentencePair, documents, nsp_pairs
from .masking import IGNORE_INDEX, mask_tokens
from .model import Bert, BertConfig


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines a pretraining run (the presets below fill it in)."""

    model: str = "tiny"  # a BertConfig preset; its vocab_size becomes the tokenizer's
    corpus: str = "pydoc-topics"
    vocab_size: int = 800  # WordPiece entries, special tokens included
    tokenizer_chars: int = 40_000  # characters of the corpus the WordPiece is trained on
    vocab_file: str | None = None  # a vocab.txt to use instead of training one
    max_len: int = 64  # tokens per pair, [CLS] and [SEP]s included
    n_pairs: int = 8_000  # training pairs drawn once (validation: 512 from held-out topics)
    batch_size: int = 32
    steps: int = 400
    lr: float = 1e-3
    warmup_steps: int = 40
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mask_rate: float = 0.15
    eval_every: int = 50
    seed: int = 0


PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "tiny": PretrainConfig(),
    "small": PretrainConfig(
        model="small",
        vocab_size=3000,
        tokenizer_chars=150_000,
        max_len=128,
        n_pairs=50_000,
        batch_size=64,
        steps=4000,
        lr=5e-4,
        warmup_steps=200,
        eval_every=250,
    ),
    "base": PretrainConfig(
        model="bert-base",
        corpus="stdlib-docs",
        vocab_size=8000,
        tokenizer_chars=300_000,
        max_len=128,
        n_pairs=500_000,
        batch_size=256,
        steps=20_000,
        lr=1e-4,
        warmup_steps=1000,
        eval_every=1000,
    ),
}
"""``tiny`` trains in well under a minute on a CPU; ``small`` wants a few CPU minutes or a GPU;
``base`` is BERT-base's shape (110M parameters, vocabulary aside), for a GPU. Training the
WordPiece vocabulary is the slow part of the bigger presets: pass ``vocab_file`` to reuse one."""

VAL_PAIRS = 512
VAL_EVERY_NTH_DOC = 10  # documents 0, 10, 20, ... are held out for validation


@dataclass
class PretrainRun:
    model: Bert
    tokenizer: WordPieceTokenizer
    inputs: BertInputs
    history: dict[str, list[float]]
    seconds: float


def make_adamw(
    model: nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW that decays matrices and embeddings only (not biases or LayerNorm gains), with
    the fused CUDA kernel on a GPU."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """BERT's learning rate: linear from 0 to the peak over ``warmup`` steps, then linear
    down to 0 at step ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def get_tokenizer(cfg: PretrainConfig, text: str) -> WordPieceTokenizer:
    """The run's WordPiece: read from ``cfg.vocab_file`` or trained (lowercased)."""
    if cfg.vocab_file is not None:
        return WordPieceTokenizer.load(cfg.vocab_file, lowercase=True)
    return train_wordpiece(text[: cfg.tokenizer_chars], cfg.vocab_size, lowercase=True)


def pretraining_batch(
    inputs: BertInputs,
    pairs: list[tuple[list[int], list[int]]],
    labels: list[int],
    rows: list[int],
    vocab_size: int,
    rate: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Pad the chosen pairs and mask them: the tensors of one pretraining step."""
    input_ids, segments, attention = inputs.batch([pairs[r] for r in rows])
    masked, mlm_labels = mask_tokens(
        input_ids,
        vocab_size=vocab_size,
        mask_id=inputs.mask_id,
        special_ids=inputs.special_ids,
        rate=rate,
        generator=generator,
    )
    return {
        "input_ids": masked,
        "token_type_ids": segments,
        "attention_mask": attention,
        "mlm_labels": mlm_labels,
        "nsp_labels": torch.tensor([labels[r] for r in rows]),
    }


def pretraining_losses(model: Bert, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MLM cross-entropy (over the selected positions), NSP cross-entropy, and their sum
    ``loss``; also the NSP accuracy of the batch."""
    hidden, pooled = model.bert(
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    )
    selected = batch["mlm_labels"] != IGNORE_INDEX
    mlm_logits = model.cls.predictions(hidden[selected]).float()
    mlm = F.cross_entropy(mlm_logits, batch["mlm_labels"][selected])
    nsp_logits = model.cls.seq_relationship(pooled).float()
    nsp = F.cross_entropy(nsp_logits, batch["nsp_labels"])
    nsp_accuracy = (nsp_logits.argmax(-1) == batch["nsp_labels"]).float().mean()
    return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "nsp_accuracy": nsp_accuracy}


def _encode_pairs(
    inputs: BertInputs, pairs: list[SentencePair]
) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    return [inputs.encode(p.first, p.second) for p in pairs], [p.label for p in pairs]


def pretrain(
    cfg: PretrainConfig,
    *,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    compile: bool = False,
    resume: bool = False,
    progress: bool = True,
    tokenizer: WordPieceTokenizer | None = None,
) -> PretrainRun:
    """Train a BERT from scratch as ``cfg`` says; with ``out``, write the run folder. A
    ``tokenizer`` given here is used instead of the one ``cfg`` describes."""
    begin = time.perf_counter()
    device = pick_device(device) if not isinstance(device, torch.device) else device
    seed_everything(cfg.seed)
    text = load_corpus(cfg.corpus).text
    docs = documents(text)
    train_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY_NTH_DOC]
    val_docs = [d for i, d in enumerate(docs) if not i % VAL_EVERY_NTH_DOC]
    tokenizer = tokenizer or get_tokenizer(cfg, text)
    config = BertConfig.preset(cfg.model, vocab_size=len(tokenizer.vocab))
    if cfg.max_len > config.max_position_embeddings:
        raise ValueError(
            f"max_len {cfg.max_len} exceeds the model's {config.max_position_embeddings} positions"
        )
    inputs = BertInputs(tokenizer, cfg.max_len)
    train_pairs, train_labels = _encode_pairs(inputs, nsp_pairs(train_docs, cfg.n_pairs, cfg.seed))
    val_pairs, val_labels = _encode_pairs(inputs, nsp_pairs(val_docs, VAL_PAIRS, cfg.seed + 1))
    val_batch = pretraining_batch(
        inputs,
        val_pairs,
        val_labels,
        list(range(len(val_pairs))),
        config.vocab_size,
        cfg.mask_rate,
        torch.Generator().manual_seed(cfg.seed + 1),
    )
    model = Bert(config).to(device)
    forward = torch.compile(model) if compile else model
    optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, device)
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, cfg.steps)

    def next_batch(step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        rows = torch.randint(len(train_pairs), (cfg.batch_size,), generator=g).tolist()
        batch = pretraining_batch(
            inputs, train_pairs, train_labels, rows, config.vocab_size, cfg.mask_rate, g
        )
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def loss_fn(_: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(device):
            return pretraining_losses(forward, batch)["loss"]

    def evaluate(_: nn.Module) -> dict[str, float]:
        batch = {k: v.to(device) for k, v in val_batch.items()}
        with autocast(device):
            losses = pretraining_losses(model, batch)
        return {
            "val_mlm_loss": losses["mlm_loss"].item(),
            "val_nsp_loss": losses["nsp_loss"].item(),
            "val_nsp_accuracy": losses["nsp_accuracy"].item(),
        }

    folder = Path(out) if out is not None else None
    history = train(
        model,
        optimizer,
        next_batch,
        loss_fn,
        cfg.steps,
        evaluate=evaluate,
        eval_every=cfg.eval_every,
        grad_clip=cfg.grad_clip,
        metrics_path=folder / "metrics.csv" if folder else None,
        checkpoint_path=folder / "train_state.pt" if folder else None,
        checkpoint_every=cfg.eval_every if folder else 0,
        resume=resume,
        progress=progress,
        scheduler=scheduler,
    )
    history["eval_step"] = [
        float(s) for s in history.get("step", []) if s % cfg.eval_every == 0 or s == cfg.steps
    ]
    model.eval()
    run = PretrainRun(model, tokenizer, inputs, history, time.perf_counter() - begin)
    if folder is not None:
        save_pretrained(run, cfg, folder)
    return run


def pretraining_figure(history: dict[str, list[float]]):
    return plot_curves(
        {
            "train: MLM + NSP": (history["step"], history["train_loss"]),
            "held-out: MLM": (history["eval_step"], history["val_mlm_loss"]),
            "held-out: NSP": (history["eval_step"], history["val_nsp_loss"]),
        },
        title="BERT pretraining",
    )


def save_pretrained(run: PretrainRun, cfg: PretrainConfig, folder: Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` (tied tensors stored once), ``vocab.txt``
    and ``loss.png`` into ``folder``."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "architecture": "bert",
        "model": run.model.config.to_dict(),
        "pretrain": asdict(cfg),
        "tokenizer": {"vocab": "vocab.txt", "lowercase": run.tokenizer.lowercase},
        "seconds": round(run.seconds, 2),
    }
    (folder / "config.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    save_model(run.model, str(folder / "model.safetensors"))
    run.tokenizer.save(folder / "vocab.txt")
    fig = pretraining_figure(run.history)
    fig.savefig(folder / "loss.png", dpi=120)
    close(fig)
    return folder


def load_pretrained(folder: str | Path) -> tuple[Bert, WordPieceTokenizer]:
    """The model and tokenizer of a run folder written by ``pretrain``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a BERT run folder: no config.json")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
        config = BertConfig(**meta["model"])
        lowercase = meta["tokenizer"]["lowercase"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{config_file} is not a BERT run config: {err}") from None
    model = Bert(config)
    try:
        load_model(model, str(folder / "model.safetensors"))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"cannot load {folder / 'model.safetensors'}: {err}") from None
    tokenizer = WordPieceTokenizer.load(folder / "vocab.txt", lowercase=lowercase)
    return model.eval(), tokenizer


def preset(name: str, **overrides: Any) -> PretrainConfig:
    """A pretraining preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRETRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRETRAIN_PRESETS)}")
    return replace(PRETRAIN_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
