"""The course checkpoints: small pretrained models that chapters 8-14 load by name.

Rather than every page training its own base model, the course keeps a few named models, each
defined by a fixed, seeded *recipe* (data, shape, optimisation) and trained on the CPU the first
time it is asked for, then cached::

    model, tokenizer = course_models.load("gpt-tiny-text")   # trains once, then < 1 s

* ``gpt-tiny-text``: a 4-layer GPT on the course's text mix (library docstrings, Python's help
  topics, library code, instructions), built by the chapter-8 pipeline (quality filters,
  de-duplication, mixture) into token files; the course BPE.
* ``gpt-tiny-tasks``: the same shape on the generated ``arithmetic`` and ``instructions``
  corpora, one document per problem or instruction, ``<|endoftext|>`` after each, for six
  times the steps (3000, about six passes over the data: run for 1000 the recipe learnt the
  formats but few answers; run for 2500 or more it copies, capitalises and reverses words);
  the base that chapters 9-12 fine-tune. Its tokenizer
  is UTF-8 bytes plus an end-of-text id: the course BPE cuts numbers unevenly ("864" is 8|64
  but "394" is 3|9|4) and merges letters that the tasks reverse, sort and count, whereas bytes
  keep one token per digit and letter, at about twice the tokens of the BPE on the
  instructions (73 bytes against 34 BPE tokens per instruction, on average).

A model's cache folder, ``llmcourse.data.cache_dir()/course_models/NAME``, holds
``model.safetensors``, ``config.json``, ``tokenizer.json`` (``causal_lm.load_trained``'s
layout), the run's ``metrics.csv`` and ``loss.png``, and ``recipe.json``: the recipe, its hash,
the training time and the final losses. A recipe whose hash differs from the cached one is
trained again, never loaded stale. Training happens in a temporary folder renamed into place
when complete, under a lock file, so two processes asking at once train once and both load the
same complete folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmcourse.causal_lm.data import ByteTokenizer, Tokenizer
from llmcourse.causal_lm.saving import load_trained
from llmcourse.causal_lm.trainer import TrainConfig
from llmcourse.checkpoint import CheckpointError
from llmcourse.data import cache_dir
from llmcourse.metrics import read_metrics
from llmcourse.runtime import pick_device

RECIPE_VERSION = 1
"""Bumped when code that a recipe's result depends on changes in a way its fields do not show."""

_SHAPE = {"arch": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "seq_len": 128}
_OPTIM = {
    "batch_size": 16, "steps": 500, "lr": 3e-3, "min_lr": 3e-4, "warmup": 30,
    "weight_decay": 0.1, "grad_clip": 1.0, "log_every": 5, "eval_every": 50, "eval_batches": 8,
    "checkpoint_every": 0, "device": "cpu", "bf16": False, "compile": False, "seed": 0,
}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """How a course model is made: its data (``"text-mix"``: the chapter-8 pipeline preset;
    ``"tasks"``: arithmetic + instructions as byte token files) and its training run."""

    name: str
    description: str
    data: str
    train: TrainConfig

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of everything that decides the weights."""
        payload = {
            "version": RECIPE_VERSION,
            "data": _data_spec(self.data),
            "train": self.train.to_dict(),
            "torch": torch.__version__.split("+")[0],
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


RECIPES: dict[str, Recipe] = {
    "gpt-tiny-text": Recipe(
        "gpt-tiny-text",
        "4-layer GPT (d = 128, context 128, course BPE) on the course's text mix",
        "text-mix",
        TrainConfig(tokenizer="bpe", **_SHAPE, **_OPTIM),
    ),
    "gpt-tiny-tasks": Recipe(
        "gpt-tiny-tasks",
        "4-layer GPT (d = 128, context 128, bytes + <|endoftext|>) on arithmetic and "
        "instructions: the base that chapters 9-12 fine-tune",
        "tasks",
        TrainConfig(
            tokenizer="bytes-eot", **_SHAPE, **{**_OPTIM, "steps": 3000, "eval_every": 100}
        ),
    ),
}
"""The named course models and their recipes."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

TASK_SOURCES = ("arithmetic", "instructions")
TASK_VAL_FRACTION = 0.05


def _data_spec(data: str) -> dict:
    if data == "tasks":
        return {"sources": TASK_SOURCES, "val_fraction": TASK_VAL_FRACTION, "tokenizer": "bytes"}
    from llmcourse.pretrain.data import PRESETS

    return dataclasses.asdict(PRESETS[data])


def build_task_files(folder: str | Path, seed: int = 0) -> None:
    """``train.bin`` / ``val.bin`` of the ``tasks`` data: every arithmetic line and every
    instruction block a document, shuffled together (seeded), 5 % of each source held out,
    in bytes with ``<|endoftext|>`` (id 256) after each document."""
    from llmcourse.pretrain.data import corpus_documents
    from llmcourse.pretrain.tokenfile import TokenFileWriter, describe_tokenizer

    tokenizer = ByteTokenizer(eot=True)
    info = describe_tokenizer(tokenizer, name="bytes-eot")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    for source in TASK_SOURCES:
        docs = corpus_documents(source)
        n_val = round(TASK_VAL_FRACTION * len(docs))
        order = rng.permutation(len(docs))
        parts["val"] += [(source, docs[i]) for i in order[:n_val]]
        parts["train"] += [(source, docs[i]) for i in order[n_val:]]
    for part, docs in parts.items():
        with TokenFileWriter(Path(folder) / f"{part}.bin", info) as writer:
            for i in rng.permutation(len(docs)):
                source, text = docs[i]
                writer.add(tokenizer.encode(text), source)
            writer.close({"seed": seed, "sources": list(TASK_SOURCES)})


def _token_files(data: str) -> Path:
    from llmcourse.pretrain.trainer import cached_folder, token_files

    if data == "tasks":
        fingerprint = hashlib.sha256(json.dumps(_data_spec(data)).encode()).hexdigest()[:12]
        return cached_folder("tasks", fingerprint, build_task_files)
    return token_files(data)


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------

RECIPE_FILE = "recipe.json"


def list_models() -> dict[str, str]:
    """The course models' names and descriptions."""
    return {name: recipe.description for name, recipe in RECIPES.items()}


def recipe(name: str, steps: int | None = None) -> Recipe:
    """The recipe of ``name``; ``steps`` shortens it, with a shorter warm-up and fewer
    validation batches (a different recipe, with its own hash: meant for tests and quick
    looks, never mistaken for the full model)."""
    if name not in RECIPES:
        raise KeyError(f"no course model {name!r}: choose from {', '.join(RECIPES)}")
    base = RECIPES[name]
    if steps is None:
        return base
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = base.train
    cfg = t.replace(
        steps=steps, warmup=min(t.warmup, max(1, steps // 10)),
        eval_every=min(t.eval_every, steps), eval_batches=min(t.eval_batches, max(1, steps // 50)),
    )  # fmt: skip
    return dataclasses.replace(base, train=cfg)


def token_files(name: str) -> Path:
    """The folder of ``train.bin`` and ``val.bin``, the token files ``name`` is trained on
    (built first if missing): what a later stage measures forgetting on, or mixes back in."""
    if name not in RECIPES:
        raise KeyError(f"no course model {name!r}: choose from {', '.join(RECIPES)}")
    return _token_files(RECIPES[name].data)


def path(name: str) -> Path:
    """The cache folder of a course model (it exists once the model is trained)."""
    if name not in RECIPES:
        raise KeyError(f"no course model {name!r}: choose from {', '.join(RECIPES)}")
    return cache_dir() / "course_models" / name


def info(name: str) -> dict:
    """The cached model's ``recipe.json`` (hash, settings, training seconds, final losses)."""
    file = path(name) / RECIPE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{name} is not trained yet (no {file}): call load({name!r})")
    return json.loads(file.read_text(encoding="utf-8"))


def metrics(name: str) -> dict[str, list[float]]:
    """The logged columns of the cached model's training run (``step``, ``train_loss``,
    ``val_loss``, ``lr``, ``tokens``, ``tokens_per_s``)."""
    return read_metrics(path(name) / "metrics.csv")


@contextlib.contextmanager
def _lock(file: Path) -> Iterator[None]:
    """An exclusive lock on ``file`` (another process asking waits); a no-op where ``fcntl``
    is missing, where the atomic rename alone keeps the cache whole."""
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """The lock held while the cached checkpoint ``name`` is trained (by ``train`` here, by
    ``sft.load_sft`` for the fine-tuned ones): a second process asking waits, then loads."""
    return _lock(cache_dir() / "course_models" / f"{name}.lock")


def _cached_status(folder: Path, fingerprint: str) -> str | None:
    """``None`` when ``folder`` holds the model of this fingerprint, else why not."""
    file = folder / RECIPE_FILE
    if not file.is_file():
        return "not trained yet"
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"{file} is damaged ({err})"
    if saved.get("fingerprint") != fingerprint:
        return f"the recipe changed (cached {saved.get('fingerprint')}, now {fingerprint})"
    return None


def train(name: str, *, steps: int | None = None, force: bool = False) -> Path:
    """Train ``name`` into its cache folder unless the same recipe is there already (``force``
    retrains); returns the folder. Shows no progress bar; takes the recipe's minutes."""
    r = recipe(name, steps)
    folder = path(name)
    with cache_lock(name):
        if not force and _cached_status(folder, r.fingerprint()) is None:
            return folder
        _train_into(r, folder)
    return folder


def _train_into(r: Recipe, folder: Path) -> None:
    from llmcourse.pretrain.trainer import pretrain

    for stale in folder.parent.glob(f"{folder.name}.tmp-*"):  # left by a killed run (we hold
        shutil.rmtree(stale, ignore_errors=True)  # the lock, so nobody else is training)
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        began, cpu_began = time.perf_counter(), time.process_time()
        data = _token_files(r.data)
        data_seconds = time.perf_counter() - began
        history = pretrain(r.train.replace(data=str(data), out=str(tmp)))
        seconds = time.perf_counter() - began
        for leftover in tmp.glob("train_state*.pt"):  # the optimizer's state: not needed here
            leftover.unlink()
        val = [v for v in history.get("val_loss", []) if not math.isnan(v)]
        record = {
            "name": r.name,
            "description": r.description,
            "fingerprint": r.fingerprint(),
            "data": r.data,
            "train": {k: v for k, v in r.train.to_dict().items() if k not in ("out", "data")},
            "seconds": round(seconds, 1),
            "cpu_seconds": round(time.process_time() - cpu_began, 1),
            "data_seconds": round(data_seconds, 1),
            "threads": torch.get_num_threads(),
            "final_train_loss": history["train_loss"][-1],
            "final_val_loss": val[-1] if val else None,
            "trained_on": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
        }
        (tmp / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        old = folder.with_name(f"{folder.name}.old-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(
    name: str, *, device: str | torch.device | None = None, steps: int | None = None
) -> tuple[nn.Module, Tokenizer]:
    """The course model ``name`` and its tokenizer, in eval mode on ``device`` (``None``:
    ``runtime.pick_device``, so ``LLMCOURSE_DEVICE`` decides).

    The first call trains the model by its recipe (minutes on a CPU); later calls load the
    cached weights. A cached model of another recipe is retrained; a damaged cached file is
    reported with a warning that names it, and the model is retrained. ``steps`` asks for a
    shortened recipe (see ``recipe``).
    """
    r = recipe(name, steps)
    folder = path(name)
    target = device if isinstance(device, torch.device) else pick_device(device)
    if _cached_status(folder, r.fingerprint()) is None:
        try:
            return load_trained(folder, target)
        except CheckpointError as err:
            warnings.warn(f"the cached course model {name} is damaged, retraining: {err}",
                          stacklevel=2)  # fmt: skip
            with cache_lock(name):
                _train_into(r, folder)
            return load_trained(folder, target)
    train(name, steps=steps)
    return load_trained(folder, target)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.course_models --list | --train NAME [--steps N] [--force] |
    --all [--threads N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.course_models",
        description="The course's pretrained checkpoints: list them, or train one into the "
        "cache (done automatically by course_models.load on first use).",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="names, cache state and figures")
    action.add_argument("--train", choices=list(RECIPES), metavar="NAME",
                        help=f"train a model into the cache: {', '.join(RECIPES)}")  # fmt: skip
    action.add_argument("--all", action="store_true",
                        help="every course checkpoint the book loads: pretrained, fine-tuned "
                        "and RLHF runs (a no-op for those already cached)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, help="a shortened recipe (tests, quick looks)")
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    args = parser.parse_args(argv)
    if args.list:
        for name, text in list_models().items():
            status = _cached_status(path(name), RECIPES[name].fingerprint())
            line = f"{name}: {text}\n    {path(name)}: {status or 'cached'}"
            if status is None:
                saved = info(name)
                line += (
                    f", trained in {saved['seconds']} s, train loss "
                    f"{saved['final_train_loss']:.3f}, val loss {saved['final_val_loss']:.3f}"
                )
            print(line)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.all:
        return _train_all()
    try:
        folder = train(args.train, steps=args.steps, force=args.force)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"path": str(folder), **info(args.train)}, indent=2))
    return 0


LATER_RUNS: tuple[str, ...] = (
    "llmcourse.prompting.templates",
    "llmcourse.prompting.icl",
    "llmcourse.prompting.scratchpad",
    "llmcourse.prompting.soft_prompt",
    "llmcourse.agents.train",
    "llmcourse.compress.sweep",
    "llmcourse.compress.distill",
    "llmcourse.compress.report",
    "llmcourse.multimodal.fusion",
    "llmcourse.multimodal.clip",
    "llmcourse.multimodal.connector",
)
"""Modules of later chapters whose ``COURSE_RUNS`` (name -> a function that builds the run if
it is not cached) ``--all`` also runs, in this order."""


def _train_all() -> int:
    """Train whatever of the course checkpoints is missing from the cache, base models first,
    then ``llmcourse.sft``'s fine-tuned ones, then ``llmcourse.rlhf``'s runs, then the cached
    runs of the later chapters (``LATER_RUNS``); print each one's time."""
    import importlib

    from llmcourse.rlhf import RECIPES as RLHF_RECIPES
    from llmcourse.rlhf import load_rlhf
    from llmcourse.sft import RECIPES as SFT_RECIPES
    from llmcourse.sft import load_sft

    loaders = (
        {name: train for name in RECIPES}
        | {name: load_sft for name in SFT_RECIPES}
        | {name: load_rlhf for name in RLHF_RECIPES}
    )
    for module in LATER_RUNS:
        runs = importlib.import_module(module).COURSE_RUNS
        loaders |= {name: (lambda _name, build=build: build()) for name, build in runs.items()}
    for name, loader in loaders.items():
        began = time.perf_counter()
        loader(name)
        print(f"{name}: ready in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
