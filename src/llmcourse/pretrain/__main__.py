"""Command line of ``llmcourse.pretrain``.

``python -m llmcourse.pretrain data ...`` builds token files from the course corpora (filters,
de-duplication, mixture weights) and prints what each step removed.
"""

from __future__ import annotations

import argparse

from llmcourse.pretrain.data import add_data_arguments, run_data

_EXAMPLES = """examples:
  python -m llmcourse.pretrain data --out data/tiny
  python -m llmcourse.pretrain data --preset text-mix --out data/mix --tokens 2000000
  python -m llmcourse.pretrain data --out data/mine --source stdlib-docs=3 --source notes/=1
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.pretrain",
        description="Pretraining: prepare the data.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser(
        "data",
        help="build train/val token files from corpora",
        description="Cut corpora into documents, scrub e-mail and IP addresses, drop "
        "low-quality documents, remove exact and near duplicates (MinHash + LSH), tokenize, "
        "mix the sources by weight and write train.bin / val.bin with JSON sidecars and a "
        "report.json.",
    )
    add_data_arguments(data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    return run_data(args)


if __name__ == "__main__":
    raise SystemExit(main())
