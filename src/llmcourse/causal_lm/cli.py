"""The ``train`` and ``count`` commands shared by ``python -m llmcourse.gpt`` and
``python -m llmcourse.llama``.

Every option left out keeps the preset's value (``TrainConfig`` / ``PRESETS`` hold the
defaults; the parser holds none), so ``--preset tiny --steps 50`` is the tiny recipe, shorter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data import TOKENIZERS, get_tokenizer
from .trainer import PRESETS, TrainConfig, model_config, round_up, train_causal_lm

_EXAMPLES = """examples:
  python -m {prog} train --preset tiny --out runs/{arch}-tiny
  python -m {prog} train --preset tiny --out runs/{arch}-tiny --steps 600 --resume
  python -m {prog} train --preset gpt2-124m --out runs/{arch}-124m      (GPU: bf16, compile)
  python -m {prog} count
"""

OVERRIDES: list[tuple[str, type, str]] = [
    # (TrainConfig field, type, help): options whose default is the preset's
    ("corpus", str, "a built-in corpus name (llmcourse.data) or a text file / folder"),
    ("steps", int, "total optimizer steps (the schedule's length)"),
    ("stop_after", int, "end this run after that step; --resume continues it later"),
    ("batch_size", int, "sequences per micro-batch"),
    ("accumulate", int, "micro-batches per optimizer step (gradient accumulation)"),
    ("seq_len", int, "context length in tokens"),
    ("n_layer", int, "number of blocks"),
    ("n_head", int, "attention heads"),
    ("n_embd", int, "model width d"),
    ("lr", float, "peak learning rate"),
    ("min_lr", float, "learning rate at the end of the cosine"),
    ("warmup", int, "warm-up steps"),
    ("schedule", str, "learning-rate schedule after the warm-up: cosine or wsd"),
    ("decay_fraction", float, "wsd: share of the steps spent decaying"),
    ("weight_decay", float, "AdamW weight decay on matrices and embeddings"),
    ("grad_clip", float, "clip the gradient norm to this"),
    ("log_every", int, "log a metrics row every N steps"),
    ("eval_every", int, "validation loss every N steps"),
    ("eval_batches", int, "validation batches per evaluation"),
    ("checkpoint_every", int, "save the resumable state every N steps"),
    ("seed", int, "seed of the initialisation and of the batches"),
]


def build_parser(arch: str) -> argparse.ArgumentParser:
    """The parser of ``python -m llmcourse.<arch>`` (exposed so that ``--help`` is tested)."""
    prog = f"llmcourse.{arch}"
    parser = argparse.ArgumentParser(
        prog=f"python -m {prog}",
        description=f"Train a {'GPT-2' if arch == 'gpt' else 'LLaMA'} on an offline corpus, "
        "or print parameter counts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXAMPLES.format(prog=prog, arch=arch),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from scratch or resume a run")
    t.add_argument("--preset", choices=list(PRESETS), default="tiny", help="(default: tiny)")
    t.add_argument("--out", type=Path, help=f"run folder (default: runs/{arch}-PRESET)")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--tokenizer", choices=TOKENIZERS, help="course BPE or UTF-8 bytes")
    t.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto ($LLMCOURSE_DEVICE)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast (CUDA)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, kind, text in OVERRIDES:
        t.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    sub.add_parser("count", help="parameter counts of the model and training presets")
    return parser


def config_from_args(arch: str, args: argparse.Namespace) -> TrainConfig:
    """The preset with the options given on the command line applied."""
    out = args.out or Path("runs") / f"{arch}-{args.preset}"
    changes = {name: getattr(args, name) for name, _, _ in OVERRIDES}
    return PRESETS[args.preset].replace(
        arch=arch,
        out=str(out),
        resume=args.resume or None,
        tokenizer=args.tokenizer,
        device=args.device,
        compile=args.compile,
        bf16=args.bf16,
        progress=not args.no_progress,
        **changes,
    )


def _train(arch: str, args: argparse.Namespace) -> dict:
    cfg = config_from_args(arch, args)
    history = train_causal_lm(cfg)
    last = {key: values[-1] for key, values in history.items() if values}
    return {"out": cfg.out, "preset": args.preset, **last}


def _count(arch: str) -> dict:
    """Parameters of the architecture's named sizes and of the training presets' models."""
    if arch == "gpt":
        from llmcourse.gpt import PRESETS as MODEL_PRESETS
        from llmcourse.gpt import param_count
    else:
        from llmcourse.llama import PRESETS as MODEL_PRESETS
        from llmcourse.llama import param_count
    counts = {f"model {name}": param_count(config) for name, config in MODEL_PRESETS.items()}
    for name, cfg in PRESETS.items():
        vocab = cfg.vocab_size or round_up(get_tokenizer(cfg.tokenizer).n_vocab, 64)
        counts[f"train preset {name}"] = param_count(model_config(cfg.replace(arch=arch), vocab))
    return counts


def main(arch: str, argv: list[str] | None = None) -> int:
    """Run the command line of ``python -m llmcourse.<arch>``; returns the exit status."""
    args = build_parser(arch).parse_args(argv)
    try:
        result = _train(arch, args) if args.command == "train" else _count(arch)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
