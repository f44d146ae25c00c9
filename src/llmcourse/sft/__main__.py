"""``python -m llmcourse.sft``: fine-tune a base model on the instruction data and measure it.

    python -m llmcourse.sft --preset tiny --out runs/sft            # CPU, about a minute
    python -m llmcourse.sft --preset gpu --out runs/sft-gpu         # a bigger model, bf16

The run loads the base (``SFTConfig.base``), adds the chat tokens, scores exact match per task
on the held-out set before (plain prompt and template) and after fine-tuning, measures the
pretraining validation loss before and after, saves the model for ``python -m llmcourse.chat``
and prints a JSON summary with the time, date and device.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

from llmcourse.runtime import pick_device

from .data import build_splits
from .evaluate import exact_match_by_task
from .template import add_special_tokens
from .train import (
    PRESETS,
    SFTConfig,
    finetune,
    load_base,
    pretraining_loss,
    pretraining_tokens,
    save_chat_model,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.sft", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--out", help="folder for the fine-tuned model (default: not saved)")
    parser.add_argument("--base", help="course model name, model folder or standin:<preset>")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--aux-lm-weight", type=float, help="lambda of L_FT + lambda L_PT")
    parser.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--device")
    parser.add_argument("--progress", action="store_true", default=None)
    return parser


def run(cfg: SFTConfig, out: str | None = None) -> dict:
    """Fine-tune per ``cfg`` with the before/after measurements; return the summary."""
    device = pick_device(cfg.device)
    began = time.perf_counter()
    model, base_tok, source = load_base(cfg.base)
    model.to(device)
    tokenizer = add_special_tokens(model, base_tok)
    train, heldout = build_splits(cfg.n_train, cfg.n_heldout, cfg.data_seed)
    val_ids = pretraining_tokens(cfg.base)[1]
    before = {
        "plain": exact_match_by_task(model, tokenizer, heldout, style="plain"),
        "template": exact_match_by_task(model, tokenizer, heldout),
        "pretraining_loss": pretraining_loss(model, val_ids, cfg.seq_len),
    }
    tuned = time.perf_counter()
    history = finetune(model, tokenizer, cfg, train)
    tuned = time.perf_counter() - tuned
    after = {
        "template": exact_match_by_task(model, tokenizer, heldout),
        "pretraining_loss": pretraining_loss(model, val_ids, cfg.seq_len),
    }
    summary = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "base": source,
        "config": dataclasses.asdict(cfg),
        "before": before,
        "after": after,
        "final_train_loss": history["train_loss"][-1],
        "finetune_seconds": tuned,
        "total_seconds": time.perf_counter() - began,
    }
    if out:
        save_chat_model(out, model.cpu(), tokenizer, {"base": source, "recipe": summary["config"]})
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cfg = PRESETS[args.preset].replace(
            base=args.base, steps=args.steps, lr=args.lr, aux_lm_weight=args.aux_lm_weight,
            packing=args.packing, device=args.device, progress=args.progress,
        )  # fmt: skip
        cfg.check()
        summary = run(cfg, args.out)
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.exit(2, f"error: {err}\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
