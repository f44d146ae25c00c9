"""Pretraining a GPT or a LLaMA on an offline corpus: the recipe, its presets, and the run.

One optimizer step of ``train_causal_lm``:

1. draw ``batch_size * accumulate`` windows of ``seq_len + 1`` tokens (``data``), seeded by the
   step, and split them into ``accumulate`` micro-batches;
2. for each: the forward pass under bf16 autocast (CUDA only), ``causal_lm_loss``, and
   ``backward()`` of the loss divided by ``accumulate``, so the gradients add up to those of
   the whole batch;
3. clip the gradient norm, take an AdamW step (decay on matrices only, fused on CUDA) and move
   the learning rate along its schedule, warm-up + cosine or warmup-stable-decay (``optim``).

The loop is the course's shared ``llmcourse.training.train``: progress bar (with tokens/s and,
on a GPU it knows, the MFU of ``flops``), metrics CSV, validation loss, resumable checkpoints.

The windows come from a *batch source* (``data.BatchSource``): a corpus encoded in memory by
default, token files streamed from disk with ``llmcourse.pretrain``. Run by ``torchrun`` (a
process group is initialised), the model is wrapped in ``DistributedDataParallel``: step ``s``
draws the global batch of ``world_size * batch_size * accumulate`` windows and rank ``r`` takes
the ``r``-th slice, so N ranks of batch B take the same step as one process of batch N * B.
Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from llmcourse.metrics import read_metrics
from llmcourse.plots import close, plot_curves
from llmcourse.runtime import autocast, pick_device, seed_everything
from llmcourse.training import train

from .data import TOKENIZERS, BatchSource, CorpusBatches, get_tokenizer, step_generator
from .flops import flops_per_token, matmul_params, mfu, peak_flops
from .loss import causal_lm_loss
from .optim import SCHEDULES, lr_scheduler, make_adamw, schedule_lr
from .saving import STATE_FILE, architecture_of, save_trained, write_run_files

ARCHITECTURES = ("gpt", "llama")


@dataclass
class TrainConfig:
    """Everything a run needs. The model's shape fields are shared by both architectures
    (``n_embd`` is LLaMA's ``dim``); ``n_kv_heads`` and ``hidden_dim`` are LLaMA's only."""

    arch: str = "gpt"
    corpus: str = "stdlib-docs"
    tokenizer: str = "bpe"
    data: str | None = None  # token files (llmcourse.pretrain): a folder or a data preset name
    # model shape
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    seq_len: int = 128
    vocab_size: int | None = None  # None: the tokenizer's, rounded up to a multiple of 64
    n_kv_heads: int | None = None  # LLaMA's key/value heads (None: n_head)
    hidden_dim: int | None = None  # LLaMA's SwiGLU width (None: 8d/3 rounded up to 32)
    dropout: float = 0.0  # GPT only
    # optimisation
    batch_size: int = 8
    accumulate: int = 1
    steps: int = 300
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 30
    schedule: str = "cosine"  # or "wsd": warmup-stable-decay
    decay_fraction: float = 0.2  # WSD: share of the steps spent decaying
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    # hardware
    device: str | None = None  # None: $LLMCOURSE_DEVICE, else the best available
    bf16: bool = True  # bf16 autocast where the GPU supports it
    compile: bool = False
    # bookkeeping
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every: int = 100
    out: str | None = None  # folder for weights, metrics and checkpoints (None: nothing saved)
    resume: bool = False
    stop_after: int | None = None  # end this run after that step (the schedule keeps `steps`)
    progress: bool = False

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot run."""
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}: {', '.join(ARCHITECTURES)}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}: {', '.join(TOKENIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: {', '.join(SCHEDULES)}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        positive = ("n_layer", "n_head", "n_embd", "seq_len", "batch_size", "accumulate", "steps")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"these settings must be >= 1: {', '.join(bad)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd = {self.n_embd} is not divisible by n_head = {self.n_head}")
        if self.stop_after is not None and not 0 < self.stop_after <= self.steps:
            raise ValueError(f"stop_after must be in 1..steps = {self.steps}")
        if self.resume and self.out is None:
            raise ValueError("resume needs the run's folder: set out")

    def replace(self, **changes: object) -> TrainConfig:
        """A copy with some fields changed (``None`` values are ignored, as from a CLI)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # CPU: 8 x 128 tokens per step; 300 steps (307k tokens) take 10-20 s on two free cores.
    # Smaller batches and more steps learned faster than 16 x 150 for the same tokens.
    "tiny": TrainConfig(n_kv_heads=2),
    # a bigger CPU run (a few minutes per hundred steps), or a quick one on any GPU
    "small": TrainConfig(
        n_layer=6, n_head=6, n_embd=384, seq_len=256, n_kv_heads=2, batch_size=32, steps=2000,
        lr=1e-3,
        min_lr=1e-4, warmup=100, eval_every=250, eval_batches=8, checkpoint_every=250,
    ),
    # GPU: GPT-2 124M's shape (vocabulary padded to 50304 = 64 * 786, as GPT-2's 50257 would
    # be), bf16, torch.compile and fused AdamW; 16 x 4 x 1024 = 65,536 tokens per step
    "gpt2-124m": TrainConfig(
        corpus="stdlib-code", n_layer=12, n_head=12, n_embd=768, seq_len=1024, vocab_size=50304,
        n_kv_heads=4, hidden_dim=2048, batch_size=16, accumulate=4, steps=5000, lr=6e-4,
        min_lr=6e-5, warmup=200, log_every=10, eval_every=250, eval_batches=16,
        checkpoint_every=500, compile=True,
    ),
}  # fmt: skip
"""Training presets, from the CPU-sized ``tiny`` to GPT-2 124M's shape on a GPU."""


def preset(name: str, **changes: object) -> TrainConfig:
    """A copy of ``PRESETS[name]`` with ``changes`` applied (``None`` values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def model_config(cfg: TrainConfig, vocab_size: int):
    """The ``GPTConfig`` or ``LlamaConfig`` of the run's shape (nothing is allocated)."""
    if cfg.arch == "gpt":
        from llmcourse.gpt import GPTConfig

        return GPTConfig(
            vocab_size=vocab_size, n_positions=cfg.seq_len, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout,
        )  # fmt: skip
    from llmcourse.llama import LlamaConfig

    hidden = cfg.hidden_dim or round_up(math.ceil(8 * cfg.n_embd / 3), 32)
    return LlamaConfig(
        vocab_size=vocab_size, dim=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        n_kv_heads=cfg.n_kv_heads or cfg.n_head, hidden_dim=hidden, max_seq_len=cfg.seq_len,
    )  # fmt: skip


def build_model(cfg: TrainConfig, vocab_size: int) -> nn.Module:
    """A freshly initialised ``GPT`` or ``Llama`` of the config's shape."""
    config = model_config(cfg, vocab_size)
    if cfg.arch == "gpt":
        from llmcourse.gpt import GPT

        return GPT(config)
    from llmcourse.llama import Llama

    return Llama(config)


@dataclass
class _Throughput:
    """Turns steps/s into the logged tokens/s and MFU columns."""

    tokens_per_step: int
    flops_token: int
    peak: float | None
    cfg: TrainConfig = field(repr=False)

    def __call__(self, step: int, steps_per_second: float) -> dict[str, float]:
        c = self.cfg
        row = {
            "lr": schedule_lr(
                c.schedule, step - 1, max_lr=c.lr, min_lr=c.min_lr, warmup=c.warmup,
                total=c.steps, decay_fraction=c.decay_fraction,
            ),
            "tokens": step * self.tokens_per_step,
            "tokens_per_s": steps_per_second * self.tokens_per_step,
        }  # fmt: skip
        util = mfu(row["tokens_per_s"], self.flops_token, self.peak)
        if util is not None:
            row["mfu"] = util
        return row


def _group() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_causal_lm(
    cfg: TrainConfig, model: nn.Module | None = None, batches: BatchSource | None = None
) -> dict[str, list[float]]:
    """Train per ``cfg`` and return the logged history (``step``, ``train_loss``, ``lr``,
    ``tokens``, ``tokens_per_s``, ``mfu`` on a known GPU, ``val_loss`` every ``eval_every``
    steps).

    ``model`` continues training a model you already have (e.g. loaded with ``from_hf``); by
    default a fresh one of ``cfg``'s shape is built. ``batches`` is where the windows come from
    (default: ``cfg.corpus`` encoded with ``cfg.tokenizer``; ``llmcourse.pretrain.pretrain``
    passes token files). With ``cfg.out`` the run writes ``config.json``, ``tokenizer.json``,
    ``model.safetensors``, ``metrics.csv``, ``loss.png`` and the resumable ``train_state.pt``
    there; ``cfg.resume`` continues from the latter.
    """
    cfg.check()
    if batches is None and cfg.data is not None:
        raise ValueError(
            f"data = {cfg.data!r} names token files: train with llmcourse.pretrain.pretrain"
        )
    rank, world = _group()
    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # init_from_env's choice
    seed_everything(cfg.seed)
    tokenizer = get_tokenizer(cfg.tokenizer)
    if batches is None:
        batches = CorpusBatches.from_corpus(cfg.corpus, cfg.tokenizer)
    if model is None:
        model = build_model(cfg, cfg.vocab_size or round_up(tokenizer.n_vocab, 64))
    model = model.to(device)
    if model.max_seq_len < cfg.seq_len:
        raise ValueError(f"seq_len = {cfg.seq_len} exceeds the model's {model.max_seq_len}")
    if model.config.vocab_size < batches.vocab_size:
        raise ValueError(
            f"the data's ids go up to {batches.vocab_size - 1}, the model has only "
            f"{model.config.vocab_size} embeddings"
        )
    net = model
    if world > 1:
        from llmcourse.parallel.data_parallel import wrap_ddp

        net = wrap_ddp(model, device)  # broadcasts rank 0's weights
    out = Path(cfg.out) if cfg.out is not None else None
    if out is not None and rank == 0:
        write_run_files(out, architecture_of(model), model, tokenizer, cfg.to_dict())
    optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device)
    scheduler = lr_scheduler(
        optimizer, cfg.schedule, max_lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup,
        total=cfg.steps, decay_fraction=cfg.decay_fraction,
    )  # fmt: skip
    val_count = cfg.eval_batches * cfg.batch_size * world  # the same windows for any world size
    val_windows = batches.val_windows(val_count, cfg.seq_len + 1)

    def next_batch(step: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
        per_rank = cfg.batch_size * cfg.accumulate
        windows = batches.train_windows(step, per_rank * world, cfg.seq_len + 1, cfg.seed)
        windows = windows[rank * per_rank : (rank + 1) * per_rank].to(device, non_blocking=True)
        if world > 1:  # each rank its own dropout masks, a function of the step (resumable)
            torch.manual_seed(step_generator(cfg.seed * 1000 + rank, step).initial_seed())
        return windows if cfg.accumulate == 1 else windows.split(cfg.batch_size)

    def forward_loss(windows: torch.Tensor) -> torch.Tensor:
        with autocast(device, enabled=cfg.bf16):
            logits = net(windows[:, :-1])
        return causal_lm_loss(logits, windows)

    # compiling the loss with the model fuses the softmax over the vocabulary into the graph
    step_loss = torch.compile(forward_loss) if cfg.compile else forward_loss

    def loss_fn(_: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return step_loss(windows)

    def evaluate(_: nn.Module) -> dict[str, float]:
        """The mean loss over the validation windows (each rank scores every N-th one)."""
        total = torch.zeros(2, dtype=torch.float64, device=device)
        for windows in val_windows[rank::world].split(cfg.batch_size):
            windows = windows.to(device)
            with autocast(device, enabled=cfg.bf16):
                logits = model(windows[:, :-1])
            total[0] += causal_lm_loss(logits, windows).double() * len(windows)
            total[1] += len(windows)
        if world > 1:
            dist.all_reduce(total)
        return {"val_loss": (total[0] / total[1]).item()}

    tokens_per_step = cfg.batch_size * cfg.accumulate * cfg.seq_len * world
    shape = model.config
    width = shape.n_embd if hasattr(shape, "n_embd") else shape.dim
    throughput = _Throughput(
        tokens_per_step,
        flops_per_token(matmul_params(model), shape.n_layer, width, cfg.seq_len),
        peak_flops(device),
        cfg,
    )
    history = train(
        net,
        optimizer,
        next_batch,
        loss_fn,
        cfg.stop_after or cfg.steps,
        evaluate=evaluate,
        eval_every=cfg.eval_every,
        log_every=cfg.log_every,
        grad_clip=cfg.grad_clip,
        metrics_path=out / "metrics.csv" if out else None,
        checkpoint_path=out / STATE_FILE if out else None,
        checkpoint_every=cfg.checkpoint_every,
        resume=cfg.resume,
        progress=cfg.progress,
        scheduler=scheduler,
        accumulate=cfg.accumulate,
        on_log=throughput,
        is_main=rank == 0,
    )
    model.eval()
    if out is not None and rank == 0:
        save_trained(out, model)
        _plot_losses(out)
    return history


def _plot_losses(out: Path) -> None:
    columns = read_metrics(out / "metrics.csv")
    curves = {"train": (columns["step"], columns["train_loss"])}
    if "val_loss" in columns:
        steps, losses = columns["step"], columns["val_loss"]
        kept = [i for i, v in enumerate(losses) if not math.isnan(v)]
        curves["validation"] = ([steps[i] for i in kept], [losses[i] for i in kept])
    close(plot_curves(curves, ylabel="cross-entropy (nats/token)", path=out / "loss.png"))
