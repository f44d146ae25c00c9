"""Instruction data: the course's computed tasks, arithmetic, and synthetic dialogues.

Instruction-tuning data comes from three kinds of source: existing NLP tasks rewritten as
instruction/answer pairs, everyday dialogue, and *synthetic* data made by a program or a model
and then filtered. Here all three are small and offline, and every answer is computed, so
every answer is right:

* ``instructions``: the six kinds of ``llmcourse.data.instruction_pairs`` (reverse,
  capitalise, sort letters, count a letter, add, repeat), labelled by kind;
* ``arithmetic``: the ``a+b=c`` lines of ``llmcourse.data.arithmetic_problems`` turned into
  ``Compute a+b.`` -> ``c``;
* ``dialogue``: generated two-turn conversations whose second question only makes sense with
  the first answer in view (``Now write it in capital letters.``).

``build_splits`` draws a training set and a *held-out* set whose prompts occur neither in the
training set nor in the pretraining corpora of the base model (``instructions`` and
``arithmetic``), so accuracy on it measures following new instructions, not recall.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmcourse.data import arithmetic_problems, instruction_pairs

from .template import Message

TASKS = ("reverse", "capitals", "sort", "count", "add", "repeat", "arithmetic", "dialogue")
"""The task types, for per-type evaluation."""

_PREFIXES = {
    "Reverse the word": "reverse",
    "Write ": "capitals",
    "Sort the letters": "sort",
    "How many times": "count",
    "What is ": "add",
    "Repeat ": "repeat",
}


@dataclass(frozen=True)
class Example:
    """One conversation whose last message is the assistant's reference answer."""

    messages: tuple[tuple[str, str], ...]
    task: str

    def chat(self) -> list[Message]:
        """The messages as ``[{"role": ..., "content": ...}, ...]``."""
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def prompt(self) -> list[Message]:
        """Everything before the final answer."""
        return self.chat()[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1][1]

    @property
    def key(self) -> str:
        """The user turns joined: what must not repeat between training and held-out sets."""
        return "\n".join(c for r, c in self.messages if r == "user")


def task_of(instruction: str) -> str:
    """The kind of an ``instruction_pairs`` instruction."""
    for prefix, task in _PREFIXES.items():
        if instruction.startswith(prefix):
            return task
    raise ValueError(f"not an instruction_pairs instruction: {instruction!r}")


def single_turn(instruction: str, answer: str, task: str) -> Example:
    return Example((("user", instruction), ("assistant", answer)), task)


def instruction_examples(n: int, seed: int) -> list[Example]:
    """``n`` examples from ``instruction_pairs(n, seed)``."""
    return [single_turn(i, r, task_of(i)) for i, r in instruction_pairs(n, seed)]


def arithmetic_examples(n: int, seed: int) -> list[Example]:
    """``n`` examples ``Compute a+b.`` -> ``c`` from ``arithmetic_problems(n, seed)``."""
    out = []
    for line in arithmetic_problems(n, seed):
        question, answer = line.split("=")
        out.append(single_turn(f"Compute {question}.", answer, "arithmetic"))
    return out


_FOLLOW_UPS = (
    ("Now write it in capital letters.", str.upper),
    ("Now reverse it.", lambda w: w[::-1]),
    ("Now sort its letters alphabetically.", lambda w: "".join(sorted(w))),
)


def dialogue_examples(n: int, seed: int) -> list[Example]:
    """``n`` synthetic two-turn dialogues: a first instruction about a word, then a follow-up
    that refers to the first answer as "it" (so the history has to be read)."""
    rng = random.Random(seed)
    out = []
    for instruction, answer in instruction_pairs(4 * n, seed):
        if len(out) == n:
            break
        task = task_of(instruction)
        if task not in ("reverse", "capitals", "sort"):
            continue
        follow, rule = rng.choice(_FOLLOW_UPS)
        messages = (
            ("user", instruction),
            ("assistant", answer),
            ("user", follow),
            ("assistant", rule(answer)),
        )
        out.append(Example(messages, "dialogue"))
    return out


def _mix(n: int, seed: int, weights: dict[str, float]) -> list[Example]:
    counts = {k: round(n * w / sum(weights.values())) for k, w in weights.items()}
    sources = {
        "instructions": instruction_examples,
        "arithmetic": arithmetic_examples,
        "dialogue": dialogue_examples,
    }
    examples = [e for k, c in counts.items() for e in sources[k](c, seed)]
    random.Random(seed).shuffle(examples)
    return examples


MIX = {"instructions": 0.6, "arithmetic": 0.2, "dialogue": 0.2}
"""The default mixture of the three sources (shares of the examples)."""


def pretraining_keys() -> set[str]:
    """The prompts the base model saw in pretraining (the ``instructions`` and ``arithmetic``
    corpora, seed 0), in ``Example.key`` form."""
    keys = {i for i, _ in instruction_pairs()}
    keys |= {f"Compute {line.split('=')[0]}." for line in arithmetic_problems()}
    return keys


def build_splits(
    n_train: int = 6000, n_heldout: int = 400, seed: int = 1, mix: dict[str, float] | None = None
) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out examples) mixed per ``mix`` (default ``MIX``).

    Both are drawn from seeds other than the pretraining corpora's 0; a candidate whose prompt
    is in the training set or the pretraining corpora never enters the held-out set, and
    duplicates inside the held-out set are dropped.
    """
    if seed == 0:
        raise ValueError("seed 0 generated the pretraining corpora: pick another seed")
    mix = mix or MIX
    train = _mix(n_train, seed, mix)
    seen = {e.key for e in train} | pretraining_keys()
    heldout: list[Example] = []
    attempt = 0
    while len(heldout) < n_heldout and attempt < 10:
        for e in _mix(2 * n_heldout, seed + 1000 + attempt, mix):
            if e.key not in seen and len(heldout) < n_heldout:
                heldout.append(e)
                seen.add(e.key)
        attempt += 1
    return train, heldout
