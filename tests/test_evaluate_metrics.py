"""llmcourse.evaluate's metrics against their reference libraries and brute force.

scikit-learn (classification), sacrebleu (BLEU) and rouge-score (ROUGE) are the dev extra's
oracles; pass@k is checked by enumerating every k-subset, perplexity by F.cross_entropy on the
whole stream and by Hugging Face's sliding-window recipe written out by hand.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from llmcourse.evaluate.metrics import (
    accuracy,
    bootstrap_ci,
    exact_match,
    f1_score,
    pass_at_k,
    precision_recall_f1,
)
from llmcourse.evaluate.perplexity import bits_per_byte, perplexity, token_nll
from llmcourse.gpt import GPT, GPTConfig

# ---------------------------------------------------------------- classification vs scikit-learn


def _label_cases() -> list[tuple[list, list]]:
    rng = random.Random(0)
    cases = []
    for n_classes in (2, 3, 5):
        for n in (1, 4, 30):
            y_true = [rng.randrange(n_classes) for _ in range(n)]
            y_pred = [rng.randrange(n_classes) for _ in range(n)]
            cases.append((y_true, y_pred))
    cases += [
        ([0, 0, 0], [0, 0, 0]),  # no positive anywhere: every ratio is 0/0
        ([1, 1, 1], [0, 0, 0]),  # never predicted: precision 0/0
        ([0, 0, 0], [1, 1, 0]),  # never true: recall 0/0
        ([2, 2, 1], [1, 7, 7]),  # a class only in predictions, one only in labels
        (["cat", "dog", "dog"], ["dog", "dog", "bird"]),
    ]
    return cases


@pytest.mark.parametrize(("y_true", "y_pred"), _label_cases())
def test_classification_metrics_match_sklearn(y_true: list, y_pred: list) -> None:
    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    averages = ["macro", "micro"]
    if len(set(y_true) | set(y_pred)) <= 2 and all(isinstance(y, int) for y in y_true + y_pred):
        averages.append("binary")
    for average in averages:
        want = skm.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )[:3]
        assert precision_recall_f1(y_true, y_pred, average) == pytest.approx(want), average
        f1 = skm.f1_score(y_true, y_pred, average=average, zero_division=0)
        assert f1_score(y_true, y_pred, average=average) == pytest.approx(f1), average


def test_binary_pos_label_and_bad_inputs() -> None:
    y_true, y_pred = ["spam", "ham", "spam", "ham"], ["spam", "spam", "ham", "ham"]
    want = skm.f1_score(y_true, y_pred, pos_label="ham", zero_division=0)
    assert f1_score(y_true, y_pred, pos_label="ham") == pytest.approx(want)
    with pytest.raises(ValueError, match="pos_label"):
        f1_score(y_true, y_pred)  # pos_label=1 is not a label here
    with pytest.raises(ValueError, match="binary"):
        f1_score([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="average"):
        f1_score([0, 1], [0, 1], average="weighted")
    with pytest.raises(ValueError, match="2 labels"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="no labels"):
        accuracy([], [])


def test_exact_match_strips_whitespace() -> None:
    assert exact_match(["42", " 7\n", "abc"], ["42", "7", "ABC"]) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- pass@k vs enumeration


@pytest.mark.parametrize(("n", "c"), [(1, 0), (1, 1), (5, 0), (5, 2), (6, 5), (7, 3), (8, 8)])
def test_pass_at_k_equals_the_share_of_k_subsets_with_a_correct_sample(n: int, c: int) -> None:
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        want = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n_and_checks_its_arguments() -> None:
    exact = 1 - math.comb(150, 100) / math.comb(200, 100)
    assert pass_at_k(200, 50, 100) == pytest.approx(exact, rel=1e-12)
    assert pass_at_k(200, 3, 1) == pytest.approx(3 / 200)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 2, 6)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 2, 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_the_true_mean_in_most_seeds() -> None:
    rng = np.random.default_rng(123)
    true_p, covered = 0.3, 0
    for seed in range(40):
        draws = (rng.random(200) < true_p).astype(float)  # 200 Bernoulli(0.3) exact matches
        low, high = bootstrap_ci(draws, n_resamples=300, seed=seed)
        assert low <= draws.mean() <= high
        covered += low <= true_p <= high
    assert covered >= 34  # 95 % nominal: 38 of 40 expected, 34 leaves room for chance


def test_bootstrap_ci_is_seeded_and_narrows_with_more_data() -> None:
    values = np.random.default_rng(0).normal(size=400)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    small = bootstrap_ci(values[:25])
    large = bootstrap_ci(values)
    assert large[1] - large[0] < small[1] - small[0]
    low, high = bootstrap_ci(values, stat=np.median, level=0.5)
    assert low < np.median(values) < high
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)


# ---------------------------------------------------------------- perplexity


def _tiny_gpt(n_positions: int = 16) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=37, n_positions=n_positions, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():  # move every parameter away from its init so none is idle
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_perplexity_of_one_window_is_exp_of_the_cross_entropy() -> None:
    model = _tiny_gpt()
    ids = torch.randint(0, 37, (17,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids[None, :-1])[0]
    want = math.exp(F.cross_entropy(logits, ids[1:]).item())
    assert perplexity(model, ids) == pytest.approx(want, rel=1e-5)


def test_non_overlapping_windows_score_every_id_once() -> None:
    model = _tiny_gpt()
    ids = torch.randint(0, 37, (50,), generator=torch.Generator().manual_seed(2))
    total, want = 0.0, 0
    with torch.no_grad():
        for start in range(0, 49, 8):  # windows of 9 ids sharing their boundary id
            window = ids[start : start + 9]
            logits = model(window[None, :-1])[0]
            total += F.cross_entropy(logits, window[1:], reduction="sum").item()
            want += len(window) - 1
    got_total, count = token_nll(model, ids, seq_len=8, batch_size=3)
    assert count == want == 49
    assert got_total == pytest.approx(total, rel=1e-5)
    assert perplexity(model, ids, seq_len=8, stride=8) == pytest.approx(math.exp(total / 49))


def _hf_recipe(model: GPT, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """Hugging Face's sliding-window perplexity guide, by hand: windows of ``max_length`` ids
    whose end moves by ``stride``; labels before the new ids are -100. Summed in nats (the
    guide's mean-times-count) so the weighting is exact."""
    nll, n_tokens, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + max_length, len(ids))
            trg_len = end - prev_end
            window = ids[begin:end]
            labels = window.clone()
            labels[:-trg_len] = -100
            logits = model(window[None])[0]
            shifted = labels[1:]
            nll += F.cross_entropy(logits[:-1], shifted, ignore_index=-100, reduction="sum").item()
            n_tokens += int((shifted != -100).sum())
            prev_end = end
            if end == len(ids):
                break
    return math.exp(nll / n_tokens)


@pytest.mark.parametrize("stride", [1, 3, 7])
def test_sliding_window_matches_the_hugging_face_recipe(stride: int) -> None:
    model = _tiny_gpt(n_positions=8)
    ids = torch.randint(0, 37, (40,), generator=torch.Generator().manual_seed(3))
    # the guide reads windows of max_length ids, one more than our seq_len of inputs
    want = _hf_recipe(model, ids, max_length=8, stride=stride)
    assert perplexity(model, ids, seq_len=7, stride=stride, batch_size=4) == pytest.approx(
        want, rel=1e-5
    )


def test_stride_one_gives_every_id_its_full_context() -> None:
    model = _tiny_gpt(n_positions=8)
    ids = torch.randint(0, 37, (20,), generator=torch.Generator().manual_seed(4))
    total = 0.0
    with torch.no_grad():
        for t in range(1, 20):
            context = ids[max(0, t - 8) : t]
            total -= F.log_softmax(model(context[None])[0, -1], -1)[ids[t]].item()
    assert perplexity(model, ids, stride=1) == pytest.approx(math.exp(total / 19), rel=1e-5)
    assert bits_per_byte(model, ids, n_bytes=19, stride=1) == pytest.approx(
        total / 19 / math.log(2), rel=1e-5
    )


def test_perplexity_bad_inputs() -> None:
    model = _tiny_gpt(n_positions=8)
    with pytest.raises(ValueError, match="1-D"):
        perplexity(model, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        perplexity(model, torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="context"):
        perplexity(model, torch.zeros(20, dtype=torch.long), seq_len=9)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, torch.zeros(20, dtype=torch.long), stride=9)
    assert model.training  # restored after the evaluation
