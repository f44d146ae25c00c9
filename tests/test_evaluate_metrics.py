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
import sacrebleu
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from llmcourse.evaluate.bleu import (
    brevity_penalty,
    closest_reference_length,
    corpus_bleu,
    corpus_bleu_result,
    modified_precision,
    tokenize_13a,
)
from llmcourse.evaluate.metrics import (
    accuracy,
    bootstrap_ci,
    exact_match,
    f1_score,
    pass_at_k,
    precision_recall_f1,
)
from llmcourse.evaluate.perplexity import bits_per_byte, perplexity, token_nll
from llmcourse.evaluate.rouge import lcs_length, rouge
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


# ---------------------------------------------------------------- BLEU vs sacrebleu

_WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "The",
    "dog",
    "ran",
    "3.5",
    "1,000",
    "3-4",
    "end.",
    "(yes)",
    "don't",
    "$5",
    "e.g.",
    "&amp;",
    "&quot;hi&quot;",
    "x-ray",
    "café",
    "a,b",
    "well,",
    "!",
    "?",
    ":",
    "#tag",
    "2-",
    "--",
    "n't",
    "U.S.",
    "42.",
    "1.",
    "[x]",
    "{y}",
    "~",
    "`q`",
]


def _sentence(rng: random.Random, low: int = 0, high: int = 14) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _bleu_cases() -> list[tuple[list[str], list[list[str]]]]:
    rng = random.Random(0)
    cases = []
    for n_refs in (1, 1, 2, 3, 2):
        for n_seg in (1, 3, 10):
            hyps = [_sentence(rng) for _ in range(n_seg)]
            refs = [[_sentence(rng, 1) for _ in range(n_seg)] for _ in range(n_refs)]
            cases.append((hyps, refs))
    # near misses: references perturbed from the hypotheses, so high orders match too
    for _ in range(4):
        hyps = [_sentence(rng, 3, 20) for _ in range(5)]
        refs = [[" ".join(h.split()[: rng.randint(1, 20)]) + " extra" for h in hyps]]
        cases.append((hyps, refs))
    cases += [
        (["the cat sat on the mat"], [["the cat sat on the mat"]]),  # perfect
        (["the the the the"], [["the cat"]]),  # clipping
        (["cat"], [["the cat sat on the mat"]]),  # short: no 2-grams at all
        (["the cat"], [["the cat sat on the mat"], ["a cat"]]),  # brevity penalty, closest ref
        (["", ""], [["the cat", "a dog"]]),  # empty hypotheses
        (["", "the cat sat on a mat today"], [["x", "the cat sat on the mat"]]),
        (["a b c d e"], [["a b c d e f"], ["a b c d"]]),  # two refs equally close: the shorter
    ]
    return cases


@pytest.mark.parametrize(("hyps", "refs"), _bleu_cases())
def test_corpus_bleu_matches_sacrebleu(hyps: list[str], refs: list[list[str]]) -> None:
    want = sacrebleu.corpus_bleu(hyps, refs)
    got = corpus_bleu_result(hyps, refs)
    assert got.score == pytest.approx(want.score, abs=1e-9)
    assert (got.hypothesis_length, got.reference_length) == (want.sys_len, want.ref_len)
    assert list(got.matches) == list(want.counts)
    assert list(got.totals) == list(want.totals)
    for method, value in (("floor", 0.1), ("add-k", 1), ("none", None)):
        want = sacrebleu.corpus_bleu(hyps, refs, smooth_method=method, smooth_value=value)
        assert corpus_bleu(hyps, refs, smooth=method) == pytest.approx(want.score, abs=1e-9)


def test_tokenize_13a_matches_sacrebleu() -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    rng = random.Random(1)
    texts = [_sentence(rng, 1, 30) for _ in range(200)]
    texts += ["multi-\nline\ntext <skipped> here", "a&lt;b&gt;c", "9-9 -9 a-9 9,9, .5 5."]
    oracle = Tokenizer13a()
    for text in texts:
        assert tokenize_13a(text) == oracle(text).split(), text


def test_bleu_pieces_and_bad_inputs() -> None:
    assert modified_precision(["the", "the", "the"], [["the", "cat"]], 1) == (1, 3)
    assert brevity_penalty(5, 4) == 1.0
    assert brevity_penalty(2, 4) == pytest.approx(math.exp(-1))
    assert brevity_penalty(0, 4) == 0.0
    assert closest_reference_length(5, [4, 6, 9]) == 4
    # one stream given as a plain list of strings
    assert corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one string per hypothesis"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(TypeError):
        corpus_bleu("a b", ["a b"])
    with pytest.raises(ValueError, match="smooth"):
        corpus_bleu(["a"], ["a"], smooth="laplace")


# ---------------------------------------------------------------- ROUGE vs rouge-score


def test_rouge_matches_rouge_score() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    rng = random.Random(2)
    pairs = [(_sentence(rng), _sentence(rng)) for _ in range(150)]
    pairs += [
        ("", "the cat"),
        ("the cat", ""),
        ("", ""),
        ("!!! ...", "the cat"),  # nothing left after tokenizing
        ("The CAT sat.", "the cat sat"),
        ("cat the sat on mat the", "the cat sat on the mat"),
        ("café déjà vu", "caf d j vu"),  # accented letters split words
        ("a a a a", "a"),
    ]
    for hypothesis, reference in pairs:
        want = scorer.score(reference, hypothesis)
        got = rouge(hypothesis, reference)
        assert set(got) == set(want)
        for name, score in want.items():
            assert got[name].precision == pytest.approx(score.precision), (name, hypothesis)
            assert got[name].recall == pytest.approx(score.recall), (name, hypothesis)
            assert got[name].fmeasure == pytest.approx(score.fmeasure), (name, hypothesis)


def test_lcs_length_against_brute_force() -> None:
    rng = random.Random(3)
    for _ in range(40):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        subsequences = {
            tuple(a[i] for i in idx)
            for r in range(len(a) + 1)
            for idx in itertools.combinations(range(len(a)), r)
        }

        def is_subsequence(s: tuple, seq: list = b) -> bool:
            it = iter(seq)
            return all(x in it for x in s)

        assert lcs_length(a, b) == max(len(s) for s in subsequences if is_subsequence(s))
    with pytest.raises(TypeError):
        rouge(["the", "cat"], "the cat")  # type: ignore[arg-type]
