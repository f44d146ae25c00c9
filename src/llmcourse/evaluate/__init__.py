"""Evaluating language models: metrics, a harness over the course checkpoints, and pitfalls.

* ``metrics``: accuracy, precision / recall / F1 (binary, macro, micro; scikit-learn's
  conventions), exact match, the unbiased ``pass_at_k`` of the Codex paper and
  ``bootstrap_ci``;
* ``bleu``: ``corpus_bleu`` (0-100, sacrebleu's 13a tokenization, brevity penalty, smoothing);
* ``rouge``: ROUGE-1/2/L as rouge-score computes them;
* ``perplexity``: ``perplexity`` (exp of the mean token cross-entropy over a held-out stream,
  optionally with a sliding window) and ``bits_per_byte``;
* ``harness``: suites of offline tasks (perplexity, exact match, multiple choice by
  likelihood, pass@k), ``evaluate_checkpoint`` and ``compare`` over checkpoints by name;
* ``pitfalls``: contamination by n-gram overlap, prompt-format sensitivity, seed spread, and a
  reward model as judge.

``python -m llmcourse.evaluate --help`` runs checkpoints through the suites.
"""

from .bleu import corpus_bleu
from .harness import SUITES, compare, evaluate_checkpoint
from .metrics import (
    accuracy,
    bootstrap_ci,
    exact_match,
    f1_score,
    pass_at_k,
    precision_recall_f1,
)
from .perplexity import bits_per_byte, perplexity
from .rouge import rouge

__all__ = [
    "SUITES",
    "accuracy",
    "bits_per_byte",
    "bootstrap_ci",
    "compare",
    "corpus_bleu",
    "evaluate_checkpoint",
    "exact_match",
    "f1_score",
    "pass_at_k",
    "perplexity",
    "precision_recall_f1",
    "rouge",
]
