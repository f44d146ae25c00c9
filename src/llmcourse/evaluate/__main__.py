"""``python -m llmcourse.evaluate``: run checkpoints over the harness's suites, side by side.

Example: ``python -m llmcourse.evaluate --checkpoint gpt-tiny-tasks gpt-tiny-sft --suite
exact_match pass_at_k --out runs/eval`` prints the table and writes ``comparison.json`` and
``comparison.png`` into ``runs/eval``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from llmcourse.checkpoint import CheckpointError
from llmcourse.evaluate.harness import COURSE_CHECKPOINTS, PRESETS, SUITES, compare


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.evaluate",
        description="Evaluate checkpoints (course names or folders) on offline suites.",
    )
    parser.add_argument("--checkpoint", nargs="+", default=list(COURSE_CHECKPOINTS),
                        help="course checkpoint names or folders (default: the five course "
                        "checkpoints)")  # fmt: skip
    parser.add_argument("--suite", nargs="+", default=list(SUITES), choices=list(SUITES),
                        help="suites to run (default: all)")  # fmt: skip
    parser.add_argument("--preset", choices=list(PRESETS), default="course",
                        help="sample sizes (tiny: a quick check)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder for comparison.json / comparison.png")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = compare(args.checkpoint, args.suite, PRESETS[args.preset])
    except (ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.markdown())
    if args.out:
        path = result.save_json(args.out / "comparison.json")
        fig = result.figure()
        fig.savefig(args.out / "comparison.png", dpi=120)
        print(f"wrote {path} and {args.out / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
