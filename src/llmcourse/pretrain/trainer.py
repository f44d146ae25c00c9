"""Pretraining from token files: the chapter-7 causal-LM trainer fed by the chapter-8 data.

``pretrain(cfg)`` is ``llmcourse.causal_lm.train_causal_lm`` (AdamW with decay groups, fused on
CUDA; warm-up then cosine or warmup-stable-decay; gradient accumulation; clipping; bf16
autocast; ``torch.compile``; validation loss; metrics CSV and loss PNG; tokens/s and MFU;
resumable checkpoints) with its windows streamed from memory-mapped token files
(``TokenFileBatches``) instead of a corpus held in memory.

``cfg.data`` is a folder holding ``train.bin`` and ``val.bin`` (``python -m llmcourse.pretrain
data --out DIR``), or the name of a data preset (``llmcourse.pretrain.data.PRESETS``: ``tiny``,
``text-mix``), built once into the course cache and reused.

**Resuming exactly.** The windows of step ``s`` are a function of ``(seed, s)`` alone
(``TokenFile.window_starts``), so the step number *is* the data position; the checkpoint holds
the weights, AdamW's moments, the scheduler's step and every random generator (dropout draws
from PyTorch's). A run stopped after step ``k`` and resumed therefore computes, on a CPU,
exactly the losses of a run that never stopped.

**Several processes.** Under ``torchrun --nproc_per_node=N -m llmcourse.pretrain ...`` every
process joins the group (``llmcourse.parallel.launch.init_from_env``), wraps the model in DDP
and takes its slice of each step's global batch; rank 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from llmcourse.causal_lm.data import Tokenizer, get_tokenizer, spaced_windows
from llmcourse.causal_lm.trainer import PRESETS as CAUSAL_LM_PRESETS
from llmcourse.causal_lm.trainer import TrainConfig, train_causal_lm
from llmcourse.data import cache_dir

from .data import PRESETS as DATA_PRESETS
from .data import DataConfig, build_token_files
from .tokenfile import TokenFile

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # CPU: the chapter-7 tiny GPT on the help topics + instructions (built in seconds)
    "tiny": CAUSAL_LM_PRESETS["tiny"].replace(data="tiny"),
    # a bigger CPU run, or a quick GPU one, on the course's text mix
    "small": CAUSAL_LM_PRESETS["small"].replace(data="text-mix"),
    # GPU: GPT-2 124M's shape, bf16, torch.compile, fused AdamW
    "gpt2-124m": CAUSAL_LM_PRESETS["gpt2-124m"].replace(data="text-mix"),
}
"""Pretraining presets: the causal-LM presets with token files as their data."""


def data_fingerprint(config: DataConfig) -> str:
    """A short hash of everything that decides a pipeline's output."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_folder(name: str, fingerprint: str, build: Callable[[Path], object]) -> Path:
    """``cache_dir()/token_files/NAME-FINGERPRINT``, built once by ``build(folder)``.

    ``build`` writes into a private temporary folder that is renamed into place when complete,
    so a crash leaves no half-built folder, and two processes building at once both end with
    the same complete one (the second rename loses and its copy is discarded).
    """
    folder = cache_dir() / "token_files" / f"{name}-{fingerprint}"
    if (folder / "train.bin").is_file():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first
            if not (folder / "train.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_cached(config: DataConfig, name: str) -> Path:
    """The token files of the pipeline ``config``, built once into the cache."""
    return cached_folder(name, data_fingerprint(config), partial(build_token_files, config))


def token_files(spec: str) -> Path:
    """The folder of token files ``spec`` names: a folder with ``train.bin``, or a data preset
    (built with ``build_cached``)."""
    path = Path(spec).expanduser()
    if (path / "train.bin").is_file():
        return path
    if spec in DATA_PRESETS:
        return build_cached(DATA_PRESETS[spec], spec)
    raise FileNotFoundError(
        f"{spec!r} is neither a folder holding train.bin nor a data preset "
        f"({', '.join(DATA_PRESETS)}); build one with: python -m llmcourse.pretrain data --out DIR"
    )


class TokenFileBatches:
    """Windows of a ``train.bin`` (random, keyed on the step) and a ``val.bin`` (fixed, evenly
    spaced), read through memory maps: only the pages a batch touches leave the disk."""

    def __init__(self, train: TokenFile, val: TokenFile | None) -> None:
        if val is not None and val.meta["tokenizer"] != train.meta["tokenizer"]:
            raise ValueError(f"{train.path} and {val.path} were written by different tokenizers")
        self.train, self.val = train, val
        self.vocab_size = train.vocab_size

    @classmethod
    def open(cls, folder: str | Path, tokenizer: Tokenizer | None = None) -> TokenFileBatches:
        """Open ``folder/train.bin`` (and ``val.bin`` if there), checking that they were written
        with ``tokenizer`` when it is given."""
        folder = Path(folder)
        train = TokenFile.open(folder / "train.bin", tokenizer)
        val = None
        if (folder / "val.bin").is_file():
            val = TokenFile.open(folder / "val.bin", tokenizer)
        return cls(train, val)

    def train_windows(self, step: int, count: int, length: int, seed: int) -> torch.Tensor:
        starts = self.train.window_starts(step, count, length - 1, seed=seed).numpy()
        windows = self.train.tokens[starts[:, None] + np.arange(length)]
        return torch.from_numpy(windows.astype(np.int64))

    def val_windows(self, count: int, length: int) -> torch.Tensor:
        if self.val is None:
            raise FileNotFoundError(
                f"no val.bin beside {self.train.path}: build the data with --val-fraction > 0, "
                "or set eval_every = 0"
            )
        return spaced_windows(torch.from_numpy(self.val.tokens.astype(np.int64)), count, length)


def _group() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pretrain(cfg: TrainConfig, model: nn.Module | None = None) -> dict[str, list[float]]:
    """Train per ``cfg`` on the token files ``cfg.data`` names (``"tiny"`` when unset) and
    return the logged history; see ``llmcourse.causal_lm.train_causal_lm`` for the rest."""
    cfg = cfg.replace(data=cfg.data or "tiny")
    rank, world = _group()
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 builds the data (once), the others then find it
    folder = token_files(cfg.data)
    if world > 1 and rank == 0:
        dist.barrier()
    batches = TokenFileBatches.open(folder, get_tokenizer(cfg.tokenizer))
    return train_causal_lm(cfg.replace(data=str(folder)), model, batches)
