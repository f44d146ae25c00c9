"""Command line: ``python -m llmcourse.generate --checkpoint DIR --prompt TEXT [options]``.

Loads a model trained with ``python -m llmcourse.gpt train`` (or ``llama train``), encodes the
prompt with the checkpoint's tokenizer and prints the continuation as the tokens arrive.
Generation stops after ``--max-new-tokens`` or at the tokenizer's ``<|endoftext|>``.

Examples::

    python -m llmcourse.generate --checkpoint runs/gpt-tiny --prompt "The list" --temperature 0
    python -m llmcourse.generate --checkpoint runs/gpt-tiny --prompt "Return the" \\
        --temperature 0.8 --top-p 0.9 --seed 1 --max-new-tokens 100
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from llmcourse.runtime import pick_device

from .loop import GenerationConfig, stream

END_OF_TEXT = "<|endoftext|>"
_OPTIONS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed")


class CheckpointUnreadable(RuntimeError):
    """The checkpoint folder is missing or cannot be loaded."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that ``--help`` can be tested). Unset options take
    ``GenerationConfig``'s defaults, which live only there."""
    defaults = {f.name: f.default for f in fields(GenerationConfig)}
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.generate",
        description="Stream text from a trained GPT or LLaMA checkpoint, one token at a time.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained model's folder")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    add = parser.add_argument
    add("--max-new-tokens", type=int, help=f"tokens to generate ({defaults['max_new_tokens']})")
    add("--temperature", type=float, help=f"0 = greedy ({defaults['temperature']})")
    add("--top-k", type=int, help="keep only the k most likely tokens (off)")
    add("--top-p", type=float, help="keep the most likely tokens up to probability p (off)")
    add("--repetition-penalty", type=float, help=f"({defaults['repetition_penalty']}: off)")
    add("--seed", type=int, help="random seed, for the same text every run (none)")
    add("--no-cache", action="store_true", help="recompute every step instead of a KV cache")
    add("--device", help="cpu, cuda, mps or auto (default: $LLMCOURSE_DEVICE, else auto)")
    return parser


def load(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The model (on ``device``) and tokenizer saved in ``checkpoint``
    (``llmcourse.causal_lm.load_trained``), or a ``CheckpointUnreadable`` saying what is wrong."""
    if not checkpoint.is_dir():
        raise CheckpointUnreadable(f"no checkpoint folder at {checkpoint}")
    from llmcourse.causal_lm import load_trained

    try:
        return load_trained(checkpoint, device)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise CheckpointUnreadable(
            f"cannot load the checkpoint in {checkpoint}: {type(err).__name__}: {err}"
        ) from err


def end_of_text_id(tokenizer: Any) -> int | None:
    """The id of ``<|endoftext|>`` when the tokenizer has one."""
    return getattr(tokenizer, "special_tokens", {}).get(END_OF_TEXT)


def decode_stream(tokenizer: Any, tokens: Iterator[int]) -> Iterator[str]:
    """Text pieces as the tokens come. A byte-level token can end in the middle of a UTF-8
    character; its text is held back (it decodes to U+FFFD) until the character is whole."""
    ids: list[int] = []
    shown = 0
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd") and len(text) > shown:
            yield text[shown:]
            shown = len(text)
    text = tokenizer.decode(ids)
    if len(text) > shown:
        yield text[shown:]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    try:
        device = pick_device(args.device)
        model, tokenizer = load(args.checkpoint, device)
        stop = end_of_text_id(tokenizer)
        config = GenerationConfig(
            **chosen, use_cache=not args.no_cache, stop_ids=() if stop is None else (stop,)
        )
        prompt = tokenizer.encode(args.prompt)
        if not prompt and stop is not None:
            prompt = [stop]  # an empty prompt: start a new document
        tokens = (int(t) for t in stream(model, torch.tensor([prompt], dtype=torch.long), config))
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        for piece in decode_stream(tokenizer, (t for t in tokens if t != stop)):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    except (CheckpointUnreadable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
