"""Knowledge distillation: a small student learns from a big teacher's whole distribution.

Trained on hard labels, a language model sees one right token per position; every other token
is equally wrong. The teacher's softmax says more: after "3 + 4 =" it puts most mass on "7"
but also some on "6" and "8", and that graded similarity ("dark knowledge") is information a
small model cannot easily find alone. Hinton, Vinyals and Dean (2015) train the student on a
mix of the teacher's *soft targets* and the hard labels:

    L = alpha * T^2 * KL( softmax(z_t / T) || softmax(z_s / T) ) + (1 - alpha) * CE(z_s, y)

* **Temperature T > 1** flattens both distributions, so the small probabilities of the wrong
  tokens, invisible at T = 1, carry weight in the KL.
* **The factor T^2**: the gradient of the KL term with respect to the student's logits is
  (softmax(z_s / T) - softmax(z_t / T)) / T, and for logits small against T that difference
  itself scales as 1/T, so the whole gradient shrinks as 1/T^2. Multiplying by T^2 keeps the
  soft term's pull comparable to the hard term's whatever T is chosen.
* alpha = 0 is plain training on the labels; alpha = 1 learns from the teacher alone.

``train_student`` trains the same student (2 layers, d = 128, the teacher's byte tokenizer)
twice with the same steps, batches, seed and initialisation: once with the distillation loss
(run ``gpt-tiny-student-kd``), once on hard labels alone (``gpt-tiny-student-hard``), both
cached by ``llmcourse.course_runs`` with their validation curves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import course_runs
from llmcourse.causal_lm.data import random_windows, spaced_windows, step_generator
from llmcourse.causal_lm.loss import causal_lm_loss
from llmcourse.causal_lm.optim import cosine_scheduler, make_adamw
from llmcourse.causal_lm.saving import load_trained, save_trained, write_run_files
from llmcourse.evaluate.perplexity import perplexity
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.runtime import pick_device, seed_everything
from llmcourse.training import train


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    T: float = 2.0,
    alpha: float = 0.5,
    ignore_index: int = -100,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE.

    ``student_logits`` and ``teacher_logits`` are (..., V) with the same shape; ``labels``
    (...) holds the target of each position (already shifted), ``ignore_index`` where there is
    none. Both terms are means over the scored positions (the KL summed over the vocabulary).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ")  # fmt: skip
    if labels.shape != student_logits.shape[:-1]:
        expected = tuple(student_logits.shape[:-1])
        raise ValueError(f"labels {tuple(labels.shape)} do not fit the logits: expected {expected}")
    if T <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need T > 0 and 0 <= alpha <= 1, got T = {T}, alpha = {alpha}")
    vocab = student_logits.shape[-1]
    student = student_logits.reshape(-1, vocab).float()
    labels = labels.reshape(-1)
    hard = F.cross_entropy(student, labels, ignore_index=ignore_index)
    if alpha == 0.0:
        return hard
    scored = labels != ignore_index
    log_p_student = F.log_softmax(student[scored] / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.reshape(-1, vocab)[scored].float() / T, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    return alpha * T * T * kl + (1.0 - alpha) * hard


@dataclass(frozen=True)
class DistillConfig:
    """A student GPT (``n_layer`` x ``n_embd``, the teacher's vocabulary and context) and its
    training on the teacher's training tokens; ``alpha = 0`` trains on hard labels alone."""

    teacher: str = "gpt-tiny-tasks"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    temperature: float = 2.0
    alpha: float = 0.5
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_windows: int = 64
    device: str = "cpu"
    seed: int = 0


RECIPES: dict[str, DistillConfig] = {
    "gpt-tiny-student-kd": DistillConfig(temperature=1.0, alpha=0.9),
    "gpt-tiny-student-hard": DistillConfig(alpha=0.0),
}
"""The chapter's two students: distilled, and the same on hard labels alone. At 300 steps a
trial of T = 2, alpha = 0.5 and of T = 2, alpha = 0.9 ended slightly *above* the hard-label
student's held-out perplexity (2.68 and 2.72 against 2.65); T = 1, alpha = 0.9 below it (2.62)."""


def student_config(config: DistillConfig, teacher: GPT) -> GPTConfig:
    """The student's shape: the config's depth and width, the teacher's vocabulary/context."""
    return GPTConfig(
        vocab_size=teacher.config.vocab_size,
        n_positions=teacher.config.n_positions,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
    )


def train_student(
    config: DistillConfig,
    teacher: GPT,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    metrics_path: str | Path | None = None,
) -> tuple[GPT, dict[str, list[float]]]:
    """Train a fresh student per ``config`` on random windows of ``train_ids`` (the same
    windows for every alpha and T: they depend on ``seed`` and the step only); return it
    (eval mode) and its history, with ``val_loss`` (cross-entropy on evenly spaced windows of
    ``val_ids``) every ``eval_every`` steps."""
    device = pick_device(config.device)
    seed_everything(config.seed)
    student = GPT(student_config(config, teacher)).to(device)
    teacher = teacher.to(device).eval()
    seq_len = min(config.seq_len, student.max_seq_len)
    val = spaced_windows(val_ids, config.eval_windows, seq_len + 1).to(device)
    optimizer = make_adamw(student, config.lr, config.weight_decay, device=device)
    scheduler = cosine_scheduler(optimizer, max_lr=config.lr, min_lr=config.min_lr,
                                 warmup=config.warmup, total=config.steps)  # fmt: skip

    def next_batch(step: int) -> torch.Tensor:
        gen = step_generator(config.seed, step)
        return random_windows(train_ids, config.batch_size, seq_len + 1, gen).to(device)

    def loss_fn(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        inputs, labels = windows[:, :-1], windows[:, 1:]
        logits = model(inputs)
        if config.alpha == 0.0:  # hard labels only: no teacher pass needed
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        return distillation_loss(logits, teacher_logits, labels, config.temperature, config.alpha)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_loss": sum(causal_lm_loss(model(w[:, :-1]), w).item() * len(w)
                                for w in val.split(32)) / len(val)}  # fmt: skip

    history = train(
        student, optimizer, next_batch, loss_fn, config.steps, evaluate=evaluate,
        eval_every=config.eval_every, log_every=config.eval_every, grad_clip=config.grad_clip,
        metrics_path=metrics_path, progress=False, scheduler=scheduler,
    )  # fmt: skip
    return student.eval(), history


def provenance(config: DistillConfig) -> dict[str, Any]:
    """Everything a student run depends on: its recipe, the teacher's fingerprint, torch."""
    from llmcourse.course_models import recipe

    return {
        "recipe": dataclasses.asdict(config),
        "teacher": recipe(config.teacher).fingerprint(),
        "torch": course_runs.torch_version(),
    }


def _build(config: DistillConfig, out: Path) -> dict[str, Any]:
    from llmcourse.course_models import load
    from llmcourse.sft import pretraining_tokens

    teacher, tokenizer = load(config.teacher)
    train_ids, val_ids = pretraining_tokens(config.teacher)
    student, history = train_student(config, teacher, train_ids, val_ids, out / "metrics.csv")
    student.cpu()
    write_run_files(out, "gpt", student, tokenizer, dataclasses.asdict(config))
    save_trained(out, student)
    return {
        "history": history,
        "params": student.num_params(),
        "teacher_params": teacher.num_params(),
        "val_perplexity": perplexity(student, val_ids, seq_len=student.max_seq_len),
    }


def student_run(name: str) -> Path:
    """The folder of the cached student run ``name`` (trained first if missing or stale)."""
    if name not in RECIPES:
        raise ValueError(f"unknown student {name!r}: choose from {', '.join(RECIPES)}")
    config = RECIPES[name]
    return course_runs.cached_run(name, provenance(config), partial(_build, config))


def load_student(name: str) -> tuple[GPT, Any]:
    """(student GPT in eval mode, tokenizer) of the cached run ``name``."""
    return load_trained(student_run(name))


def _runner(name: str) -> Callable[..., object]:
    def run(_name: str | None = None) -> object:  # course_models --all passes the name
        return load_student(name)

    return run


COURSE_RUNS: dict[str, Callable[..., object]] = {name: _runner(name) for name in RECIPES}
"""Each student run by name -> a loader that builds it first if needed (callable with no
argument or with the name, as ``course_models --all`` calls it)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.compress.distill",
        description="Train (or read back) the cached student runs and print their figures.",
    )
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help=f"student runs (default: all): {', '.join(RECIPES)}")  # fmt: skip
    args = parser.parse_args(argv)
    unknown = sorted(set(args.runs) - set(RECIPES))
    if unknown:
        parser.error(f"unknown runs {unknown}: choose from {', '.join(RECIPES)}")
    for name in args.runs or RECIPES:
        record = course_runs.run_record(student_run(name))
        figures = {k: record[k] for k in ("params", "val_perplexity", "seconds", "threads")}
        print(name, json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
