"""ROUGE-1, ROUGE-2 and ROUGE-L (Lin, 2004) with the conventions of Google's rouge-score.

ROUGE was made for summaries and leans on recall: how much of the reference the hypothesis
covers. For ROUGE-N the overlap is the number of shared n-grams, each counted at most as often
as in either text (the min of the two counts):

    P = overlap / n-grams of the hypothesis     R = overlap / n-grams of the reference
    F = 2 P R / (P + R)

ROUGE-L replaces the overlap by the length of the longest common subsequence (LCS): the longest
list of tokens found in both texts in the same order, not necessarily adjacent, so it rewards
the right word order without demanding contiguous n-grams.

Tokens, as rouge-score's default tokenizer makes them: lowercase the text, turn every run of
characters other than ``a-z`` and ``0-9`` into a space (accented letters and other scripts are
dropped) and split on whitespace. No stemming.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from llmcourse.evaluate.bleu import ngram_counts

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def tokenize_rouge(text: str) -> list[str]:
    """Lowercase, keep runs of a-z0-9, split: ``"It's 3.5%!"`` -> ``['it', 's', '3', '5']``."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


@dataclass(frozen=True)
class RougeScore:
    precision: float
    recall: float
    fmeasure: float


def _score(overlap: int, n_hyp: int, n_ref: int) -> RougeScore:
    precision = overlap / n_hyp if n_hyp else 0.0
    recall = overlap / n_ref if n_ref else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return RougeScore(precision, recall, f)


def rouge_n(hypothesis: Sequence[str], reference: Sequence[str], n: int) -> RougeScore:
    """ROUGE-N of two token lists: clipped n-gram overlap over each side's n-gram count."""
    hyp: Counter = ngram_counts(hypothesis, n)
    ref: Counter = ngram_counts(reference, n)
    overlap = sum((hyp & ref).values())  # & keeps the smaller count of each n-gram
    return _score(overlap, sum(hyp.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming over prefixes:
    L[i][j] = L[i-1][j-1] + 1 if a[i-1] == b[j-1] else max(L[i-1][j], L[i][j-1]),
    keeping one row at a time (O(len(a) * len(b)) time, O(len(b)) memory)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: Sequence[str], reference: Sequence[str]) -> RougeScore:
    """ROUGE-L of two token lists: LCS length over each side's length."""
    return _score(lcs_length(hypothesis, reference), len(hypothesis), len(reference))


def rouge(hypothesis: str, reference: str) -> dict[str, RougeScore]:
    """``{"rouge1", "rouge2", "rougeL"}`` -> (precision, recall, fmeasure) of one hypothesis
    against one reference, as ``rouge_scorer.RougeScorer([...]).score(reference, hypothesis)``
    (note that rouge-score takes the reference first).

    >>> rouge("the cat sat", "the cat sat down")["rougeL"].recall
    0.75
    """
    if not isinstance(hypothesis, str) or not isinstance(reference, str):
        raise TypeError("rouge() compares two strings: rouge(hypothesis, reference)")
    hyp, ref = tokenize_rouge(hypothesis), tokenize_rouge(reference)
    return {
        "rouge1": rouge_n(hyp, ref, 1),
        "rouge2": rouge_n(hyp, ref, 2),
        "rougeL": rouge_l(hyp, ref),
    }
