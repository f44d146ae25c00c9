"""``python -m llmcourse.chat``: talk to a fine-tuned model in the terminal.

    python -m llmcourse.chat --course gpt-tiny-sft
    python -m llmcourse.chat --checkpoint runs/sft --prompt 'Reverse the word "chat".'

Without ``--prompt`` it reads one message per line from standard input and streams each
answer; ``/reset`` forgets the conversation, ``/quit`` (or end of input) leaves.
"""

from __future__ import annotations

import argparse
import sys

from llmcourse.checkpoint import CheckpointError
from llmcourse.generate import GenerationConfig
from llmcourse.runtime import pick_device

from .session import ChatSession


def _parser() -> argparse.ArgumentParser:
    defaults = GenerationConfig()
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.chat",
        description="Chat with a fine-tuned model (chat template, streamed answers).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a folder written by llmcourse.sft")
    source.add_argument("--course", help="a course chat model: gpt-tiny-sft, gpt-tiny-ppo, ...")
    parser.add_argument("--prompt", help="answer this one message and exit")
    parser.add_argument("--system", help="a system message put before the conversation")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0 (the default) is greedy decoding"
    )
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best)")
    return parser


def _load(args: argparse.Namespace):
    from llmcourse.rlhf import RECIPES as RLHF_RECIPES
    from llmcourse.rlhf import load_rlhf
    from llmcourse.sft import load_chat_model, load_sft

    device = pick_device(args.device)
    if args.course in RLHF_RECIPES and args.course != "gpt-tiny-rm":
        return load_rlhf(args.course, device=device)
    if args.course:
        return load_sft(args.course, device=device)
    return load_chat_model(args.checkpoint, device=device)


def _say(session: ChatSession, text: str) -> None:
    for piece in session.reply(text):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = GenerationConfig(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_p=args.top_p, seed=args.seed,
        )  # fmt: skip
        model, tokenizer = _load(args)
        session = ChatSession(model, tokenizer, config, system=args.system)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    if args.prompt is not None:
        try:
            _say(session, args.prompt)
        except ValueError as err:
            parser.exit(2, f"error: {err}\n")
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message; /reset starts over, /quit leaves.")
    while True:
        if interactive:
            sys.stdout.write("you> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            session.reset()
            continue
        if not text.strip():
            continue
        try:
            _say(session, text)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
