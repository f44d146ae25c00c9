"""Command line: ``python -m llmcourse.bert pretrain|finetune``.

Examples::

    python -m llmcourse.bert pretrain --preset tiny --out runs/bert-tiny
    python -m llmcourse.bert pretrain --preset small --device cuda --compile --out runs/bert-small
    python -m llmcourse.bert pretrain --preset tiny --out runs/bert-tiny --steps 800 --resume
    python -m llmcourse.bert finetune --pretrained runs/bert-tiny --out runs/bert-tiny/finetune
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

from llmcourse.plots import close, plot_curves

from .data import BertInputs
from .finetune import FinetuneConfig, compare
from .pretrain import PRETRAIN_PRESETS, load_pretrained, preset, pretrain


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that ``--help`` can be tested). Options left out keep
    the preset's (or ``FinetuneConfig``'s) value."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.bert",
        description="BERT: pretrain a small one (masked LM + next-sentence prediction) on the "
        "offline corpora, then fine-tune it on a classification task against a model "
        "trained from scratch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="MLM + NSP pretraining; writes a run folder")
    p.add_argument("--preset", choices=list(PRETRAIN_PRESETS), default="tiny")
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-len", type=int, help="tokens per sentence pair")
    p.add_argument("--corpus", help="a corpus name of llmcourse.data, or a text file")
    p.add_argument("--vocab", dest="vocab_file", help="a vocab.txt to use (skips training one)")
    p.add_argument("--vocab-size", type=int, help="WordPiece entries to train")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, mps or auto (default: $LLMCOURSE_DEVICE)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--out", type=Path, default=Path("runs/bert"))
    f = sub.add_parser("finetune", help="fine-tune a pretrained run and a from-scratch model")
    f.add_argument("--pretrained", type=Path, required=True, help="a folder from 'pretrain'")
    for field in fields(FinetuneConfig):
        f.add_argument("--" + field.name.replace("_", "-"), type=type(field.default))
    f.add_argument("--device", help="cpu, cuda, mps or auto")
    f.add_argument("--out", type=Path, help="where to write results.json and accuracy.png")
    return parser


def _pretrain(args: argparse.Namespace) -> dict:
    cfg = preset(
        args.preset,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        max_len=args.max_len,
        corpus=args.corpus,
        vocab_file=args.vocab_file,
        vocab_size=args.vocab_size,
        seed=args.seed,
    )
    run = pretrain(cfg, out=args.out, device=args.device, compile=args.compile, resume=args.resume)
    h = run.history
    return {
        "out": str(args.out),
        "parameters": run.model.num_params(),
        "seconds": round(run.seconds, 1),
        "val_mlm_loss": h["val_mlm_loss"][-1],
        "val_nsp_accuracy": h["val_nsp_accuracy"][-1],
    }


def _finetune(args: argparse.Namespace) -> dict:
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(FinetuneConfig)
        if getattr(args, f.name) is not None
    }
    cfg = replace(FinetuneConfig(), **overrides)
    model, tokenizer = load_pretrained(args.pretrained)
    runs = compare(cfg, model, BertInputs(tokenizer, cfg.max_len), device=args.device)
    result = {
        "config": asdict(cfg),
        "test_accuracy": {name: run.accuracy for name, run in runs.items()},
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        fig = plot_curves(
            {n: (r.history["eval_step"], r.history["test_accuracy"]) for n, r in runs.items()},
            ylabel="held-out accuracy",
            title=f"fine-tuning on {cfg.task}",
            path=args.out / "accuracy.png",
        )
        close(fig)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _pretrain(args) if args.command == "pretrain" else _finetune(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
