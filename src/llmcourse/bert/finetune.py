"""Fine-tuning: BERT's pretrained encoder plus one new layer, trained on a labelled task.

The classifier reads the pooled ``[CLS]`` state, tanh(W h_[CLS] + b), through dropout and one
linear layer (``BertClassifier``). Every weight is trained, the encoder's too, with a small
learning rate and a short warm-up. ``compare`` runs the same recipe twice, once from a
pretrained BERT and once from a random initialisation of the same network, and reports the
accuracy of each on held-out examples: what the pretraining bought.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.training import train

from .data import BertInputs, classification_task
from .model import Bert, BertClassifier, BertConfig
from .pretrain import linear_schedule, make_adamw


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run: the task, how many labelled examples, and the optimizer."""

    task: str = "prose-or-code"
    n_train: int = 128
    n_test: int = 1000
    max_len: int = 48
    batch_size: int = 32
    steps: int = 60
    lr: float = 1e-3
    warmup_steps: int = 6
    weight_decay: float = 0.01
    eval_every: int = 20
    seed: int = 0


@dataclass
class FinetuneRun:
    model: BertClassifier
    history: dict[str, list[float]]
    accuracy: float
    seconds: float


def encode_task(
    inputs: BertInputs, texts: list[str], labels: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, token_type_ids, attention_mask, labels) of ``[CLS] text [SEP]`` rows."""
    ids, segments, mask = inputs.batch([inputs.encode(t) for t in texts])
    return ids, segments, mask, torch.tensor(labels)


@torch.no_grad()
def accuracy(model: nn.Module, data: tuple[torch.Tensor, ...], batch_size: int = 256) -> float:
    """Fraction of rows whose most likely class is the label."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(data[0]), batch_size):
        ids, seg, mask, labels = (t[start : start + batch_size].to(device) for t in data)
        with autocast(device):
            correct += int((model(ids, seg, mask).argmax(-1) == labels).sum())
    return correct / len(data[0])


def finetune(
    cfg: FinetuneConfig,
    inputs: BertInputs,
    *,
    pretrained: Bert | None = None,
    config: BertConfig | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> FinetuneRun:
    """Fine-tune a classifier that starts from ``pretrained``, or, without it, from a random
    network of shape ``config``; return its held-out accuracy and learning curve."""
    begin = time.perf_counter()
    if (pretrained is None) == (config is None):
        raise ValueError("give exactly one of pretrained (a Bert) or config (from scratch)")
    device = pick_device(device) if not isinstance(device, torch.device) else device
    seed_everything(cfg.seed)
    train_texts, train_labels = classification_task(cfg.task, cfg.n_train, cfg.seed)
    test_texts, test_labels = classification_task(
        cfg.task, cfg.n_test, cfg.seed + 1, exclude=set(train_texts)
    )
    train_data = encode_task(inputs, train_texts, train_labels)
    test_data = encode_task(inputs, test_texts, test_labels)
    n_classes = max(train_labels) + 1
    if pretrained is not None:
        model = BertClassifier.from_pretrained(pretrained, n_classes)
    else:
        model = BertClassifier(config, n_classes)
    model = model.to(device)
    optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, device)
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, cfg.steps)

    def next_batch(step: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        rows = torch.randint(cfg.n_train, (cfg.batch_size,), generator=g)
        return tuple(t[rows].to(device) for t in train_data)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        ids, seg, mask, labels = batch
        with autocast(device):
            return F.cross_entropy(m(ids, seg, mask), labels)

    history = train(
        model,
        optimizer,
        next_batch,
        loss_fn,
        cfg.steps,
        evaluate=lambda m: {"test_accuracy": accuracy(m, test_data)},
        eval_every=cfg.eval_every,
        progress=progress,
        scheduler=scheduler,
    )
    history["eval_step"] = [
        float(s) for s in history["step"] if s % cfg.eval_every == 0 or s == cfg.steps
    ]
    model.eval()
    return FinetuneRun(model, history, accuracy(model, test_data), time.perf_counter() - begin)


def compare(
    cfg: FinetuneConfig,
    pretrained: Bert,
    inputs: BertInputs,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, FinetuneRun]:
    """The same fine-tuning from the pretrained weights and from scratch."""
    return {
        "pretrained": finetune(
            cfg, inputs, pretrained=pretrained, device=device, progress=progress
        ),
        "from scratch": finetune(
            cfg, inputs, config=pretrained.config, device=device, progress=progress
        ),
    }
