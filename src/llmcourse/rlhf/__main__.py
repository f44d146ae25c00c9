"""``python -m llmcourse.rlhf COMMAND ...``: the chapter's command lines in one place.

python -m llmcourse.rlhf reward --out runs/rm            # a reward model from preferences
python -m llmcourse.rlhf dpo --out runs/dpo              # DPO on the same pairs
python -m llmcourse.rlhf ppo --help                      # PPO against a reward model
python -m llmcourse.rlhf grpo --help                     # GRPO with the exact-answer reward
python -m llmcourse.rlhf course                          # the course's cached runs
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "reward": "llmcourse.rlhf.reward",
    "dpo": "llmcourse.rlhf.dpo",
    "ppo": "llmcourse.rlhf.ppo",
    "grpo": "llmcourse.rlhf.grpo",
    "course": "llmcourse.rlhf.course",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if not argv or argv[0] not in COMMANDS:
        said = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"error: {said}: choose from {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(__doc__.strip(), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    sys.argv = [f"python -m llmcourse.rlhf {argv[0]}", *argv[1:]]
    module.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
