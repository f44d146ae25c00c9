"""Command line: ``python -m llmcourse.compress --checkpoint NAME|FOLDER --method M --out DIR``.

Loads a course model (``gpt-tiny-tasks``) or a trained folder, quantizes it by ``--method``
(GPTQ and outlier detection calibrate on windows of the training token file the model was
pretrained on, or of ``--calibration FILE.bin``), and writes a compressed checkpoint that
``python -m llmcourse.generate --checkpoint DIR`` runs.

Examples::

    python -m llmcourse.compress --checkpoint gpt-tiny-tasks --method int4-gptq --out runs/q4
    python -m llmcourse.compress --checkpoint runs/gpt-tiny --method int8 --out runs/q8 --eval
    python -m llmcourse.generate --checkpoint runs/q4 --prompt "Return the" --temperature 0
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from llmcourse.checkpoint import CheckpointError

from .gptq import CalibrationConfig, calibration_windows
from .model import METHODS, method_of, quantize_model, save_compressed, stored_bytes


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; unset options take ``CalibrationConfig``'s defaults."""
    defaults = {f.name: f.default for f in fields(CalibrationConfig)}
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.compress",
        description="Quantize a trained GPT or LLaMA and save it as a compressed checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="a course model's name or a trained model's folder")
    add("--method", required=True, choices=list(METHODS), help="how to compress")
    add("--out", type=Path, required=True, help="the folder to write")
    add("--calibration", type=Path, help="a token file (.bin) to calibrate on (default: the "
        "model's own training tokens)")  # fmt: skip
    add("--windows", type=int, help=f"calibration windows ({defaults['windows']})")
    add("--seq-len", type=int, help=f"ids per calibration window ({defaults['seq_len']})")
    add("--seed", type=int, help=f"seed of the calibration windows ({defaults['seed']})")
    add("--eval", action="store_true", help="print the perplexity before and after on val ids")
    return parser


def _load(checkpoint: str) -> tuple[torch.nn.Module, object]:
    from llmcourse import course_models
    from llmcourse.causal_lm import load_trained

    if checkpoint in course_models.list_models():
        return course_models.load(checkpoint, device="cpu")
    if not Path(checkpoint).is_dir():
        raise CheckpointError(
            f"{checkpoint} is neither a course model ({', '.join(course_models.list_models())}) "
            "nor a folder"
        )
    return load_trained(checkpoint, "cpu")


def _token_stream(path: Path) -> torch.Tensor:
    from llmcourse.pretrain.tokenfile import TokenFile

    return torch.from_numpy(np.asarray(TokenFile.open(path).tokens, np.int64))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = {f.name: getattr(args, f.name) for f in fields(CalibrationConfig)}
    config = CalibrationConfig(**{k: v for k, v in chosen.items() if v is not None})
    try:
        model, tokenizer = _load(args.checkpoint)
        calibration, val = None, None
        if method_of(args.method).needs_calibration or args.eval:
            from llmcourse.sft import pretraining_tokens

            train = None if args.calibration is None else _token_stream(args.calibration)
            if train is None or args.eval:
                own_train, val = pretraining_tokens(args.checkpoint)
                train = own_train if train is None else train
            calibration = calibration_windows(train, config.windows, config.seq_len, config.seed)
        compressed = quantize_model(model, args.method, calibration)
        save_compressed(compressed, tokenizer, args.out, {"compressed_from": args.checkpoint})
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    before, after = stored_bytes(model), stored_bytes(compressed)
    print(f"{args.method}: {before / 1e6:.3f} MB -> {after / 1e6:.3f} MB "
          f"({before / after:.2f}x smaller), written to {args.out}")  # fmt: skip
    if args.eval:
        from llmcourse.evaluate.perplexity import perplexity

        print(f"perplexity on val: {perplexity(model, val):.4f} -> "
              f"{perplexity(compressed, val):.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
