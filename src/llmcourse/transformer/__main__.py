"""Command line: ``python -m llmcourse.transformer train|speed|positions``.

Examples::

    python -m llmcourse.transformer train --task reverse --preset tiny --out runs/transformer
    python -m llmcourse.transformer train --task sort --preset small --device cuda --compile
    python -m llmcourse.transformer speed --lengths 16 64 256 1024 --out runs/transformer
    python -m llmcourse.transformer positions --d-model 64 --out runs/transformer
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from llmcourse.checkpoint import save_checkpoint
from llmcourse.plots import close, plot_curves, save_figure
from llmcourse.runtime import pick_device, seed_everything

from .fit import PRESETS, train_seq2seq
from .positional import sinusoidal_encoding
from .seq2seq_tasks import TASKS
from .speed import plot_speed, rnn_vs_transformer


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that ``--help`` can be tested)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.transformer",
        description="The encoder-decoder Transformer: train it on a digit task, time it "
        "against RNNs, draw the sinusoidal positional encoding.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on reversing or sorting digit strings")
    t.add_argument("--task", choices=sorted(TASKS), default="reverse")
    t.add_argument("--preset", choices=list(PRESETS), default="tiny")
    t.add_argument("--steps", type=int, help="override the preset's number of steps")
    t.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    t.add_argument("--max-len", type=int, default=10, help="longest input string (10)")
    t.add_argument("--post-norm", action="store_true", help="LayerNorm after each sublayer")
    t.add_argument("--positions", choices=("sinusoidal", "learned"), default="sinusoidal")
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--device", help="cpu, cuda, mps or auto (default: $LLMCOURSE_DEVICE)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--eval-every", type=int, default=100, help="exact match every N steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=Path("runs/transformer"))
    s = sub.add_parser("speed", help="time an RNN, an LSTM and a Transformer layer")
    s.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    s.add_argument("--d-model", type=int, default=128)
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--device", help="cpu, cuda, mps or auto")
    s.add_argument("--out", type=Path, default=Path("runs/transformer"))
    p = sub.add_parser("positions", help="plot the sinusoidal positional encoding")
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("runs/transformer"))
    return parser


def _train(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    run = train_seq2seq(
        args.task,
        args.preset,
        args.steps,
        args.lr,
        args.max_len,
        not args.post_norm,
        args.positions,
        args.dropout,
        args.seed,
        pick_device(args.device),
        args.compile,
        args.eval_every,
        args.out / "metrics.csv",
        progress=True,
    )
    save_checkpoint(
        args.out / "model.pt", run.model, step=run.settings["steps"], extra=run.settings
    )
    fig = plot_curves(
        {"train": run.history["train_loss"]},
        logy=True,
        ylabel="cross-entropy",
        path=args.out / "loss.png",
    )
    close(fig)
    return {
        "exact_match": run.exact_match,
        "heldout": len(run.task.heldout),
        "train_seconds": round(run.seconds, 1),
        **run.settings,
    }


def _speed(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    result = rnn_vs_transformer(args.lengths, args.d_model, batch=args.batch, device=device)
    fig = plot_speed(result, f"time per step on {device}")
    save_figure(fig, args.out / "speed.png")
    close(fig)
    return result


def _positions(args: argparse.Namespace) -> dict:
    table = sinusoidal_encoding(args.length, args.d_model)
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    image = ax.imshow(table.T.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xlabel("position")
    ax.set_ylabel("dimension")
    fig.colorbar(image, ax=ax)
    save_figure(fig, args.out / "positions.png")
    close(fig)
    return {"plot": str(args.out / "positions.png")}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": _train, "speed": _speed, "positions": _positions}
    try:
        result = commands[args.command](args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
