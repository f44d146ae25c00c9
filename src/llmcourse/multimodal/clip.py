"""CLIP-style contrastive learning (Radford et al. 2021): images and captions in one space.

Two encoders, one per modality, each followed by a linear projection into a shared space of
width D and an L2 normalisation, so that the similarity of image i and caption j is the
cosine s_ij = <u_i, v_j>. A batch of B (image, caption) pairs gives the B x B matrix S; the
pairs on its diagonal should score higher than every other entry of their row and column.
The loss is the *symmetric InfoNCE*: a B-way cross-entropy over each row (image -> which
caption?) and over each column (caption -> which image?), averaged,

    L = 1/2 [ CE_rows(S / tau) + CE_cols(S / tau) ],
    CE_rows = -1/B sum_i log( exp(s_ii / tau) / sum_j exp(s_ij / tau) ).

The temperature tau is learned, parameterised by its logarithm: ``logit_scale`` = log(1 / tau),
initialised at log(1 / 0.07) and clamped at log(100) (logits scaled by at most 100), as in CLIP.
Cosines live in [-1, 1]; without the scale, softmax over B of them could never get peaked.

Several scenes share one caption ("a small red circle"), so a batch may hold the same caption
twice: then caption j is as right for image i as caption i is, and a one-hot target would ask
the model to tell identical texts apart. ``info_nce`` therefore takes an optional boolean match
matrix M (M_ij: pair j's caption is a right answer for image i) and uses the target
distribution M_ij / sum_j M_ij in each row and column (uniform over the right answers); with
the identity it is the usual loss. ``recall_at_k`` likewise counts a hit when any right answer
is among the top k.

``CLIPModel`` pairs the course's image and text encoders (``multimodal.encoders``); ``train``
fits it on the captions of the training split and ``evaluate`` measures retrieval (recall@1/5
both ways) and zero-shot classification of single objects by prompts ("a red circle"), on new
scenes of seen combinations ("test") and on combinations never seen in training ("heldout").
The cached run is ``clip-tiny`` (``COURSE_RUNS``). Run ``python -m llmcourse.multimodal.clip
--help``.
"""

from __future__ import annotations

import argparse
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

INIT_LOGIT_SCALE = math.log(1 / 0.07)
"""CLIP's initial log(1 / tau): tau = 0.07."""
MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP's clamp: logits are scaled by at most 100 (tau >= 0.01)."""


def _check_pair(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.dim() != 2 or text_emb.dim() != 2:
        raise ValueError(
            f"embeddings must be (B, D): got image {tuple(image_emb.shape)}, "
            f"text {tuple(text_emb.shape)}"
        )
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image and text embeddings must have the same shape (B pairs of width D): got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )


def similarity(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """The (N_images, N_texts) matrix of cosine similarities (each row L2-normalised first)."""
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"embeddings must be (N, D) with the same D: got {tuple(image_emb.shape)} and "
            f"{tuple(text_emb.shape)}"
        )
    return F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T


def info_nce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    matches: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of B (image, text) pairs, the mean of both directions' cross-entropy.

    ``image_emb``, ``text_emb``: (B, D), row i of each is a pair (normalised here, so raw
    projections are fine). ``logit_scale``: log(1 / tau), a scalar (tensor or float); it is
    clamped at ``MAX_LOGIT_SCALE`` as CLIP does. ``matches``: optional (B, B) bool, True where
    text j is a right answer for image i (e.g. the same caption); the diagonal must be True.
    None means the identity: only the pair itself is right.
    """
    _check_pair(image_emb, text_emb)
    scale = torch.as_tensor(logit_scale, dtype=image_emb.dtype, device=image_emb.device)
    if scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(scale.shape)}")
    logits = scale.reshape(()).clamp(max=MAX_LOGIT_SCALE).exp() * similarity(image_emb, text_emb)
    b = logits.shape[0]
    if matches is None:
        labels = torch.arange(b, device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    if matches.shape != (b, b) or matches.dtype != torch.bool:
        raise ValueError(f"matches must be a ({b}, {b}) bool tensor, got {matches.dtype} "
                         f"{tuple(matches.shape)}")  # fmt: skip
    if not bool(matches.diagonal().all()):
        raise ValueError("matches must be True on its diagonal (each pair matches itself)")
    m = matches.to(logits.dtype)
    rows = -(m / m.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()
    cols = -(m / m.sum(0, keepdim=True) * logits.log_softmax(dim=0)).sum(0).mean()
    return (rows + cols) / 2


def caption_matches(captions: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(B, B) bool: True where captions i and j are the same text (the diagonal included)."""
    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(c, len(index)) for c in captions])
    return ids[:, None] == ids[None, :]


def recall_at_k(sim: torch.Tensor, k: int, matches: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@k both ways for a square (N, N) similarity matrix of N pairs.

    ``image_to_text``: the share of images (rows) with a right text among their k most similar
    columns; ``text_to_image``: the share of texts (columns) with a right image among their k
    most similar rows. Right = the pair itself, or where ``matches`` (N, N bool) says so.
    (Exact ties are ordered as ``torch.topk`` orders them.)
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square (N, N) matrix, got {tuple(sim.shape)}")
    n = sim.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} for a gallery of {n}, got {k}")
    if matches is None:
        matches = torch.eye(n, dtype=torch.bool, device=sim.device)
    elif matches.shape != sim.shape or matches.dtype != torch.bool:
        raise ValueError(f"matches must be a {tuple(sim.shape)} bool tensor")
    top_texts = sim.topk(k, dim=1).indices  # (N, k) columns for each row
    top_images = sim.topk(k, dim=0).indices  # (k, N) rows for each column
    i2t = matches.gather(1, top_texts).any(dim=1).float().mean().item()
    t2i = matches.gather(0, top_images).any(dim=0).float().mean().item()
    return {"image_to_text": i2t, "text_to_image": t2i}


IMAGE_ENCODERS = ("conv", "patch")


@dataclass(frozen=True)
class CLIPConfig:
    """The model (encoders of width ``dim``, a shared space of width ``embed_dim``) and its
    training on the captions of ``n_train`` training scenes; evaluation galleries of
    ``gallery`` scenes per split and ``n_zero_shot`` single-object images per split."""

    image_encoder: str = "conv"  # "conv" (pooled CNN) or "patch" (ViT-style, its [CLS])
    dim: int = 64
    depth: int = 2
    heads: int = 4
    embed_dim: int = 32
    image_size: int = 32
    n_train: int = 6000
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    gallery: int = 100
    n_zero_shot: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(
                f"image_encoder must be one of {IMAGE_ENCODERS}, got {self.image_encoder!r}"
            )
        for name in ("steps", "n_train", "gallery", "n_zero_shot", "dim", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (negatives), got {self.batch_size}")


class CLIPModel(nn.Module):
    """An image encoder and a text encoder, each projected linearly into a shared space of
    width ``embed_dim`` and L2-normalised, and the learned log inverse temperature.

    ``image_encoder``: a module mapping (B, 3, H, W) to (B, dim) (pooled) or to
    (B, 1 + n, dim) (a [CLS] first, whose vector is used); ``text_encoder``: a module with
    ``pooled(ids)`` -> (B, dim). Both default to the course's encoders
    (``multimodal.encoders``) built from ``config``.
    """

    def __init__(
        self,
        config: CLIPConfig | None = None,
        image_encoder: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or CLIPConfig()
        if image_encoder is None or text_encoder is None:
            from llmcourse.multimodal import data, encoders

            if image_encoder is None and config.image_encoder == "conv":
                image_encoder = encoders.ConvEncoder(dim=config.dim)
            elif image_encoder is None:
                image_encoder = encoders.PatchEncoder(
                    image_size=config.image_size, dim=config.dim, depth=config.depth,
                    heads=config.heads,
                )  # fmt: skip
            if text_encoder is None:
                text_encoder = encoders.TextEncoder(
                    len(data.VOCAB), dim=config.dim, depth=config.depth, heads=config.heads,
                    max_len=data.CAPTION_LEN,
                )  # fmt: skip
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(config.dim, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(config.dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    @property
    def temperature(self) -> float:
        """tau = 1 / exp(logit_scale), as the loss uses it (clamped)."""
        return math.exp(-min(self.logit_scale.item(), MAX_LOGIT_SCALE))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, embed_dim), unit length."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        h = self.image_encoder(images)
        if h.dim() == 3:  # a sequence with a [CLS] first
            h = h[:, 0]
        return F.normalize(self.image_proj(h), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) word ids -> (B, embed_dim), unit length."""
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"text ids must be a (B, L) long tensor, got {ids.dtype} "
                             f"{tuple(ids.shape)}")  # fmt: skip
        return F.normalize(self.text_proj(self.text_encoder.pooled(ids)), dim=-1)

    def forward(
        self, images: torch.Tensor, ids: torch.Tensor, matches: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The symmetric InfoNCE of the batch of pairs (images[i], ids[i])."""
        if len(images) != len(ids):
            raise ValueError(f"{len(images)} images but {len(ids)} captions")
        return info_nce(self.encode_image(images), self.encode_text(ids), self.logit_scale,
                        matches)  # fmt: skip


def distinct_caption_batch(
    captions: Sequence[str], batch_size: int, generator: torch.Generator
) -> list[int]:
    """Indices of a random batch whose captions are all different (at most ``batch_size``:
    fewer only when the data has fewer distinct captions). Scenes are visited in a random
    order and one is skipped when its caption is already in the batch, so every off-diagonal
    pair of the batch is a true negative."""
    chosen: list[int] = []
    seen: set[str] = set()
    for i in torch.randperm(len(captions), generator=generator).tolist():
        if captions[i] not in seen:
            seen.add(captions[i])
            chosen.append(i)
            if len(chosen) == batch_size:
                break
    return chosen


def train(
    config: CLIPConfig, model: CLIPModel | None = None, device: torch.device | None = None
) -> tuple[CLIPModel, dict[str, list[float]]]:
    """AdamW on the training split's (image, caption) pairs, batches of distinct captions;
    after each step the log inverse temperature is clamped into [0, log 100] in place (as
    open_clip does), so it never rests where the loss's clamp gives it no gradient. Returns
    the model (on the CPU, in eval mode) and the curves: loss, temperature per step."""
    from llmcourse.multimodal.data import make_split
    from llmcourse.runtime import autocast, pick_device, seed_everything

    device = device or pick_device()
    seed_everything(config.seed)
    model = (model if model is not None else CLIPModel(config)).to(device).train()
    train_set = make_split("train", config.n_train, config.seed, config.image_size)
    images, ids = train_set.images.to(device), train_set.caption_ids.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": rest, "weight_decay": 0.0}],
        lr=config.lr, fused=device.type == "cuda",
    )  # fmt: skip
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda t: min(1.0, (t + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(t, config.steps) / config.steps)),
    )  # fmt: skip
    order = torch.Generator().manual_seed(config.seed)
    curves: dict[str, list[float]] = {"loss": [], "temperature": []}
    for _ in range(config.steps):
        rows = torch.tensor(distinct_caption_batch(train_set.captions, config.batch_size, order))
        rows = rows.to(device)
        with autocast(device):
            loss = model(images[rows], ids[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        curves["loss"].append(loss.item())
        curves["temperature"].append(model.temperature)
    return model.cpu().eval(), curves


@torch.no_grad()
def retrieval(model: CLIPModel, images: torch.Tensor, ids: torch.Tensor,
              captions: Sequence[str], ks: Sequence[int] = (1, 5)) -> dict[str, Any]:  # fmt: skip
    """Recall@k both ways among the gallery of the given N pairs (a hit: any scene with the
    same caption counts as right), with chance (k / N for distinct captions)."""
    sim = model.encode_image(images) @ model.encode_text(ids).T
    matches = caption_matches(list(captions))
    result: dict[str, Any] = {"gallery": len(captions), "distinct_captions": len(set(captions))}
    for k in ks:
        result[f"R@{k}"] = recall_at_k(sim, k, matches)
        result[f"chance R@{k}"] = k / len(captions)
    return result


def prompt_texts(sizes: Sequence[str] = ()) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """The (shape, color) classes and, for each, its prompts: "a red circle" alone, or one
    per size ("a small red circle", "a large red circle") for a prompt ensemble."""
    from llmcourse.multimodal.data import COLORS, SHAPES

    classes = [(s, c) for s in SHAPES for c in COLORS]
    if not sizes:
        return classes, [[f"a {c} {s}"] for s, c in classes]
    return classes, [[f"a {z} {c} {s}" for z in sizes] for s, c in classes]


@torch.no_grad()
def zero_shot(model: CLIPModel, images: torch.Tensor, labels: Sequence[tuple[str, str]],
              sizes: Sequence[str] = ()) -> dict[str, float]:  # fmt: skip
    """Classify single-object images into the 20 (shape, color) classes by the prompt nearest
    to each image (prompts of one class averaged, then re-normalised: CLIP's ensembling).
    Returns accuracy on the pair, on its shape and its color alone, and the chance levels."""
    from llmcourse.multimodal.data import CAPTION_LEN, COLORS, SHAPES, encode_text

    classes, prompts = prompt_texts(sizes)
    text = torch.stack([
        F.normalize(model.encode_text(torch.stack([encode_text(p, CAPTION_LEN) for p in ps]))
                    .mean(0), dim=-1)
        for ps in prompts
    ])  # fmt: skip
    guess = (model.encode_image(images) @ text.T).argmax(1).tolist()
    got = [classes[g] for g in guess]
    n = len(labels)
    return {
        "accuracy": sum(g == y for g, y in zip(got, labels, strict=True)) / n,
        "shape_accuracy": sum(g[0] == y[0] for g, y in zip(got, labels, strict=True)) / n,
        "color_accuracy": sum(g[1] == y[1] for g, y in zip(got, labels, strict=True)) / n,
        "chance": 1 / len(classes),
        "chance_shape": 1 / len(SHAPES),
        "chance_color": 1 / len(COLORS),
        "n": n,
    }


def single_objects(
    split: str, n: int, seed: int, image_size: int = 32
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """``n`` single-object images of ``split`` (scenes with one object, drawn until there are
    ``n``) and their (shape, color) labels: held-out pairs only for "heldout"."""
    from llmcourse.multimodal.data import make_split

    images, labels = [], []
    draw = 0
    while len(labels) < n:
        batch = make_split(split, 3 * n, seed + 1000 * draw, image_size)  # type: ignore[arg-type]
        for img, scene in zip(batch.images, batch.scenes, strict=True):
            if len(scene.objects) == 1 and len(labels) < n:
                images.append(img)
                labels.append(scene.objects[0].pair)
        draw += 1
    return torch.stack(images), labels


def similarity_batch(model: CLIPModel, split: str, n: int, seed: int,
                     image_size: int = 32) -> dict[str, Any]:  # fmt: skip
    """The (n, n) similarity matrix of the first n scenes of ``make_split(split, ...)`` that
    have distinct captions (their indices are returned, to draw the images)."""
    from llmcourse.multimodal.data import make_split

    pool = make_split(split, 4 * n, seed, image_size)  # type: ignore[arg-type]
    rows: list[int] = []
    for i, c in enumerate(pool.captions):
        if c not in {pool.captions[j] for j in rows} and len(rows) < n:
            rows.append(i)
    with torch.no_grad():
        sim = model.encode_image(pool.images[rows]) @ model.encode_text(pool.caption_ids[rows]).T
    return {"split": split, "pool": 4 * n, "seed": seed, "rows": rows,
            "captions": [pool.captions[i] for i in rows],
            "matrix": [[round(v, 4) for v in r] for r in sim.tolist()]}  # fmt: skip


def evaluate(model: CLIPModel, config: CLIPConfig) -> dict[str, Any]:
    """Retrieval on galleries of ``config.gallery`` test and held-out scenes, zero-shot
    classification of single objects (plain prompts and size-ensembled prompts) and a
    similarity matrix of 8 held-out scenes for the figure."""
    from llmcourse.multimodal.data import SIZES, make_split

    model = model.eval()
    result: dict[str, Any] = {"retrieval": {}, "zero_shot": {}}
    for split in ("test", "heldout"):
        gallery = make_split(split, config.gallery, config.seed + 1, config.image_size)  # type: ignore[arg-type]
        result["retrieval"][split] = retrieval(
            model, gallery.images, gallery.caption_ids, gallery.captions
        )
        images, labels = single_objects(split, config.n_zero_shot, config.seed + 2,
                                        config.image_size)  # fmt: skip
        with torch.no_grad():
            result["zero_shot"][split] = {
                "plain": zero_shot(model, images, labels),
                "ensemble": zero_shot(model, images, labels, SIZES),
            }
    result["similarity"] = similarity_batch(model, "heldout", 8, config.seed + 3,
                                            config.image_size)  # fmt: skip
    return result


RUN_NAME = "clip-tiny"
RUN_VERSION = 1
"""Bumped when the cached run's code changes in a way its recipe fields do not show."""


def run(config: CLIPConfig | None = None) -> Path:
    """The folder of the cached run ``clip-tiny`` (trained on one CPU thread first): the
    weights (``model.safetensors``), the curves and every measurement in ``run.json``."""
    config = config or CLIPConfig()
    provenance = {"recipe": asdict(config), "code": RUN_VERSION,
                  "torch": course_runs.torch_version()}  # fmt: skip

    def build(out: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        from llmcourse.runtime import torch_threads

        with torch_threads(1):
            began = time.perf_counter()
            model, curves = train(config, device=torch.device("cpu"))
            seconds = time.perf_counter() - began
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      str(out / "model.safetensors"))  # fmt: skip
            return {"curves": curves, "train_seconds": round(seconds, 1),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "final_temperature": model.temperature, **evaluate(model, config)}  # fmt: skip

    return course_runs.cached_run(RUN_NAME, provenance, build)


def load(folder: str | Path | None = None) -> CLIPModel:
    """The trained model of a cached run (``run()``'s folder by default), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else run()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"no model.safetensors in {folder}: not a clip run folder")
    config = CLIPConfig(**course_runs.run_record(folder)["provenance"]["recipe"])
    model = CLIPModel(config)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


COURSE_RUNS: dict[str, Callable[[], object]] = {RUN_NAME: lambda: run()}
"""Run name -> a function that builds the run if it is not cached (and returns its folder)."""


def report(record: dict[str, Any]) -> str:
    """The measurements of a run (``run.json`` or ``evaluate``'s dict plus curves) as text."""
    lines = []
    if "curves" in record:
        loss = record["curves"]["loss"]
        tau = record["curves"]["temperature"][-1]
        lines.append(f"loss {loss[0]:.2f} -> {sum(loss[-20:]) / len(loss[-20:]):.2f} (mean of "
                     f"the last 20 steps), temperature {tau:.4f}")  # fmt: skip
    for split, r in record["retrieval"].items():
        cells = "  ".join(f"R@{k} i->t {r[f'R@{k}']['image_to_text']:.0%} t->i "
                          f"{r[f'R@{k}']['text_to_image']:.0%} (chance {r[f'chance R@{k}']:.0%})"
                          for k in (1, 5))  # fmt: skip
        lines.append(f"retrieval {split:<8} gallery {r['gallery']}: {cells}")
    for split, z in record["zero_shot"].items():
        for how, r in z.items():
            lines.append(f"zero-shot {split:<8} {how:<9} (shape, color) {r['accuracy']:.0%} "
                         f"(chance {r['chance']:.0%}), shape {r['shape_accuracy']:.0%}, "
                         f"color {r['color_accuracy']:.0%}, n={r['n']}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.multimodal.clip``: train (or read the cached run) and report."""
    defaults = CLIPConfig()
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.multimodal.clip",
        description="A CLIP-style model (image and text encoders, symmetric InfoNCE with a "
        "learned temperature) trained on the course's shape captions: retrieval recall@k and "
        "zero-shot classification of held-out (shape, color) pairs. With the defaults it "
        f"reads the cached run {RUN_NAME!r} (training it first if needed).",
    )
    parser.add_argument("--steps", type=int, help=f"training steps (default {defaults.steps})")
    parser.add_argument(
        "--image-encoder", choices=IMAGE_ENCODERS,
        help=f"image encoder (default {defaults.image_encoder})",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument("--device", help="auto, cpu, cuda, mps (default: LLMCOURSE_DEVICE or auto)")
    args = parser.parse_args(argv)
    changes = {"steps": args.steps, "image_encoder": args.image_encoder,
               "batch_size": args.batch_size, "seed": args.seed}  # fmt: skip
    try:
        config = replace(defaults, **{k: v for k, v in changes.items() if v is not None})
        if config == defaults and args.device is None:
            record = course_runs.run_record(run())
        else:
            from llmcourse.runtime import pick_device

            model, curves = train(config, device=pick_device(args.device))
            record = {"curves": curves, **evaluate(model, config)}
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
