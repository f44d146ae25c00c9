"""Command line of ``llmcourse.tokenizers``: train, encode, and measure training speed."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from llmcourse.data import load_corpus
from llmcourse.tokenizers.bpe import BPETokenizer, train_bpe, train_bpe_naive
from llmcourse.tokenizers.wordpiece import train_wordpiece

_EXAMPLES = """examples:
  python -m llmcourse.tokenizers train pydoc-topics --vocab-size 4096 --out bpe.json
  python -m llmcourse.tokenizers train notes.txt --kind wordpiece --vocab-size 2000 --out vocab.txt
  python -m llmcourse.tokenizers encode bpe.json "Hello, 中华人民!"
  python -m llmcourse.tokenizers benchmark stdlib-docs --megabytes 2 --vocab-size 4096 \\
      --naive-merges 50 --json bench.json
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.tokenizers",
        description="Byte-level BPE and WordPiece tokenizers: train one on a corpus, encode "
        "text with a saved one, or measure how fast BPE trains.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a tokenizer and save it")
    train.add_argument("corpus", help="a built-in corpus name (python -m llmcourse.data --list), "
                       "a text file or a directory")  # fmt: skip
    train.add_argument("--kind", choices=("bpe", "wordpiece"), default="bpe",
                       help="byte-level BPE (default) or WordPiece")  # fmt: skip
    train.add_argument("--vocab-size", type=int, default=4096,
                       help="tokens in the vocabulary (default: 4096)")  # fmt: skip
    train.add_argument("--megabytes", type=float, help="train on the first N MB of the text")
    train.add_argument("--out", required=True, help="where to save (JSON for BPE, vocab.txt "
                       "for WordPiece)")  # fmt: skip
    encode = sub.add_parser("encode", help="encode text with a saved BPE tokenizer")
    encode.add_argument("tokenizer", help="a file written by `train`")
    encode.add_argument("text")
    bench = sub.add_parser("benchmark", help="BPE training speed, incremental vs full recount")
    bench.add_argument("corpus")
    bench.add_argument("--megabytes", type=float, default=1.0,
                       help="train on the first N MB of the text (default: 1)")  # fmt: skip
    bench.add_argument("--vocab-size", type=int, default=4096,
                       help="vocabulary of the full training run (default: 4096)")  # fmt: skip
    bench.add_argument("--naive-merges", type=int, default=50,
                       help="merges to time for both methods (default: 50)")  # fmt: skip
    for p in (train, encode, bench):
        p.add_argument("--json", help="also write the report to this JSON file")
    return parser


def _head(text: str, megabytes: float | None) -> str:
    if megabytes is None:
        return text
    if megabytes <= 0:
        raise ValueError("--megabytes must be positive")
    return text.encode("utf-8")[: int(megabytes * 1e6)].decode("utf-8", errors="ignore")


def benchmark(text: str, vocab_size: int, naive_merges: int) -> dict:
    """Train on ``text`` to ``vocab_size`` with incremental counts, and time the first
    ``naive_merges`` merges of both methods (which learn the same merges)."""
    _, full = train_bpe(text, vocab_size)
    naive_tok, naive = train_bpe_naive(text, 256 + naive_merges)
    inc_tok, inc = train_bpe(text, 256 + naive_merges)
    if naive_tok.merges != inc_tok.merges:
        raise AssertionError("the two training methods learned different merges")
    return {
        "bytes": len(text.encode("utf-8")),
        "characters": len(text),
        "vocab_size": vocab_size,
        "merges": len(full.pair_counts),
        "pretokenize_seconds": round(full.count_seconds, 3),
        "merge_seconds": round(full.merge_seconds, 3),
        "total_seconds": round(full.seconds, 3),
        "merges_per_second": round(full.merges_per_second, 1),
        "compared_merges": len(inc.pair_counts),
        "naive_merge_seconds": round(naive.merge_seconds, 3),
        "incremental_merge_seconds": round(inc.merge_seconds, 4),
        "speedup": round(naive.merge_seconds / max(inc.merge_seconds, 1e-9), 1),
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            text = _head(load_corpus(args.corpus).text, args.megabytes)
            if args.kind == "bpe":
                tok, log = train_bpe(text, args.vocab_size, special_tokens=["<|endoftext|>"])
                tok.save(args.out)
                report = {"merges": len(tok.merges), "seconds": round(log.seconds, 3)}
            else:
                wp = train_wordpiece(text, args.vocab_size)
                wp.save(args.out)
                report = {"vocabulary": len(wp.vocab)}
            report |= {"kind": args.kind, "out": args.out, "characters": len(text)}
        elif args.command == "encode":
            tok = BPETokenizer.load(args.tokenizer)
            ids = tok.encode(args.text, allowed_special="all")
            report = {"ids": ids, "tokens": tok.token_strings(ids)}
        else:
            text = _head(load_corpus(args.corpus).text, args.megabytes)
            report = benchmark(text, args.vocab_size, args.naive_merges)
    except (ValueError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    print(json.dumps(report, ensure_ascii=False, indent=None if "ids" in report else 2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
