"""Fusion: answering a question about an image, with the two modalities combined three ways.

The task (``data.make_split``): an image of 1-3 shapes and a question ("what color is the
circle ?", "is the red square left or right of the blue cross ?"), answered by one word out
of ``ANSWERS``. Most questions need both: the image says what is there, the question says
what is asked. Every model here has the same image encoder (``ConvEncoder``), the same text
encoder (``TextEncoder``) and a classifier over the answers; they differ in where the two
meet. With v = ConvEncoder(image) (pooled), t = TextEncoder.pooled(question):

* ``early`` fusion: concatenate the features, then one MLP decides,
  logits = MLP([v; t]). Every interaction between the modalities is left to the MLP.
* ``late`` fusion: each modality decides alone and the decisions are combined,
  log p(a | image, question) = log p_I(a | v) + log p_T(a | t) + const (a product of experts:
  the logits are the sum of the two heads' log-probabilities). The two heads never see each
  other's input, so the answer can only be what both find likely: fine when the question
  alone fixes the kind of answer and the image has one candidate, lost when it must pick
  *which* object the question is about.
* ``cross-attention`` fusion: the question's token vectors are queries over the image's
  cells (``ConvEncoder.features``), h = h + Attn(LN(h), LN(cells)), h = h + FFN(LN(h)),
  repeated, then averaged over the question and classified. Each word can look up the part
  of the image it needs ("circle" -> the cells where a circle is).
* ``image-only`` and ``text-only`` baselines: one encoder and a head: what each modality
  alone achieves (the text alone knows the kind of answer and its frequencies; the image
  alone cannot know the question).

``compare(config)`` trains the five with the same data, steps, batch, optimizer and seed,
then scores them on the test split (new scenes) and the held-out split (scenes with (shape,
color) pairs never seen), and measures robustness on the test split: the image with Gaussian
noise of several standard deviations (clipped to [0, 1]), the image missing (zeros) and the
question missing (all padding). The cached run is ``multimodal-fusion`` (``COURSE_RUNS``);
run ``python -m llmcourse.multimodal.fusion --help``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import course_runs
from llmcourse.attention import MultiHeadAttention
from llmcourse.multimodal import data as D
from llmcourse.multimodal.encoders import ConvEncoder, TextEncoder
from llmcourse.runtime import autocast, pick_device
from llmcourse.training import train
from llmcourse.transformer.blocks import FeedForward

KINDS: tuple[str, ...] = ("image-only", "text-only", "early", "late", "cross-attention")
RUN_NAME = "multimodal-fusion"
RUN_VERSION = 1
"""Bumped when the cached run's code changes in a way its recipe fields do not show."""


def head(d_in: int, dim: int) -> nn.Sequential:
    """The classifier every model ends with: Linear, ReLU, Linear to the answer logits."""
    return nn.Sequential(nn.Linear(d_in, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, len(D.ANSWERS)))


class ImageOnly(nn.Module):
    """Baseline: logits = head(v); the question is ignored."""

    def __init__(self, dim: int = 64, conv_width: int = 16) -> None:
        super().__init__()
        self.image = ConvEncoder(dim, conv_width)
        self.head = head(dim, dim)

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.image(images))


class TextOnly(nn.Module):
    """Baseline: logits = head(t); the image is ignored."""

    def __init__(self, dim: int = 64, text_depth: int = 1) -> None:
        super().__init__()
        self.text = TextEncoder(len(D.VOCAB), dim, text_depth, 4, D.QUESTION_LEN)
        self.head = head(dim, dim)

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.text.pooled(question_ids))


class EarlyFusion(nn.Module):
    """logits = MLP([v; t]): the pooled image and question vectors concatenated."""

    def __init__(self, dim: int = 64, text_depth: int = 1, conv_width: int = 16) -> None:
        super().__init__()
        self.image = ConvEncoder(dim, conv_width)
        self.text = TextEncoder(len(D.VOCAB), dim, text_depth, 4, D.QUESTION_LEN)
        self.head = head(2 * dim, dim)

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.image(images), self.text.pooled(question_ids)], dim=-1))


class LateFusion(nn.Module):
    """logits = log_softmax(head_I(v)) + log_softmax(head_T(t)): a product of two experts,
    each of which sees one modality only; trained end to end through the combination."""

    def __init__(self, dim: int = 64, text_depth: int = 1, conv_width: int = 16) -> None:
        super().__init__()
        self.image = ConvEncoder(dim, conv_width)
        self.text = TextEncoder(len(D.VOCAB), dim, text_depth, 4, D.QUESTION_LEN)
        self.image_head = head(dim, dim)
        self.text_head = head(dim, dim)

    def experts(
        self, images: torch.Tensor, question_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two heads' log-probabilities, (B, answers) each."""
        image = F.log_softmax(self.image_head(self.image(images)), dim=-1)
        text = F.log_softmax(self.text_head(self.text.pooled(question_ids)), dim=-1)
        return image, text

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor) -> torch.Tensor:
        image, text = self.experts(images, question_ids)
        return image + text


class CrossAttentionBlock(nn.Module):
    """Pre-norm: h = h + Attn(LN(h), LN(cells)); h = h + FFN(LN(h)) (queries from the text)."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = MultiHeadAttention(dim, heads)
        self.ffn = FeedForward(dim, 4 * dim)

    def forward(
        self, h: torch.Tensor, cells: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        memory = self.norm_kv(cells)
        out, weights = self.attn(self.norm_q(h), memory, memory, need_weights=need_weights)
        h = h + out
        return h + self.ffn(self.norm_ff(h)), weights


class CrossAttentionFusion(nn.Module):
    """Question tokens attend to the image's cells, then are averaged and classified."""

    def __init__(
        self, dim: int = 64, text_depth: int = 1, cross_depth: int = 2, conv_width: int = 16
    ) -> None:
        super().__init__()
        self.image = ConvEncoder(dim, conv_width)
        self.text = TextEncoder(len(D.VOCAB), dim, text_depth, 4, D.QUESTION_LEN)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim) for _ in range(cross_depth))
        self.norm = nn.LayerNorm(dim)
        self.head = head(dim, dim)

    def attend(
        self, images: torch.Tensor, question_ids: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The question's vectors after the cross-attention blocks, and each block's weights
        (B, heads, question length, cells) when ``need_weights``."""
        cells = self.image.features(images)
        h = self.text(question_ids)
        weights = []
        for block in self.blocks:
            h, w = block(h, cells, need_weights)
            weights.append(w)
        return self.norm(h), weights

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.attend(images, question_ids)
        keep = question_ids != D.PAD
        keep = (keep | ~keep.any(dim=1, keepdim=True)).unsqueeze(-1).to(h.dtype)
        return self.head((h * keep).sum(dim=1) / keep.sum(dim=1))


def make_model(
    kind: str, dim: int = 64, text_depth: int = 1, cross_depth: int = 2, conv_width: int = 16
) -> nn.Module:
    """One of ``KINDS``; every model takes (images, question_ids) and returns answer logits.
    ``conv_width``: channels of the CNN's first layer (then twice that, then ``dim``)."""
    if kind == "image-only":
        return ImageOnly(dim, conv_width)
    if kind == "text-only":
        return TextOnly(dim, text_depth)
    if kind == "early":
        return EarlyFusion(dim, text_depth, conv_width)
    if kind == "late":
        return LateFusion(dim, text_depth, conv_width)
    if kind == "cross-attention":
        return CrossAttentionFusion(dim, text_depth, cross_depth, conv_width)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


@dataclass(frozen=True)
class FusionConfig:
    """One recipe for all five models: same data, steps, batch, optimizer and seed."""

    n_train: int = 6000
    n_test: int = 1000
    n_heldout: int = 1000
    image_size: int = 32
    dim: int = 64
    text_depth: int = 1
    cross_depth: int = 2
    conv_width: int = 16
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    noise_levels: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0)
    kinds: tuple[str, ...] = KINDS


PRESETS: dict[str, FusionConfig] = {
    "tiny": FusionConfig(n_train=256, n_test=128, n_heldout=128, dim=32, steps=20),
    "course": FusionConfig(),
}


def fit(model: nn.Module, train_set: D.ImageTextSet, config: FusionConfig) -> list[float]:
    """AdamW with a linear warm-up (5 %) and linear decay, cross-entropy on the answer;
    batches drawn by a generator seeded with ``config.seed`` (the same for every model)."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    warm = max(1, config.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warm, max(0.0, (config.steps - s) / (config.steps - warm))),
    )
    g = torch.Generator().manual_seed(config.seed)
    order = [
        torch.randperm(len(train_set), generator=g)
        for _ in range(math.ceil(config.steps * config.batch_size / len(train_set)) + 1)
    ]
    order = torch.cat(order)

    def next_batch(step: int) -> tuple[torch.Tensor, ...]:
        idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        return train_set.images[idx], train_set.question_ids[idx], train_set.answers[idx]

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        images, questions, answers = batch
        with autocast(images.device):
            logits = m(images, questions)
        return F.cross_entropy(logits.float(), answers)

    history = train(
        model, optimizer, next_batch, loss_fn, config.steps, grad_clip=1.0,
        scheduler=scheduler, progress=False, log_every=max(1, config.steps // 50),
    )  # fmt: skip
    return history["train_loss"]


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, question_ids: torch.Tensor, answers: torch.Tensor
) -> float:
    """Fraction of the examples whose highest-scoring answer is the right one."""
    model.eval()
    with autocast(images.device):
        right = sum(
            (
                model(images[i : i + 256], question_ids[i : i + 256]).argmax(-1)
                == answers[i : i + 256]
            )
            .sum()
            .item()
            for i in range(0, len(answers), 256)
        )
    return right / len(answers)


@torch.no_grad()
def accuracy_by_kind(model: nn.Module, split: D.ImageTextSet) -> dict[str, float]:
    """Accuracy per question kind ("color", "count", ...), kinds the split has."""
    model.eval()
    with autocast(split.images.device):
        predicted = torch.cat([
            model(split.images[i : i + 256], split.question_ids[i : i + 256]).argmax(-1)
            for i in range(0, len(split), 256)
        ])  # fmt: skip
    right = (predicted == split.answers).cpu()
    kinds = sorted(set(split.kinds), key=D.QUESTION_KINDS.index)
    return {
        k: right[[j for j, kk in enumerate(split.kinds) if kk == k]].float().mean().item()
        for k in kinds
    }


def corrupted_inputs(
    split: D.ImageTextSet, noise_levels: tuple[float, ...], seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Condition name -> (images, question ids): "clean", "noise 0.3" (Gaussian of that
    standard deviation added to every pixel, clipped to [0, 1]), "no image" (zeros) and
    "no question" (all padding)."""
    g = torch.Generator().manual_seed(seed)
    conditions = {"clean": (split.images, split.question_ids)}
    for sigma in noise_levels:
        noise = torch.randn(split.images.shape, generator=g)
        conditions[f"noise {sigma:g}"] = ((split.images + sigma * noise).clamp(0, 1),
                                          split.question_ids)  # fmt: skip
    conditions["no image"] = (torch.zeros_like(split.images), split.question_ids)
    conditions["no question"] = (split.images, torch.full_like(split.question_ids, D.PAD))
    return conditions


def _on(split: D.ImageTextSet, device: torch.device) -> D.ImageTextSet:
    return replace(
        split,
        images=split.images.to(device),
        answers=split.answers.to(device),
        question_ids=split.question_ids.to(device),
        caption_ids=split.caption_ids.to(device),
    )


def compare(config: FusionConfig, device: str | None = None) -> dict[str, Any]:
    """Train every model of ``config.kinds`` with the same recipe; the table, robustness,
    accuracy by question kind, parameter counts, loss curves and seconds of each.
    ``device``: as ``runtime.pick_device`` takes it (None: ``LLMCOURSE_DEVICE`` or the best)."""
    for kind in config.kinds:
        make_model(kind)  # fail early on a bad kind
    dev = pick_device(device)
    train_set, test, heldout = (
        _on(D.make_split(split, n, config.seed, config.image_size), dev)
        for split, n in (("train", config.n_train), ("test", config.n_test),
                         ("heldout", config.n_heldout))
    )  # fmt: skip
    conditions = {
        name: (images.to(dev), questions.to(dev))
        for name, (images, questions) in corrupted_inputs(
            _on(test, torch.device("cpu")), config.noise_levels, config.seed + 1
        ).items()
    }
    table, robustness, by_kind, params, seconds, curves = {}, {}, {}, {}, {}, {}
    for kind in config.kinds:
        torch.manual_seed(config.seed)
        model = make_model(
            kind, config.dim, config.text_depth, config.cross_depth, config.conv_width
        ).to(dev)
        began = time.perf_counter()
        curves[kind] = fit(model, train_set, config)
        seconds[kind] = round(time.perf_counter() - began, 1)
        params[kind] = sum(p.numel() for p in model.parameters())
        table[kind] = {
            "train": accuracy(model, train_set.images, train_set.question_ids, train_set.answers),
            "test": accuracy(model, test.images, test.question_ids, test.answers),
            "heldout": accuracy(model, heldout.images, heldout.question_ids, heldout.answers),
        }
        robustness[kind] = {
            name: accuracy(model, images, questions, test.answers)
            for name, (images, questions) in conditions.items()
        }
        by_kind[kind] = {"test": accuracy_by_kind(model, test),
                         "heldout": accuracy_by_kind(model, heldout)}  # fmt: skip
    majority = torch.bincount(train_set.answers.cpu(), minlength=len(D.ANSWERS)).argmax()
    return {
        "table": table,
        "robustness": robustness,
        "by_kind": by_kind,
        "params": params,
        "train_seconds": seconds,
        "loss_curves": curves,
        "majority_answer": D.ANSWERS[int(majority)],
        "majority_test": (test.answers.cpu() == majority).float().mean().item(),
    }


def run(config: FusionConfig | None = None) -> Path:
    """The folder of the cached run ``multimodal-fusion`` (built on one thread first)."""
    config = config or PRESETS["course"]
    provenance = {
        "recipe": asdict(config),
        "code": RUN_VERSION,
        "torch": course_runs.torch_version(),
    }

    def build(out: Path) -> dict[str, Any]:
        from llmcourse.runtime import torch_threads

        with torch_threads(1):
            return compare(config, "cpu")

    return course_runs.cached_run(RUN_NAME, provenance, build)


COURSE_RUNS: dict[str, Callable[[], object]] = {RUN_NAME: lambda: run()}
"""Run name -> a function that builds the run if it is not cached (and returns its folder)."""


def format_table(record: dict[str, Any]) -> str:
    """The accuracy table and the robustness table as text."""
    lines = [f"{'model':<16} {'params':>8} {'train':>6} {'test':>6} {'heldout':>8}"]
    for kind, row in record["table"].items():
        lines.append(
            f"{kind:<16} {record['params'][kind]:>8,} {row['train']:>6.1%} {row['test']:>6.1%} "
            f"{row['heldout']:>8.1%}"
        )
    conditions = list(next(iter(record["robustness"].values())))
    lines += ["", f"{'test accuracy':<16} " + " ".join(f"{c:>11}" for c in conditions)]
    for kind, row in record["robustness"].items():
        lines.append(f"{kind:<16} " + " ".join(f"{row[c]:>11.1%}" for c in conditions))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.multimodal.fusion``: train the five models, print the tables."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.multimodal.fusion",
        description="Early, late and cross-attention fusion vs image-only and text-only "
        "baselines on questions about generated shape images (same budget each); accuracy "
        "on new scenes and on held-out (shape, color) pairs, and robustness to a noised or "
        "missing modality. The course preset is the cached run 'multimodal-fusion'.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="course")
    parser.add_argument("--steps", type=int, help="training steps per model (preset's default)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, help="models to train (all)")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.kinds:
        config = replace(config, kinds=tuple(args.kinds))
    try:
        cached = config == PRESETS["course"]
        record = course_runs.run_record(run()) if cached else compare(config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
