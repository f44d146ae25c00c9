"""Command line of ``llmcourse.pretrain``.

``python -m llmcourse.pretrain --preset tiny --out DIR`` pretrains a GPT (or, with ``--arch
llama``, a LLaMA) on token files; ``python -m llmcourse.pretrain data ...`` builds token files
from the course corpora (filters, de-duplication, mixture weights) and prints what each step
removed. Options left out keep the preset's value (``TRAIN_PRESETS``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmcourse.causal_lm.cli import OVERRIDES
from llmcourse.causal_lm.data import TOKENIZERS
from llmcourse.pretrain.data import add_data_arguments, run_data
from llmcourse.pretrain.trainer import TRAIN_PRESETS, pretrain

_EXAMPLES = """examples:
  python -m llmcourse.pretrain --preset tiny --out runs/pt-tiny
  python -m llmcourse.pretrain --preset tiny --out runs/pt-tiny --max-steps 100   (stop early)
  python -m llmcourse.pretrain --preset tiny --out runs/pt-tiny --resume          (continue)
  python -m llmcourse.pretrain --preset tiny --out runs/pt-wsd --schedule wsd
  python -m llmcourse.pretrain --preset gpt2-124m --out runs/pt-124m     (GPU: bf16, compile)
  torchrun --standalone --nproc_per_node=4 -m llmcourse.pretrain --preset small --out runs/ddp

  python -m llmcourse.pretrain data --out data/mix --preset text-mix     (token files)
  python -m llmcourse.pretrain --preset small --data data/mix --out runs/pt-mix
"""

_DATA_EXAMPLES = """examples:
  python -m llmcourse.pretrain data --out data/tiny
  python -m llmcourse.pretrain data --preset text-mix --out data/mix --tokens 2000000
  python -m llmcourse.pretrain data --out data/mine --source stdlib-docs=3 --source notes/=1
"""

_SKIPPED = ("corpus", "stop_after")  # token files replace the corpus; --max-steps is stop_after


def train_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m llmcourse.pretrain`` (training)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.pretrain",
        description="Pretrain a GPT or a LLaMA on token files, with warm-up + cosine or WSD, "
        "gradient accumulation, clipping, bf16, compile, validation loss, metrics.csv, "
        "loss.png and resumable checkpoints; 'python -m llmcourse.pretrain data --help' builds "
        "the token files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXAMPLES,
    )
    parser.add_argument("--preset", choices=list(TRAIN_PRESETS), default="tiny",
                        help="(default: tiny)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="run folder (default: runs/pretrain-PRESET)")
    parser.add_argument("--data", help="token-file folder (with train.bin, val.bin) or a data "
                        "preset built into the cache: tiny, text-mix")  # fmt: skip
    parser.add_argument("--arch", choices=("gpt", "llama"), help="(default: gpt)")
    parser.add_argument("--max-steps", type=int, metavar="N", dest="stop_after",
                        help="end this run after step N with a checkpoint (the schedule keeps "
                        "--steps); --resume continues it")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, help="must be the token files' one")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto ($LLMCOURSE_DEVICE)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 (CUDA)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, kind, text in OVERRIDES:
        if name not in _SKIPPED:
            parser.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    return parser


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.pretrain data",
        description="Cut corpora into documents, scrub e-mail and IP addresses, drop "
        "low-quality documents, remove exact and near duplicates (MinHash + LSH), tokenize, "
        "mix the sources by weight and write train.bin / val.bin with JSON sidecars and a "
        "report.json.",
        epilog=_DATA_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        from llmcourse.parallel.launch import init_from_env

        rank = init_from_env().rank
    try:
        changes = {name: getattr(args, name) for name, _, _ in OVERRIDES if name not in _SKIPPED}
        cfg = TRAIN_PRESETS[args.preset].replace(
            out=str(args.out or Path("runs") / f"pretrain-{args.preset}"),
            data=args.data,
            arch=args.arch,
            stop_after=args.stop_after,
            resume=args.resume or None,
            tokenizer=args.tokenizer,
            device=args.device,
            compile=args.compile,
            bf16=args.bf16,
            progress=not args.no_progress and rank == 0,
            **changes,
        )
        history = pretrain(cfg)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if rank == 0:
        last = {key: values[-1] for key, values in history.items() if values}
        print(json.dumps({"out": cfg.out, "preset": args.preset, **last}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit status.
    ``data`` as the first word builds token files; anything else trains."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:
        return run_data(_data_parser().parse_args(argv[1:]))
    return _run_train(train_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
