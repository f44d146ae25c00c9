"""Multi-step problems: made-up facts in a memory, questions that need 2-3 lookups and sums.

Each problem comes with its own small memory of invented facts (prices of fruit, ages of
people, distances to towns) drawn afresh for every problem, so no fact can be learned by
heart: the only way to the answer is to look the numbers up. The question then asks for a
combination that needs multi-digit arithmetic, which the course's tiny models cannot do
reliably in their heads (chapter 9's base model gets 5 % of two-number sums right)::

    memory:   fig=47  yam=85  plum=22  nut=61
    question: Cost of 3 figs and 2 yams?
    solution: Thought: need 3 fig, 2 yam
              Action: lookup[fig]      Observation: 47
              Action: lookup[yam]      Observation: 85
              Action: calc[3*47+2*85]  Observation: 311
              Answer: 311

``solution_lines`` writes that transcript (the fine-tuning data); ``direct_question`` writes
the same facts into the question itself, for the model that must answer without tools.
``build_splits`` draws a training set and a held-out set whose questions (the text, whatever
the values) never occur in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .react import ACTION, ANSWER, OBSERVATION, THOUGHT
from .tools import Calculator

ITEMS = ("fig", "yam", "plum", "pear", "lime", "kiwi", "date", "bean", "nut", "bun", "pea", "leek")
PEOPLE = ("Ann", "Bob", "Cal", "Dan", "Eve", "Fay", "Gus", "Ida", "Jon", "Kim", "Lev", "Max")
TOWNS = ("Avon", "Bree", "Cray", "Dunn", "Eske", "Fenn", "Gale", "Holt", "Isca", "Lund")
KINDS = ("cost", "price gap", "age gap", "age sum", "trip")
DATA_VERSION = 2
"""Raised whenever the problems or their transcripts change: part of the run's provenance."""
MEMORY_SIZE = 4
"""Facts in each problem's memory: the ones the question needs, then distractors."""


@dataclass(frozen=True)
class Problem:
    """A question, the memory it is asked against, the keys to look up (in order), the
    arithmetic that answers it, and the answer."""

    kind: str
    question: str
    memory: tuple[tuple[str, int], ...]
    keys: tuple[str, ...]
    expression: str
    answer: int

    @property
    def plan(self) -> str:
        """The thought that starts the solution: the keys to look up, each with its count
        when the question gives one (``need 3 fig, 2 yam``), so that the numbers the
        calculation needs from the question are written down next to the lookups."""
        counts = [w for w in self.question.split() if w.isdigit()]
        if len(counts) == len(self.keys):
            return "need " + ", ".join(f"{n} {k}" for n, k in zip(counts, self.keys, strict=True))
        return "need " + ", ".join(self.keys)

    @property
    def facts(self) -> dict[str, int]:
        return dict(self.memory)


def _draw(rng: random.Random, kind: str) -> tuple[str, list[str], dict[str, int], str]:
    """(question, needed keys, values of the needed keys, expression with placeholders)."""
    if kind in ("cost", "price gap"):
        x, y = rng.sample(ITEMS, 2)
        px, py = rng.sample(range(10, 100), 2)
        if kind == "cost":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            question = f"Cost of {a} {x}s and {b} {y}s?"
            return question, [x, y], {x: px, y: py}, f"{a}*{{}}+{b}*{{}}"
        px, py = max(px, py), min(px, py)
        return f"How much more is a {x} than a {y}?", [x, y], {x: px, y: py}, "{}-{}"
    if kind in ("age gap", "age sum"):
        if kind == "age sum":
            names = rng.sample(PEOPLE, 3)
            ages = [rng.randint(10, 99) for _ in names]
            question = f"{names[0]}, {names[1]}, {names[2]}: total age?"
            keys = [n.lower() for n in names]
            return question, keys, dict(zip(keys, ages, strict=True)), "{}+{}+{}"
        x, y = rng.sample(PEOPLE, 2)
        ax, ay = sorted(rng.sample(range(10, 100), 2), reverse=True)
        keys = [x.lower(), y.lower()]
        return f"How much older is {x} than {y}?", keys, {keys[0]: ax, keys[1]: ay}, "{}-{}"
    if kind == "trip":
        a, b = rng.sample(TOWNS, 2)
        da, db = rng.sample(range(100, 1000), 2)
        question = f"Km for round trips to {a} and {b}?"
        return question, [a.lower(), b.lower()], {a.lower(): da, b.lower(): db}, "2*{}+2*{}"
    raise ValueError(f"unknown problem kind {kind!r}: choose from {', '.join(KINDS)}")


def _pool(kind: str) -> tuple[tuple[str, ...], range]:
    if kind in ("cost", "price gap"):
        return ITEMS, range(10, 100)
    if kind in ("age gap", "age sum"):
        return tuple(p.lower() for p in PEOPLE), range(10, 100)
    return tuple(t.lower() for t in TOWNS), range(100, 1000)


def make_problem(rng: random.Random, kind: str | None = None) -> Problem:
    """One problem of ``kind`` (drawn uniformly from ``KINDS`` when ``None``), its memory
    filled up to ``MEMORY_SIZE`` facts with distractors of the same sort, in random order."""
    kind = kind or rng.choice(KINDS)
    question, keys, needed, template = _draw(rng, kind)
    names, values = _pool(kind)
    others = [n for n in names if n not in needed]
    facts = dict(needed)
    for name in rng.sample(others, MEMORY_SIZE - len(needed)):
        facts[name] = rng.choice(values)
    memory = list(facts.items())
    rng.shuffle(memory)
    expression = template.format(*(needed[k] for k in keys))
    answer = _arithmetic(expression)
    return Problem(kind, question, tuple(memory), tuple(keys), expression, answer)


def _arithmetic(expression: str) -> int:
    value = Calculator().evaluate(expression)
    assert isinstance(value, int)
    return value


def solution_lines(problem: Problem) -> list[tuple[str, bool]]:
    """The transcript of the right tool use, as ``(text, written_by_model)`` pieces: the
    thought, the actions and the answer are the model's; the observations are the tools'."""
    facts = problem.facts
    pieces = [(f"{THOUGHT}{problem.plan}\n", True)]
    for key in problem.keys:
        pieces.append((f"{ACTION}lookup[{key}]\n", True))
        pieces.append((f"{OBSERVATION}{facts[key]}\n", False))
    pieces.append((f"{ACTION}calc[{problem.expression}]\n", True))
    pieces.append((f"{OBSERVATION}{problem.answer}\n", False))
    pieces.append((f"{ANSWER}{problem.answer}", True))
    return pieces


def direct_question(problem: Problem) -> str:
    """The question with the whole memory written before it (``fig=47 yam=85 ... Cost of
    ...?``): the same information as the agent can look up, for answering without tools."""
    facts = " ".join(f"{k}={v}" for k, v in problem.memory)
    return f"{facts}. {problem.question}"


def build_splits(
    n_train: int, n_heldout: int, seed: int = 0
) -> tuple[list[Problem], list[Problem]]:
    """``(train, heldout)``: ``n_heldout`` problems with distinct questions, then ``n_train``
    problems whose question text is none of the held-out ones (values are drawn afresh for
    every problem, so even a repeated training question has new numbers)."""
    if n_train < 0 or n_heldout < 0:
        raise ValueError(f"sizes must be >= 0, got {n_train}, {n_heldout}")
    rng = random.Random(seed)
    heldout: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(heldout) < n_heldout:
        attempts += 1
        if attempts > 100 * n_heldout:
            raise ValueError(f"cannot draw {n_heldout} distinct held-out questions")
        p = make_problem(rng)
        if p.question not in seen:
            seen.add(p.question)
            heldout.append(p)
    train: list[Problem] = []
    while len(train) < n_train:
        p = make_problem(rng)
        if p.question not in seen:
            train.append(p)
    return train, heldout
