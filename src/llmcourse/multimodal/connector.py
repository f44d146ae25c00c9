"""A GPT that sees: the LLaVA connector (Liu et al., 2023) on the course's GPT.

LLaVA joins a pretrained image encoder to a pretrained language model with a small network in
between. The encoder turns the image into a grid of patch features f_1 .. f_n (width d_v); a
*projector* (a linear map in LLaVA, a two-layer MLP with GELU in LLaVA-1.5) maps each to the
language model's embedding width d; the n vectors go in front of the embedded text, exactly
like a soft prompt (chapter 12, ``llmcourse.prompting.soft_prompt``) except that they are
computed from the image:

    v_i = W_2 GELU(W_1 f_i + b_1) + b_2,
    h_0 = [v_1, ..., v_n, E[x_1], ..., E[x_T]] + W_pos[0 .. n + T - 1].

The language model then reads "image tokens" and question alike and answers in text. Training
comes in two stages: (1) alignment: the language model is frozen and only the projector (and
an encoder trained from scratch) learns, so that the image vectors land where the frozen model
can read them; (2) instruction tuning: the language model is unfrozen as well (here at a
smaller learning rate). The loss is the cross-entropy of the answer's tokens only.

Here the language model is the course checkpoint ``gpt-tiny-tasks`` (bytes, 128 positions) and
the images are the chapter's generated scenes (``llmcourse.multimodal.data``). No pretrained
vision model is available offline, so the vision tower is the chapter's own: the CNN of the
CLIP run ``clip-tiny`` (``multimodal.clip``, contrastively trained on the scenes' captions),
frozen as in LLaVA, its 8 x 8 grid of cells pooled to 16 image tokens (``PooledCells``). With
``encoder="patch"`` or ``"conv"`` the encoder is instead trained from scratch along with the
projector. ``evaluate`` scores exact answers with the real image, a blank image, another
scene's image and no image at all, per kind of question, to separate what the model reads from
the picture from what it guesses from the question. The cached run is ``gpt-tiny-llava``
(``COURSE_RUNS``); run ``python -m llmcourse.multimodal.connector --help``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import course_runs
from llmcourse.gpt import GPT
from llmcourse.prompting.soft_prompt import check_token_ids, prefixed_logits
from llmcourse.runtime import autocast, pick_device

EOT = 256  # the course byte tokenizer's <|endoftext|>
NEWLINE = 10
IMAGE_MODES = ("real", "blank", "shuffled", "none")
MODEL_FILE = "model.safetensors"
ENCODERS = ("patch", "conv", "clip")
RUN_VERSION = 1
"""Bumped when the cached run's code changes in a way its recipe fields do not show."""


class Projector(nn.Module):
    """LLaVA-1.5's connector: Linear(d_v, d) -> GELU -> Linear(d, d), applied to each patch
    feature on its own (``hidden=0``: LLaVA-1's single linear map)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = out_dim if hidden is None else hidden
        if hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class PooledCells(nn.Module):
    """A ``ConvEncoder``'s grid of cells averaged over ``pool`` x ``pool`` blocks: (B, 3, H, W)
    -> (B, (H / 4 pool)^2, dim). Pooling keeps the image tokens few (LLaVA-NeXT pools its
    grids for the same reason: every image token takes a place in the LM's context)."""

    def __init__(self, encoder: nn.Module, pool: int = 2) -> None:
        super().__init__()
        self.encoder, self.pool = encoder, pool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cells = self.encoder.features(images)
        side = math.isqrt(cells.shape[1])
        grid = cells.transpose(1, 2).reshape(len(cells), -1, side, side)
        return F.avg_pool2d(grid, self.pool).flatten(2).transpose(1, 2)


class VisionLanguageModel(nn.Module):
    """Image encoder -> projector -> image tokens before the text of a GPT.

    ``encoder`` maps images (B, 3, H, W) to features (B, n, d_v) (with ``drop_first=True`` the
    first one, a ViT's [CLS], is dropped: LLaVA feeds the grid of patches); ``feature_dim`` is
    d_v. ``forward(images, input_ids)`` returns the logits at the text's positions (B, T, V);
    ``images=None`` puts no image tokens in front, which is exactly ``lm(input_ids)``.
    ``stage(1)`` freezes the language model and trains encoder and projector; ``stage(2)``
    trains everything; with ``train_encoder=False`` (a pretrained encoder, as in LLaVA) the
    encoder stays frozen in both.
    """

    def __init__(
        self,
        lm: GPT,
        encoder: nn.Module,
        feature_dim: int,
        drop_first: bool = True,
        hidden: int | None = None,
        train_encoder: bool = True,
    ) -> None:
        super().__init__()
        self.train_encoder = train_encoder
        self.lm = lm
        self.encoder = encoder
        self.drop_first = drop_first
        self.projector = Projector(feature_dim, lm.config.n_embd, hidden)

    @property
    def max_seq_len(self) -> int:
        return self.lm.max_seq_len

    def stage(self, number: int) -> VisionLanguageModel:
        """Set which parts train: 1 = encoder and projector (LM frozen), 2 = all (a frozen
        encoder stays frozen)."""
        if number not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {number!r}")
        self.requires_grad_(True)
        if number == 1:
            self.lm.requires_grad_(False)
        if not self.train_encoder:
            self.encoder.requires_grad_(False)
        return self

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The image as vectors of the LM's embedding width: (B, 3, H, W) -> (B, n, d)."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images must be a (batch, 3, height, width) tensor, got {shape}")
        features = self.encoder(images)
        if self.drop_first:
            features = features[:, 1:]
        return self.projector(features)

    def forward(self, images: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
        batch, length = check_token_ids(input_ids, self.lm.transformer.wte.num_embeddings)
        if images is None:
            if length > self.max_seq_len:
                raise ValueError(f"{length} text tokens exceed the context of {self.max_seq_len}")
            width = self.lm.transformer.wte.embedding_dim
            no_prefix = torch.zeros(batch, 0, width, device=input_ids.device)
            return prefixed_logits(self.lm, no_prefix, input_ids)
        if len(images) != batch:
            raise ValueError(f"{len(images)} images for {batch} token sequences")
        vision = self.image_tokens(images)
        n = vision.shape[1]
        if n + length > self.max_seq_len:
            raise ValueError(
                f"{n} image tokens + {length} text tokens exceed the language model's "
                f"context of {self.max_seq_len}"
            )
        return prefixed_logits(self.lm, vision, input_ids)


# --- data: questions as byte prompts ------------------------------------------------------------


def prompt(question: str) -> str:
    """The text after the image tokens, in the instruction format ``gpt-tiny-tasks`` was
    trained on (as LLaVA uses its LM's chat template)::

        ### Instruction:
        what color is the circle ?
        ### Response:
    """
    return f"### Instruction:\n{question}\n### Response:\n"


def encode_qa(
    questions: Sequence[str], answers: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte ids (N, T) of prompt + answer + <|endoftext|>, right-padded with <|endoftext|>,
    and labels: the answer and its end, -100 elsewhere (the loss is on the answer only)."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    rows = [
        (list(prompt(q).encode()), [*a.encode(), EOT])
        for q, a in zip(questions, answers, strict=True)
    ]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), EOT, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i, (p, a) in enumerate(rows):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
    return ids, labels


def answer_loss(
    model: VisionLanguageModel,
    images: torch.Tensor | None,
    ids: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of the next-token predictions on the answer tokens only."""
    logits = model(images, ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


@torch.no_grad()
def greedy_answers(
    model: VisionLanguageModel,
    images: torch.Tensor | None,
    questions: Sequence[str],
    max_new_tokens: int = 10,
) -> list[str]:
    """Greedy answers (the text after the prompt up to <|endoftext|> or a line break, stripped).
    Questions whose prompts have the same length go as one batch; the whole sequence is
    recomputed at each step (answers are a few bytes)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [""] * len(questions)
    groups: dict[int, list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault(len(prompt(q).encode()), []).append(i)
    for length, indices in groups.items():
        ids = torch.tensor([list(prompt(questions[i]).encode()) for i in indices], device=device)
        pics = None if images is None else images[indices].to(device)
        for _ in range(max_new_tokens):
            with autocast(device):
                nxt = model(pics, ids)[:, -1:].argmax(-1)
            ids = torch.cat([ids, nxt], dim=1)
            if bool(((ids[:, length:] == EOT) | (ids[:, length:] == NEWLINE)).any(1).all()):
                break
        for i, row in zip(indices, ids[:, length:].tolist(), strict=True):
            ends = [j for j, t in enumerate(row) if t in (EOT, NEWLINE)]
            kept = bytes(t for t in row[: ends[0] if ends else len(row)] if t < 256)
            out[i] = kept.decode(errors="replace").strip()
    model.train(was_training)
    return out


def corrupt(images: torch.Tensor, mode: str) -> torch.Tensor | None:
    """The images a condition shows: ``real``; ``blank`` (every pixel the scenes' background
    color, no object); ``shuffled`` (the next scene's image, so the picture and
    the question disagree); ``none`` (no image tokens at all)."""
    if mode == "real":
        return images
    if mode == "blank":
        from llmcourse.multimodal.data import BACKGROUND

        color = torch.tensor(BACKGROUND, dtype=images.dtype, device=images.device)
        return color.view(1, 3, 1, 1).expand_as(images).clone()
    if mode == "shuffled":
        return images.roll(1, dims=0)
    if mode == "none":
        return None
    raise ValueError(f"unknown image mode {mode!r}: {', '.join(IMAGE_MODES)}")


def evaluate(
    model: VisionLanguageModel, split: Any, modes: Sequence[str] = IMAGE_MODES
) -> dict[str, Any]:
    """Exact-match accuracy of the greedy answers on ``split`` (an ``ImageTextSet``) for each
    image condition in ``modes``, overall and per kind of question (``split.kinds``)."""
    from llmcourse.multimodal import data

    refs = [data.ANSWERS[int(a)] for a in split.answers]
    kinds = sorted(set(split.kinds))
    out: dict[str, Any] = {"n": len(refs), "kinds": {k: split.kinds.count(k) for k in kinds}}
    longest = max(len(a.encode()) for a in data.ANSWERS) + 1
    for mode in modes:
        got = greedy_answers(model, corrupt(split.images, mode), split.questions, longest)
        right = [g == r for g, r in zip(got, refs, strict=True)]
        by_kind = {
            k: sum(ok for ok, kk in zip(right, split.kinds, strict=True) if kk == k) / n
            for k, n in out["kinds"].items()
        }
        out[mode] = {"accuracy": sum(right) / len(right), "by_kind": by_kind}
        if mode == "real":
            out["examples"] = [
                {"question": q, "answer": r, "generated": g}
                for q, r, g in zip(split.questions[:12], refs[:12], got[:12], strict=True)
            ]
    return out


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorConfig:
    """Data, model and the two training stages of ``gpt-tiny-llava``."""

    base: str = "gpt-tiny-tasks"
    # "patch" (ViT, 16 patch tokens) or "conv" (CNN cells pooled to 16), both trained from
    # scratch; "clip": the CNN of the cached run clip-tiny, pretrained on the captions, frozen
    encoder: str = "clip"
    image_size: int = 32
    patch: int = 8
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    n_train: int = 6000
    n_eval: int = 200
    batch_size: int = 32
    steps_stage1: int = 100
    steps_stage2: int = 250
    lr_stage1: float = 2e-3
    lr_stage2_lm: float = 1e-3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.image_size % self.patch:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch {self.patch}"
            )
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if min(self.n_train, self.n_eval, self.batch_size) < 1:
            raise ValueError("n_train, n_eval and batch_size must be positive")
        if min(self.steps_stage1, self.steps_stage2) < 0:
            raise ValueError("step counts must be >= 0")


def build_model(config: ConnectorConfig, lm: GPT) -> VisionLanguageModel:
    """A fresh image encoder (seeded) + projector in front of ``lm``: the ViT's patch
    vectors without its [CLS], or the CNN's cells pooled 2 x 2."""
    from llmcourse.multimodal.encoders import ConvEncoder, PatchEncoder

    torch.manual_seed(config.seed)
    if config.encoder == "clip":
        from llmcourse.multimodal import clip

        tower = clip.load().image_encoder
        encoder = PooledCells(tower)
        return VisionLanguageModel(lm, encoder, tower.dim, drop_first=False, train_encoder=False)
    if config.encoder == "conv":
        encoder: nn.Module = PooledCells(ConvEncoder(dim=config.vision_dim))
        return VisionLanguageModel(lm, encoder, config.vision_dim, drop_first=False)
    encoder = PatchEncoder(
        image_size=config.image_size,
        patch=config.patch,
        dim=config.vision_dim,
        depth=config.vision_depth,
        heads=config.vision_heads,
    )
    return VisionLanguageModel(lm, encoder, config.vision_dim, drop_first=True)


def train_stage(
    model: VisionLanguageModel,
    images: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    param_groups: list[dict[str, Any]],
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """AdamW with a cosine schedule over ``steps`` random batches, gradients clipped to norm 1;
    returns the loss curve."""
    optimizer = torch.optim.AdamW(param_groups, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1)))
    )
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(ids), (batch_size,), generator=generator)
        width = int((labels[rows] != -100).nonzero()[:, 1].max()) + 1
        batch = ids[rows, :width].to(device), labels[rows, :width].to(device)
        with autocast(device):
            loss = answer_loss(model, images[rows].to(device), *batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in param_groups for p in g["params"]], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def train_and_evaluate(
    config: ConnectorConfig, lm: GPT | None = None
) -> tuple[VisionLanguageModel, dict]:
    """Stage 1 (LM frozen: encoder and projector at ``lr_stage1``), scored; then stage 2 (the
    LM at ``lr_stage2_lm`` as well), scored under every image
    condition. Trained on ``make_split("train", n_train, seed)``, scored on ``n_eval`` test
    and heldout examples (seed + 1). Returns the model and the record."""
    from llmcourse import course_models
    from llmcourse.multimodal import data

    device = pick_device(config.device)
    if lm is None:
        lm = course_models.load(config.base, device="cpu")[0]
    model = build_model(config, copy.deepcopy(lm)).to(device)
    train_set = data.make_split("train", config.n_train, config.seed, config.image_size)
    splits = {
        name: data.make_split(name, config.n_eval, config.seed + 1, config.image_size)
        for name in ("test", "heldout")
    }
    answers = [data.ANSWERS[int(a)] for a in train_set.answers]
    ids, labels = encode_qa(train_set.questions, answers)
    n_image = model.image_tokens(train_set.images[:1].to(device)).shape[1]
    if n_image + ids.shape[1] > model.max_seq_len:
        raise ValueError(
            f"{n_image} image tokens + {ids.shape[1]} text tokens exceed the context of "
            f"{model.max_seq_len}"
        )
    order = torch.Generator().manual_seed(config.seed)
    record: dict[str, Any] = {"image_tokens": n_image, "text_tokens_max": ids.shape[1]}
    began = time.perf_counter()
    model.stage(1)
    vision = [p for p in model.parameters() if p.requires_grad]
    record["trainable_stage1"] = sum(p.numel() for p in vision)
    record["lm_parameters"] = model.lm.num_params()
    record["stage1_losses"] = train_stage(
        model, train_set.images, ids, labels, config.steps_stage1,
        [{"params": vision, "lr": config.lr_stage1}], config.batch_size, order,
    )  # fmt: skip
    record["stage1_seconds"] = round(time.perf_counter() - began, 1)
    record["after_stage1"] = {name: evaluate(model, s) for name, s in splits.items()}
    began = time.perf_counter()
    model.stage(2)
    groups = [{"params": vision, "lr": config.lr_stage1},
              {"params": list(model.lm.parameters()), "lr": config.lr_stage2_lm}]  # fmt: skip
    record["stage2_losses"] = train_stage(
        model, train_set.images, ids, labels, config.steps_stage2, groups, config.batch_size,
        order,
    )  # fmt: skip
    record["stage2_seconds"] = round(time.perf_counter() - began, 1)
    model.eval().requires_grad_(False)
    record["after_stage2"] = {name: evaluate(model, s) for name, s in splits.items()}
    return model, record


def run(config: ConnectorConfig | None = None) -> Path:
    """The folder of the cached run ``gpt-tiny-llava`` (built on one thread first): ``run.json``
    (losses, accuracies) and ``model.safetensors`` (encoder, projector and the tuned LM)."""
    from llmcourse import course_models

    config = config or ConnectorConfig()
    provenance = {
        "recipe": asdict(config),
        "code": RUN_VERSION,
        "base": course_models.recipe(config.base).fingerprint(),
        "torch": course_runs.torch_version(),
    }
    if config.encoder == "clip":
        from llmcourse.multimodal import clip

        provenance["vision"] = course_runs.run_record(clip.run())["provenance"]

    def build(out: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        from llmcourse.runtime import torch_threads

        with torch_threads(1):
            model, record = train_and_evaluate(config)
        state = {
            k: v.detach().cpu().contiguous()
            for k, v in model.state_dict().items()
            if k != "lm.lm_head.weight"
        }  # fmt: skip  (tied to lm.transformer.wte.weight)
        save_file(state, str(out / MODEL_FILE))
        return record

    return course_runs.cached_run("gpt-tiny-llava", provenance, build)


def load_run(config: ConnectorConfig | None = None) -> tuple[VisionLanguageModel, dict[str, Any]]:
    """The trained model of ``gpt-tiny-llava`` (eval mode, CPU) and its record."""
    from safetensors.torch import load_file

    from llmcourse import course_models

    config = config or ConnectorConfig()
    folder = run(config)
    lm = course_models.load(config.base, device="cpu")[0]
    model = build_model(config, copy.deepcopy(lm))
    state = load_file(str(folder / MODEL_FILE))
    state["lm.lm_head.weight"] = state["lm.transformer.wte.weight"]
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), course_runs.run_record(folder)


COURSE_RUNS: dict[str, Callable[..., object]] = {"gpt-tiny-llava": lambda *_: run()}
"""Run name -> a function that builds the run if it is not cached (and returns its folder)."""


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.multimodal.connector``: accuracy with and without the image."""
    defaults = ConnectorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.multimodal.connector",
        description="LLaVA-style connector: patch features of a small ViT, projected by an MLP "
        "in front of the course GPT (gpt-tiny-tasks), answering questions about generated "
        "images. Prints exact-answer accuracy with the real, a blank, another scene's and no "
        "image. The default recipe is the cached run gpt-tiny-llava.",
    )
    for flag, field, what in (
        ("--steps-stage1", "steps_stage1", "stage 1 steps, LM frozen"),
        ("--steps-stage2", "steps_stage2", "stage 2 steps, LM unfrozen"),
        ("--n-train", "n_train", "training examples"),
    ):
        parser.add_argument(flag, type=int, help=f"{what} (default {getattr(defaults, field)})")
    parser.add_argument("--encoder", choices=ENCODERS,
                        help=f"image encoder (default {defaults.encoder})")  # fmt: skip
    parser.add_argument("--device", help=f"cpu, cuda, mps or auto (default {defaults.device})")
    args = parser.parse_args(argv)
    changes = {"steps_stage1": args.steps_stage1, "steps_stage2": args.steps_stage2,
               "n_train": args.n_train, "device": args.device, "encoder": args.encoder}  # fmt: skip
    try:
        config = replace(defaults, **{k: v for k, v in changes.items() if v is not None})
        if config == defaults:
            record = course_runs.run_record(run())
        else:
            record = train_and_evaluate(config)[1]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{record['image_tokens']} image tokens; stage 1 {record['stage1_seconds']} s, "
          f"stage 2 {record['stage2_seconds']} s")  # fmt: skip
    for stage in ("after_stage1", "after_stage2"):
        for split, result in record[stage].items():
            cells = "  ".join(
                f"{m} {result[m]['accuracy']:.0%}" for m in IMAGE_MODES if m in result
            )
            print(f"{stage} {split:<8} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
