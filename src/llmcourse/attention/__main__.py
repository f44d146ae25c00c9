"""Command line: ``python -m llmcourse.attention kernel`` or ``... unscramble``.

Examples::

    python -m llmcourse.attention kernel --out runs/attention          # Nadaraya-Watson fits
    python -m llmcourse.attention unscramble --preset tiny --out runs/attention
    python -m llmcourse.attention unscramble --preset base --device cuda --checkpoint u.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from llmcourse.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.plots import close, plot_curves, save_figure
from llmcourse.runtime import pick_device, seed_everything

from . import kernel, unscramble

PRESETS = {
    "tiny": {"d_model": 32, "n_heads": 2, "steps": 300, "batch": 64},
    "small": {"d_model": 64, "n_heads": 2, "steps": 600, "batch": 128},
    "base": {"d_model": 128, "n_heads": 4, "steps": 2000, "batch": 256},
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that ``--help`` can be tested)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.attention",
        description="Attention: Nadaraya-Watson kernel regression, and a one-layer attention "
        "model that unscrambles characters, with heat maps of its attention.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kernel", help="fit y = 2 sin(x) + x^0.8 with fixed and learned widths")
    k.add_argument("--steps", type=int, default=200, help="steps to learn the width (200)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--out", type=Path, default=Path("runs/attention"), help="folder for plots")
    u = sub.add_parser("unscramble", help="train the unscrambler and draw its attention")
    u.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    u.add_argument("--steps", type=int, help="override the preset's number of steps")
    u.add_argument("--device", help="cpu, cuda, mps or auto (default: $LLMCOURSE_DEVICE)")
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--checkpoint", type=Path, help="save the trained model here")
    u.add_argument("--load", type=Path, help="skip training: load a checkpoint (same --preset)")
    u.add_argument("--out", type=Path, default=Path("runs/attention"), help="folder for plots")
    return parser


def _kernel(args: argparse.Namespace) -> dict:
    x, y, x_test, y_true = kernel.toy_regression(seed=args.seed)
    fixed, _ = kernel.nadaraya_watson(x_test, x, y)
    model, losses = kernel.fit_width(x, y, steps=args.steps)
    with torch.no_grad():
        learned, _ = model(x_test, x, y)
    fig = plot_curves({"leave-one-out MSE": losses}, title="Learning the kernel width")
    save_figure(fig, args.out / "kernel_width.png")
    close(fig)
    return {
        "learned_width": model.width,
        "test_mse_width_1": float(((fixed - y_true) ** 2).mean()),
        "test_mse_learned": float(((learned - y_true) ** 2).mean()),
        "plot": str(args.out / "kernel_width.png"),
    }


def _unscramble(args: argparse.Namespace) -> dict:
    preset = dict(PRESETS[args.preset])
    if args.steps is not None:
        preset["steps"] = args.steps
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.load:
        model = unscramble.Unscrambler(
            32, len(unscramble.SENTENCE), preset["d_model"], preset["n_heads"]
        )
        load_checkpoint(args.load, model)
        accuracy = unscramble.evaluate(model)
    else:
        run = unscramble.train_unscrambler(seed=args.seed, device=device, progress=True, **preset)
        model, accuracy = run.model, (run.sentence_accuracy, run.symbol_accuracy)
        fig = plot_curves({"train": run.history["train_loss"]}, logy=True, ylabel="cross-entropy")
        save_figure(fig, args.out / "unscramble_loss.png")
        close(fig)
        if args.checkpoint:
            save_checkpoint(args.checkpoint, model, step=preset["steps"], extra=preset)
    reading, weights = unscramble.sentence_attention(model.cpu())
    fig = unscramble.plot_attention(weights, unscramble.axis_labels(unscramble.SCRAMBLED))
    save_figure(fig, args.out / "unscramble_attention.png")
    close(fig)
    return {
        "sentence_accuracy": accuracy[0],
        "symbol_accuracy": accuracy[1],
        "input": unscramble.SCRAMBLED,
        "reading": reading,
        "plot": str(args.out / "unscramble_attention.png"),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _kernel(args) if args.command == "kernel" else _unscramble(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
