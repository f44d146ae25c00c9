"""``python -m llmcourse.agents``: watch a fine-tuned agent solve a task step by step.

    python -m llmcourse.agents --checkpoint gpt-tiny-agent \\
        --task "Cost of 3 figs and 2 yams?" --memory fig=47 yam=85

    python -m llmcourse.agents --checkpoint gpt-tiny-agent --heldout 0

``--checkpoint`` is a course agent (``gpt-tiny-agent``, fine-tuned and cached on first use)
or the folder of a chat checkpoint. The memory comes from ``--memory key=value ...`` and/or
``--memory-file`` (a JSON object); ``--heldout I`` takes the question and memory of the
``I``-th held-out problem instead. Each step (thought, action, observation) is printed, then
the answer, or the step limit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from llmcourse.checkpoint import CheckpointError
from llmcourse.runtime import pick_device
from llmcourse.sft.template import ChatTokenizer

from .problems import build_splits
from .react import LINE_TOKENS, model_completer, run_agent
from .tools import Memory, default_tools
from .train import RECIPES, load_agent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.agents", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", default="gpt-tiny-agent",
        help=f"a course agent ({', '.join(RECIPES)}) or a chat checkpoint's folder",
    )  # fmt: skip
    parser.add_argument("--task", help="the question for the agent")
    parser.add_argument("--memory", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--memory-file", help="a JSON object of key: value facts")
    parser.add_argument("--heldout", type=int, metavar="I", help="use held-out problem I")
    parser.add_argument("--max-steps", type=int, default=RECIPES["gpt-tiny-agent"].max_steps)
    parser.add_argument("--max-new-tokens", type=int, default=LINE_TOKENS, help="per line")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    return parser


def read_memory(pairs: list[str], path: str | None) -> Memory:
    """The memory from ``key=value`` strings and a JSON file (``ValueError`` saying what is
    wrong with either)."""
    memory = Memory()
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ValueError(f"cannot read the memory file {path}: {err.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of key: value facts")
        for key, value in data.items():
            memory.write(key, value)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--memory takes key=value pairs, got {pair!r}")
        memory.write(key, value.strip())
    return memory


def load_checkpoint(
    name: str, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ChatTokenizer]:
    """A course agent by name, or a chat checkpoint's folder; ``ValueError`` otherwise."""
    if name in RECIPES:
        return load_agent(name, device)
    if Path(name).is_dir():
        from llmcourse.sft.train import load_chat_model

        return load_chat_model(name, device)
    raise ValueError(
        f"unknown checkpoint {name!r}: use one of {', '.join(RECIPES)} or a checkpoint folder"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
        memory = read_memory(args.memory, args.memory_file)
        task = args.task
        if args.heldout is not None:
            config = RECIPES["gpt-tiny-agent"]
            heldout = build_splits(0, config.n_heldout, config.data_seed)[1]
            if not 0 <= args.heldout < len(heldout):
                raise ValueError(f"--heldout must be in 0..{len(heldout) - 1}")
            problem = heldout[args.heldout]
            task = task or problem.question
            for key, value in problem.memory:
                memory.write(key, value)
            print(f"right answer: {problem.answer}")
        if not task:
            raise ValueError("give a --task (or --heldout I)")
        model, tokenizer = load_checkpoint(args.checkpoint, pick_device(args.device))
        complete = model_completer(model, tokenizer, args.max_new_tokens)
    except (ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"task: {task}")
    print(f"memory: {memory.entries or '(empty)'}")
    result = run_agent(
        complete, task, default_tools(memory), max_steps=args.max_steps,
        on_step=lambda i, step: print(step.show(i), flush=True),
    )  # fmt: skip
    if result.answer is not None:
        print(f"Answer: {result.answer}")
    else:
        print(f"(no answer: stopped at the {result.stopped} of {args.max_steps} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
