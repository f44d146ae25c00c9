"""Scores for predictions: accuracy, precision / recall / F1, exact match, pass@k, bootstrap CIs.

Classification metrics start from four counts per class ``c``: true positives (predicted ``c``,
truly ``c``), false positives (predicted ``c``, truly something else) and false negatives (truly
``c``, predicted something else). Then

    precision = TP / (TP + FP)     recall = TP / (TP + FN)     F1 = 2 TP / (2 TP + FP + FN)

(F1 is the harmonic mean of precision and recall). A ratio whose denominator is zero (a class
never predicted, say) is defined as 0: scikit-learn's ``zero_division=0`` convention.

Averages over classes, as scikit-learn names them:

- ``"binary"``: only the class ``pos_label`` counts (the labels must be at most two values).
- ``"macro"``: the score of every class seen in ``y_true`` or ``y_pred``, averaged with equal
  weight; a rare class counts as much as a common one.
- ``"micro"``: TP, FP and FN summed over classes first. With one label per example every error
  is one FP (for the predicted class) and one FN (for the true class), so micro precision,
  recall and F1 all equal the accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

AVERAGES = ("binary", "macro", "micro")


def _check_pair(y_true: Sequence, y_pred: Sequence) -> tuple[list, list]:
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no labels to score")
    return y_true, y_pred


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, and 0.0 when the denominator is 0 (``zero_division=0``)."""
    return numerator / denominator if denominator else 0.0


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Share of positions where the prediction equals the label."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def confusion_counts(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], label: Hashable
) -> tuple[int, int, int]:
    """(TP, FP, FN) of one class ``label``."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    pairs = list(zip(y_true, y_pred, strict=True))
    tp = sum(t == label and p == label for t, p in pairs)
    fp = sum(t != label and p == label for t, p in pairs)
    fn = sum(t == label and p != label for t, p in pairs)
    return tp, fp, fn


def _scores(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def precision_recall_f1(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    average: str = "binary",
    pos_label: Hashable = 1,
) -> tuple[float, float, float]:
    """(precision, recall, F1) averaged as ``average`` says (see the module docstring).

    >>> precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0])
    (0.5, 0.5, 0.5)
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    labels = sorted(set(y_true) | set(y_pred), key=repr)
    if average == "binary":
        if len(labels) > 2:
            raise ValueError(
                f"average='binary' needs at most two label values, got {len(labels)}: "
                "use average='macro' or 'micro'"
            )
        if len(labels) == 2 and pos_label not in labels:
            raise ValueError(f"pos_label={pos_label!r} is not one of the labels {labels}")
        return _scores(*confusion_counts(y_true, y_pred, pos_label))
    if average == "macro":
        per_class = np.array([_scores(*confusion_counts(y_true, y_pred, c)) for c in labels])
        return tuple(float(x) for x in per_class.mean(axis=0))  # type: ignore[return-value]
    if average == "micro":
        totals = np.array([confusion_counts(y_true, y_pred, c) for c in labels]).sum(axis=0)
        return _scores(*(int(x) for x in totals))
    raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")


def f1_score(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    average: str = "binary",
    pos_label: Hashable = 1,
) -> float:
    """F1 = 2 TP / (2 TP + FP + FN), averaged as ``average`` says (scikit-learn's names)."""
    return precision_recall_f1(y_true, y_pred, average, pos_label)[2]


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference once surrounding whitespace is stripped
    (the rule of ``llmcourse.sft.exact_match_by_task``)."""
    predictions, references = _check_pair(predictions, references)
    pairs = zip(predictions, references, strict=True)
    return sum(p.strip() == r.strip() for p, r in pairs) / len(predictions)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct (Codex paper).

    pass@k is the chance that at least one of k samples is correct. Drawing k of the n samples
    without replacement, the chance that all k are wrong is C(n - c, k) / C(n, k), so

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i).

    The product form avoids the huge binomials (C(200, 100) ~ 1e59). It is 1 when fewer than k
    samples are wrong: every k-subset then holds a correct one.
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"n, c and k must be integers, got {n!r}, {c!r}, {k!r}")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat(values)``.

    Draw ``n_resamples`` samples of the same size with replacement, compute the statistic on
    each, and return the (1 - level) / 2 and (1 + level) / 2 quantiles of those statistics. The
    spread of the resampled statistics stands in for the spread we would see if we could redraw
    the test set itself. For per-example scores (0/1 exact matches) and ``np.mean`` this is an
    interval for the accuracy.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {values.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(n_resamples, values.size))
    stats = np.array([stat(values[row]) for row in picks], dtype=np.float64)
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
