"""Training the encoder-decoder with teacher forcing, and measuring exact match.

The loss is the cross-entropy of the decoder's prediction at every target position, padding
excluded. Evaluation is what a user sees: greedy decoding from the source alone, and the
fraction of held-out inputs whose whole output is exactly right.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from llmcourse.runtime import autocast
from llmcourse.training import train

from .model import Seq2SeqTransformer, TransformerConfig, greedy_decode
from .seq2seq_tasks import BOS, EOS, PAD, VOCAB_SIZE, Batch, DigitTask, decode, encode_sources

PRESETS: dict[str, dict] = {
    "tiny": {
        "d_model": 64,
        "n_heads": 4,
        "layers": 2,
        "d_ff": 128,
        "steps": 800,
        "batch": 64,
        "lr": 3e-3,
    },
    "small": {
        "d_model": 128,
        "n_heads": 4,
        "layers": 2,
        "d_ff": 512,
        "steps": 1500,
        "batch": 128,
        "lr": 2e-3,
    },
    "base": {
        "d_model": 256,
        "n_heads": 8,
        "layers": 4,
        "d_ff": 1024,
        "steps": 4000,
        "batch": 256,
        "lr": 1e-3,
    },
}
"""From CPU-sized (``tiny``: under a minute on two cores) to GPU-sized (``base``)."""


def seq2seq_loss(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy over the non-padding target tokens (teacher forcing)."""
    with autocast(device):
        logits = model(batch.src, batch.tgt_in)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), batch.tgt_out.reshape(-1), ignore_index=PAD
    )


def exact_match(
    model: Seq2SeqTransformer,
    task: DigitTask,
    inputs: list[str] | None = None,
    batch_size: int = 250,
) -> float:
    """Fraction of ``inputs`` (default: the held-out set) decoded greedily without any error."""
    inputs = task.heldout if inputs is None else inputs
    device = next(model.parameters()).device
    right = 0
    for i in range(0, len(inputs), batch_size):
        chunk = inputs[i : i + batch_size]
        src = encode_sources(chunk).to(device)
        out = greedy_decode(model, src, BOS, EOS, max_len=task.max_len + 1)
        right += sum(decode(row) == task.answer(s) for row, s in zip(out, chunk, strict=True))
    return right / len(inputs)


@dataclass
class Seq2SeqRun:
    """A trained model with its logged history, final held-out exact match and timing."""

    model: Seq2SeqTransformer
    task: DigitTask
    history: dict[str, list[float]]
    exact_match: float
    seconds: float
    settings: dict = field(default_factory=dict)


def train_seq2seq(
    task: str = "reverse",
    preset: str = "tiny",
    steps: int | None = None,
    lr: float | None = None,
    max_len: int = 10,
    norm_first: bool = True,
    positions: str = "sinusoidal",
    dropout: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    compile: bool = False,
    eval_every: int = 0,
    metrics_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = False,
) -> Seq2SeqRun:
    """Train a ``Seq2SeqTransformer`` on a digit task with AdamW and return the run.

    ``steps`` and ``lr`` default to the preset's.
    The learning rate warms up linearly over the first 10 % of the steps and then decays
    linearly to zero. ``eval_every`` logs the exact match on 200 held-out inputs now and then.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    p = dict(PRESETS[preset])
    steps = p["steps"] if steps is None else steps
    lr = p["lr"] if lr is None else lr
    device = torch.device(device)
    torch.manual_seed(seed)
    data = DigitTask(task, 1, max_len, seed=seed)
    config = TransformerConfig(
        VOCAB_SIZE,
        VOCAB_SIZE,
        p["d_model"],
        p["n_heads"],
        p["layers"],
        p["layers"],
        p["d_ff"],
        dropout,
        max_len + 2,
        positions,
        norm_first,
    )
    model = Seq2SeqTransformer(config).to(device)
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1)))
    )

    def loss_fn(_: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return seq2seq_loss(step_model, batch, device)

    def next_batch(step: int) -> Batch:
        if step > 0:
            schedule.step()  # the loop has just taken the optimizer step of step - 1
        return data.train_batch(step, p["batch"]).to(device)

    sample = data.heldout[:200]
    start = time.perf_counter()
    history = train(
        model,
        optimizer,
        next_batch,
        loss_fn,
        steps,
        log_every=10,
        grad_clip=1.0,
        evaluate=(lambda m: {"exact_match": exact_match(m, data, sample)}) if eval_every else None,
        eval_every=eval_every,
        metrics_path=metrics_path,
        checkpoint_path=checkpoint_path,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    model.eval()
    settings = {
        "task": task,
        "input_digits": f"1-{max_len}",
        "preset": preset,
        "steps": steps,
        "batch": p["batch"],
        "lr": lr,
        **config.to_dict(),
    }
    return Seq2SeqRun(model, data, history, exact_match(model, data), seconds, settings)
