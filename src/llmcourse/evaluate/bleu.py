"""Corpus BLEU (Papineni et al., 2002) with sacrebleu's conventions, written from its definition.

BLEU compares a system's outputs (hypotheses) with human references by n-gram overlap. For
n = 1..4 the *modified n-gram precision* counts each hypothesis n-gram at most as many times as
it occurs in the reference that contains it most often (so "the the the" cannot score on one
"the"), summed over the corpus:

    p_n = sum_hyp sum_g min(count_hyp(g), max_ref count_ref(g)) / sum_hyp (number of n-grams)

Precision alone rewards short outputs, so a *brevity penalty* compares the hypotheses' total
length c with the references' total length r (for each hypothesis, the reference closest to it
in length, the shorter one on a tie):

    BP = 1 if c >= r else exp(1 - r / c)          BLEU = 100 * BP * exp(mean_n log p_n)

A single p_n = 0 would zero the geometric mean; ``smooth`` decides what to do then:
``"exp"`` (sacrebleu's default) replaces the k-th such zero by 1 / (2^k * number of n-grams),
``"floor"`` by ``smooth_value`` / number of n-grams, ``"add-k"`` adds ``smooth_value`` to the
matches and totals of every n > 1, and ``"none"`` keeps the zero (BLEU = 0).

Text is split by the 13a tokenizer of the WMT ``mteval-v13a`` script, which sacrebleu uses by
default: punctuation and symbols become their own tokens, except that periods and commas stay
inside numbers ("3.5", "1,000") and a dash after a digit is split off.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHING = ("exp", "floor", "add-k", "none")
_DEFAULT_SMOOTH_VALUE = {"floor": 0.1, "add-k": 1.0}

# 13a: each rule is (pattern, replacement), applied in order to " " + text + " "
_TOKEN_RULES = [
    # symbols and punctuation other than . , - and letters/digits: ASCII ranges {-~, [-`, space-&,
    # (-+, :-@ and /
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # . or , not after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # . or , not before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]
_ENTITIES = {"&quot;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">"}


def tokenize_13a(text: str) -> list[str]:
    """Split ``text`` as mteval-v13a does: drop ``<skipped>``, join lines (a hyphen at a line
    end joins the word), decode four HTML entities, then separate punctuation by the rules
    above and split on whitespace.

    >>> tokenize_13a("It costs $3.50, i.e. 3-4 euros.")
    ['It', 'costs', '$', '3.50', ',', 'i', '.', 'e', '.', '3', '-', '4', 'euros', '.']
    """
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    text = f" {text} "
    for pattern, replacement in _TOKEN_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """How often each n-gram (tuple of n consecutive tokens) occurs."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def modified_precision(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]], n: int
) -> tuple[int, int]:
    """(clipped matches, total) of the n-grams of one tokenized hypothesis: each n-gram counts
    at most as often as in the reference holding it most often."""
    hyp = ngram_counts(hypothesis, n)
    most: Counter[tuple[str, ...]] = Counter()
    for reference in references:
        most |= ngram_counts(reference, n)  # | keeps the larger count of each n-gram
    return sum(min(count, most[g]) for g, count in hyp.items()), sum(hyp.values())


def closest_reference_length(hypothesis_length: int, reference_lengths: Sequence[int]) -> int:
    """The reference length nearest the hypothesis length; the shorter one on a tie."""
    return min(reference_lengths, key=lambda r: (abs(r - hypothesis_length), r))


def brevity_penalty(hypothesis_length: int, reference_length: int) -> float:
    """1 when the hypotheses are at least as long as the references, else exp(1 - r / c)
    (0 for empty hypotheses)."""
    if hypothesis_length >= reference_length:
        return 1.0
    if hypothesis_length == 0:
        return 0.0
    return math.exp(1 - reference_length / hypothesis_length)


@dataclass(frozen=True)
class BLEUResult:
    """A corpus BLEU score (0-100) with the pieces it is made of."""

    score: float
    precisions: tuple[float, ...]  # smoothed p_n, in percent
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int
    matches: tuple[int, ...]
    totals: tuple[int, ...]


def _reference_sets(references: Sequence[str] | Sequence[Sequence[str]], n_hyp: int) -> list:
    """sacrebleu's layout: a list of reference streams, each with one string per hypothesis;
    a plain list of strings is one stream."""
    if isinstance(references, str):
        raise TypeError("references must be a list of strings or a list of reference streams")
    streams = [references] if references and isinstance(references[0], str) else references
    if not streams:
        raise ValueError("need at least one reference stream")
    for i, stream in enumerate(streams):
        if isinstance(stream, str) or len(stream) != n_hyp:
            size = "a string" if isinstance(stream, str) else f"{len(stream)} references"
            raise ValueError(
                f"reference stream {i} has {size}, expected one string per hypothesis "
                f"({n_hyp}); pass [stream_1, stream_2, ...] as sacrebleu does"
            )
    return [list(refs) for refs in zip(*streams, strict=True)]


def corpus_bleu_result(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
    lowercase: bool = False,
) -> BLEUResult:
    """Corpus BLEU with its modified precisions and brevity penalty (see ``corpus_bleu``)."""
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses must be a list of strings, one per segment")
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    if smooth_value is None:
        smooth_value = _DEFAULT_SMOOTH_VALUE.get(smooth, 0.0)
    segments = _reference_sets(references, len(hypotheses))
    matches, totals = [0] * max_order, [0] * max_order
    hyp_len = ref_len = 0
    for hypothesis, refs in zip(hypotheses, segments, strict=True):
        if lowercase:
            hypothesis, refs = hypothesis.lower(), [r.lower() for r in refs]
        hyp_tokens = tokenize_13a(hypothesis)
        ref_tokens = [tokenize_13a(r) for r in refs]
        hyp_len += len(hyp_tokens)
        ref_len += closest_reference_length(len(hyp_tokens), [len(r) for r in ref_tokens])
        for n in range(1, max_order + 1):
            got, total = modified_precision(hyp_tokens, ref_tokens, n)
            matches[n - 1] += got
            totals[n - 1] += total

    precisions, zeros = [], 0
    for n, (got, total) in enumerate(zip(matches, totals, strict=True), start=1):
        if smooth == "add-k" and n > 1:
            got, total = got + smooth_value, total + smooth_value
        if total == 0:  # no hypothesis is n tokens long: this and higher orders count as 0
            precisions += [0.0] * (max_order - n + 1)
            break
        if got > 0:
            precisions.append(100 * got / total)
        elif smooth == "exp":
            zeros += 1
            precisions.append(100 / (2**zeros * total))
        elif smooth == "floor":
            precisions.append(100 * smooth_value / total)
        else:
            precisions.append(0.0)

    bp = brevity_penalty(hyp_len, ref_len)
    if min(precisions) > 0:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / max_order)
    else:
        score = 0.0
    return BLEUResult(score, tuple(precisions), bp, hyp_len, ref_len, tuple(matches), tuple(totals))


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
    lowercase: bool = False,
) -> float:
    """Corpus BLEU, 0-100, as ``sacrebleu.corpus_bleu(hypotheses, references).score``.

    ``references`` follows sacrebleu: a list of reference *streams*, each holding one reference
    per hypothesis (``[["ref of hyp 1", "ref of hyp 2"], ["2nd ref of hyp 1", ...]]``); a plain
    list of strings is a single stream. Counts are summed over the corpus before the precisions
    and the brevity penalty are taken, so corpus BLEU is not the mean of sentence BLEUs.

    >>> round(corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]), 2)
    53.73
    """
    result = corpus_bleu_result(hypotheses, references, max_order, smooth, smooth_value, lowercase)
    return result.score
