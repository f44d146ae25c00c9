"""Four ways an evaluation misleads, each measurable on the course checkpoints.

* **Contamination.** A test item that was in the training data measures recall, not skill.
  The usual check is n-gram overlap: the share of an item's n-grams (of tokens) that occur
  anywhere in the training stream; an item is flagged when that share reaches a threshold.
  Short n-grams flag everything (a task's template repeats in every document); long ones find
  only copies. ``ngram_overlap`` computes the shares, ``leaked_examples`` builds items that
  really were in the base's pretraining data, so the score change can be measured.
* **Prompt format.** The same question asked another way (``rephrase``) can change the
  answer; ``format_sensitivity`` gives exact match per wording, and their spread.
* **Sampling variance.** A score on 400 items is itself an estimate: its bootstrap interval
  (``harness.score_of``) is several points wide, and an answer sampled at temperature > 0
  adds the spread across seeds (``seed_spread``).
* **A model as judge.** A reward model's score thresholded into "right"/"wrong" can be
  compared with the exact answer (``judge_agreement``): agreement, precision, recall, and the
  answers on which the two disagree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from llmcourse.evaluate.metrics import accuracy, precision_recall_f1
from llmcourse.sft.data import Example, single_turn
from llmcourse.sft.evaluate import plain_prompt
from llmcourse.sft.template import ChatTokenizer

# --------------------------------------------------------------------------------------------
# Contamination
# --------------------------------------------------------------------------------------------


def _grams(ids: np.ndarray, n: int) -> list[bytes]:
    """Every n-gram of ``ids`` as a hashable byte string (4 bytes per id)."""
    raw = np.ascontiguousarray(ids, dtype=np.int32).tobytes()
    return [raw[4 * i : 4 * (i + n)] for i in range(len(ids) - n + 1)]


def ngram_index(train_ids: torch.Tensor | np.ndarray, n: int) -> set[bytes]:
    """The set of the training stream's n-grams."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return set(_grams(np.asarray(train_ids), n))


def ngram_overlap(
    items: Sequence[Sequence[int]], index: set[bytes], n: int
) -> np.ndarray:  # fmt: skip
    """For each item (token ids), the share of its n-grams found in ``index``; an item shorter
    than ``n`` has share 0 (it cannot be checked)."""
    out = []
    for ids in items:
        grams = _grams(np.asarray(ids), n)
        out.append(sum(g in index for g in grams) / len(grams) if grams else 0.0)
    return np.asarray(out)


def document_ids(tok: ChatTokenizer, examples: Sequence[Example]) -> list[list[int]]:
    """Each example as the text it would be in a pretraining corpus (plain format + answer)."""
    return [tok.encode_ordinary(plain_prompt(e) + e.answer) for e in examples]


def leaked_examples(n: int) -> list[Example]:
    """``n`` instructions of the base's pretraining corpus (``instruction_pairs`` seed 0),
    as examples: contaminated on purpose (about 95 % of them are in ``train.bin``)."""
    from llmcourse.data import instruction_pairs
    from llmcourse.sft.data import task_of

    return [single_turn(i, r, task_of(i)) for i, r in instruction_pairs(n, seed=0)]


# --------------------------------------------------------------------------------------------
# Prompt format
# --------------------------------------------------------------------------------------------

_WORD_TASKS = {
    "reverse": (r'Reverse the word "(\w+)"\.', "the reverse of {w}", "reverse {w}"),
    "capitals": (r'Write "(\w+)" in capital letters\.', "{w} in capital letters", "uppercase {w}"),
    "sort": (
        r'Sort the letters of "(\w+)" alphabetically\.',
        "the letters of {w} sorted alphabetically",
        "sort {w}",
    ),
}
FORMATS = ("original", "question", "terse", "padded")
"""``original``: the course's wording; ``question``: "What is the reverse of abc?";
``terse``: "reverse abc"; ``padded``: the original with a polite preamble and a trailing
line break."""


def rephrase(example: Example, fmt: str) -> Example:
    """``example`` (a single-turn reverse / capitals / sort item) asked in format ``fmt``; the
    reference answer is unchanged."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if example.task not in _WORD_TASKS or len(example.messages) != 2:
        raise ValueError(f"only single-turn {', '.join(_WORD_TASKS)} items can be rephrased")
    text = example.messages[0][1]
    pattern, question, terse = _WORD_TASKS[example.task]
    match = re.fullmatch(pattern, text)
    if match is None:
        raise ValueError(f"not a course instruction of kind {example.task}: {text!r}")
    word = match.group(1)
    new = {
        "original": text,
        "question": "What is " + question.format(w=word) + "?",
        "terse": terse.format(w=word),
        "padded": f"Please help me with this task.\n{text}\n",
    }[fmt]
    return single_turn(new, example.answer, example.task)


def format_sensitivity(
    model: nn.Module, tok: ChatTokenizer, examples: Sequence[Example], style: str = "template"
) -> dict[str, float]:
    """Exact match of ``model`` on the word-task items of ``examples`` in each format."""
    from llmcourse.sft.evaluate import answers

    items = [e for e in examples if e.task in _WORD_TASKS and len(e.messages) == 2]
    if not items:
        raise ValueError("no reverse / capitals / sort items to rephrase")
    out = {}
    for fmt in FORMATS:
        asked = [rephrase(e, fmt) for e in items]
        got = answers(model, tok, asked, style)
        out[fmt] = accuracy([e.answer for e in items], [g.strip() for g in got])
    return out


# --------------------------------------------------------------------------------------------
# Sampling variance
# --------------------------------------------------------------------------------------------


def seed_spread(
    model: nn.Module,
    tok: ChatTokenizer,
    examples: Sequence[Example],
    seeds: Sequence[int],
    temperature: float = 0.8,
    max_new_tokens: int = 40,
) -> list[float]:
    """Exact match of one sampled answer per example (chat template), once per seed."""
    from llmcourse.rlhf.rollout import sample_rollouts

    out = []
    for seed in seeds:
        r = sample_rollouts(model, tok, examples, 1, max_new_tokens, temperature, seed)
        out.append(accuracy([e.answer for e in examples], [t.strip() for t in r.texts]))
    return out


# --------------------------------------------------------------------------------------------
# A reward model as judge
# --------------------------------------------------------------------------------------------


def judge_agreement(
    exact: Sequence[bool], scores: Sequence[float], threshold: float
) -> dict[str, Any]:  # fmt: skip
    """The judge says "right" when its score exceeds ``threshold``; against the exact answers:
    ``agreement`` (accuracy), ``precision`` / ``recall`` / ``f1`` of "right", and the indices
    of ``false_accepts`` (judged right, wrong) and ``false_rejects`` (judged wrong, right)."""
    if len(exact) != len(scores):
        raise ValueError(f"{len(exact)} exact labels but {len(scores)} scores")
    truth = [bool(x) for x in exact]
    judged = [float(s) > threshold for s in scores]
    p, r, f = precision_recall_f1(truth, judged, average="binary", pos_label=True)
    return {
        "agreement": accuracy(truth, judged),
        "precision": p,
        "recall": r,
        "f1": f,
        "false_accepts": [
            i for i, (t, j) in enumerate(zip(truth, judged, strict=True)) if j and not t
        ],
        "false_rejects": [
            i for i, (t, j) in enumerate(zip(truth, judged, strict=True)) if t and not j
        ],
    }


def best_threshold(exact: Sequence[bool], scores: Sequence[float]) -> float:
    """The threshold (midpoint between sorted scores) with the highest agreement: the most a
    judge's cut-off can be tuned, which is itself fitting on the test set."""
    s = np.sort(np.asarray(scores, dtype=float))
    candidates = np.concatenate([[s[0] - 1], (s[1:] + s[:-1]) / 2, [s[-1] + 1]])
    agreement = [judge_agreement(exact, scores, float(t))["agreement"] for t in candidates]
    return float(candidates[int(np.argmax(agreement))])
