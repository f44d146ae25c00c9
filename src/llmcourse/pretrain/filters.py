"""Quality filters and privacy scrubbing: which documents a language model should learn from.

Raw text from the web (or from anywhere) holds pages of menus, tables of numbers, the same
line pasted a hundred times and text that is mostly symbols. Pretraining pipelines throw such
documents away with a handful of cheap rules measured on each document; the rules here follow
the heuristics of DeepMind's Gopher corpus (MassiveText), with thresholds one can change:

======================  ==========================================================  =========
rule                    measure                                                     keeps
======================  ==========================================================  =========
``length``              whitespace-separated words                                  20 .. 100k
``mean_word_length``    average characters per word                                 3 .. 10
``symbol_ratio``        (``#`` + ellipses ``...``/``…``) per word                   <= 0.1
``repeated_lines``      fraction of non-blank lines that repeat an earlier line     <= 0.3
``alpha_fraction``      letters among the non-whitespace characters                 >= 0.5
======================  ==========================================================  =========

A document is tested against the rules in that order and removed by the first it fails, so
the per-rule counts of a ``FilterReport`` add up to the documents removed.

Privacy: ``scrub_pii`` replaces e-mail addresses and IPv4 addresses by placeholders
(``<EMAIL>``, ``<IP>``) before training, so a model cannot learn to recite them. (Real
pipelines also look for phone numbers, IDs and names, and filter toxic content with trained
classifiers; those need data and models this offline course does not have.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Measures: one number per document
# --------------------------------------------------------------------------------------------


def word_count(text: str) -> int:
    """Number of whitespace-separated words."""
    return len(text.split())


def mean_word_length(text: str) -> float:
    """Average number of characters per word (0 for a text without words). Very short words
    on average suggest lists of symbols or numbers; very long ones, URLs, hashes or base64."""
    words = text.split()
    return sum(map(len, words)) / len(words) if words else 0.0


def symbol_ratio(text: str) -> float:
    """Hash signs and ellipses (``...`` or ``…``) per word: high in lists of hashtags, in
    cut-off snippets ("read more...") and in banners of ``#``; 0 for a text without words."""
    words = word_count(text)
    return (text.count("#") + text.count("...") + text.count("…")) / words if words else 0.0


def repeated_line_fraction(text: str) -> float:
    """Fraction of the non-blank lines that are a copy of an earlier line (after stripping
    surrounding whitespace): boilerplate, navigation menus and pasted spam score high."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    return (len(lines) - len(set(lines))) / len(lines)


def alpha_fraction(text: str) -> float:
    """Fraction of the non-whitespace characters that are letters (any script): tables of
    numbers and runs of punctuation score low, prose about 0.8, Python code about 0.7."""
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


# --------------------------------------------------------------------------------------------
# Rules and the filter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality rules; a document is kept when every measure lies in range.

    ``min_words`` is lower than Gopher's 50 because the course's prose corpora are split into
    paragraphs, not web pages.
    """

    min_words: int = 20
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    max_repeated_line_fraction: float = 0.3
    min_alpha_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.min_words <= self.max_words:
            raise ValueError(f"need 0 <= min_words <= max_words, got {self.min_words}, "
                             f"{self.max_words}")  # fmt: skip
        if not 0 <= self.min_mean_word_length <= self.max_mean_word_length:
            raise ValueError("need 0 <= min_mean_word_length <= max_mean_word_length")
        for name in ("max_repeated_line_fraction", "min_alpha_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} is a fraction: between 0 and 1, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class Rule:
    """One quality rule: a measure and the closed range ``[low, high]`` a document must hit."""

    name: str
    measure: Callable[[str], float]
    low: float = float("-inf")
    high: float = float("inf")

    def passes(self, value: float) -> bool:
        return self.low <= value <= self.high


def quality_rules(config: QualityConfig = QualityConfig()) -> list[Rule]:
    """The rules of ``config``, in the order they are applied."""
    return [
        Rule("length", word_count, config.min_words, config.max_words),
        Rule(
            "mean_word_length",
            mean_word_length,
            config.min_mean_word_length,
            config.max_mean_word_length,
        ),
        Rule("symbol_ratio", symbol_ratio, high=config.max_symbol_ratio),
        Rule("repeated_lines", repeated_line_fraction, high=config.max_repeated_line_fraction),
        Rule("alpha_fraction", alpha_fraction, low=config.min_alpha_fraction),
    ]


def rejection_reason(text: str, rules: Sequence[Rule]) -> str | None:
    """The name of the first rule ``text`` fails, or ``None`` when it passes them all."""
    for rule in rules:
        if not rule.passes(rule.measure(text)):
            return rule.name
    return None


@dataclass
class FilterReport:
    """What the quality filter did: documents in and kept, and per rule how many it removed
    (with the first removed document, cut to 120 characters, as an example)."""

    documents_in: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "documents_in": self.documents_in,
            "kept": self.kept,
            "removed": dict(self.removed),
            "examples": dict(self.examples),
        }


def quality_filter(
    documents: Sequence[str], config: QualityConfig = QualityConfig()
) -> tuple[list[int], FilterReport]:
    """Indices of the documents that pass every rule of ``config``, and a report of the rest."""
    rules = quality_rules(config)
    report = FilterReport(documents_in=len(documents), removed={r.name: 0 for r in rules})
    kept = []
    for i, text in enumerate(documents):
        reason = rejection_reason(text, rules)
        if reason is None:
            kept.append(i)
            continue
        report.removed[reason] += 1
        report.examples.setdefault(reason, text[:120])
    report.kept = len(kept)
    return kept, report


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------

EMAIL = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
"""An e-mail address: ``name@host.domain`` (a pragmatic pattern, not RFC 5322)."""

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<!\d)(?<!\d\.){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")
"""A dotted IPv4 address, four numbers 0-255, not part of a longer dotted number."""

PII_PATTERNS: dict[str, re.Pattern[str]] = {"<EMAIL>": EMAIL, "<IP>": IPV4}
"""Placeholder -> the pattern it replaces."""


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with every e-mail and IPv4 address replaced by its placeholder, and how many
    of each were replaced."""
    counts = {}
    for placeholder, pattern in PII_PATTERNS.items():
        text, counts[placeholder] = pattern.subn(placeholder, text)
    return text, counts
