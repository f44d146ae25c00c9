"""Tests of `llmcourse.ngram` against counts and perplexities worked out by hand, and PyTorch's
cross-entropy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmcourse import ngram as N


def test_bigram_maximum_likelihood_by_hand() -> None:
    m = N.NGramModel(n=2, k=0, backoff=False).fit("abab")
    # bigrams: ab, ba, ab -> P(b|a) = 2/2, P(a|b) = 1/1
    assert m.vocab == ["a", "b", N.UNK]
    assert m.prob(["a"], "b") == 1.0 and m.prob(["b"], "a") == 1.0
    assert m.prob(["a"], "a") == 0.0
    assert m.prob(["z"], "a") == 0.0  # unseen context, no smoothing
    assert m.perplexity("abab") == 1.0
    assert m.perplexity("abba") == math.inf


def test_add_k_by_hand() -> None:
    m = N.NGramModel(n=2, k=0.5, backoff=False).fit("abab")
    V = 3  # a, b, <unk>
    assert m.prob(["a"], "b") == pytest.approx((2 + 0.5) / (2 + 0.5 * V))
    assert m.prob(["a"], "a") == pytest.approx(0.5 / (2 + 0.5 * V))
    assert m.prob(["x"], "q") == pytest.approx(1 / V)  # unseen context: uniform
    for ctx in (["a"], ["b"], ["x"]):
        assert sum(m.distribution(ctx).values()) == pytest.approx(1.0)


def test_backoff_uses_the_longest_seen_suffix() -> None:
    m = N.NGramModel(n=3, k=0).fit("abab")
    # trigram contexts seen: ab, ba; "xa" is unseen, so P(. | xa) = P(. | a) = bigram counts
    assert m.prob(["x", "a"], "b") == 1.0
    assert m.prob(["x", "x"], "a") == pytest.approx(1 / 2)  # unigram over the 2 predictions
    assert m.prob(["a", "b"], "a") == 1.0  # a seen context is used as it is
    smoothed = N.NGramModel(n=4, k=0.3).fit("the cat sat on the mat")
    for ctx in (["q", "q", "q"], ["x", "a", "t"], [" ", "c", "a"]):
        assert sum(smoothed.distribution(ctx).values()) == pytest.approx(1.0)


def test_trigram_counts_use_only_two_previous_tokens() -> None:
    m = N.NGramModel(n=3, k=0).fit("the cat. the car. the cat.")
    assert m.prob(list("xxthe ca"), "t") == pytest.approx(2 / 3)
    assert m.prob(list(" ca"), "r") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs 2 tokens"):
        m.prob(["a"], "b")


def test_uniform_model_has_perplexity_v() -> None:
    m = N.NGramModel(n=1, k=1e9).fit("abcdefgh")
    assert m.perplexity("hgfedcba") == pytest.approx(len(m.vocab), rel=1e-6)


def test_perplexity_equals_exp_of_torch_cross_entropy() -> None:
    m = N.NGramModel(n=2, k=0.1).fit("the quick brown fox jumps over the lazy dog " * 3)
    text = "the lazy fox jumps over the quick dog"
    tokens = N.tokenize(text)
    logits = torch.tensor(
        [[math.log(m.prob([tokens[i - 1]], v)) for v in m.vocab] for i in range(1, len(tokens))],
        dtype=torch.float64,
    )
    known = set(m.vocab)
    target = torch.tensor([m.vocab.index(t if t in known else N.UNK) for t in tokens[1:]])
    expected = math.exp(torch.nn.functional.cross_entropy(logits, target).item())
    assert m.perplexity(text) == pytest.approx(expected, rel=1e-9)


def test_perplexity_from_probs() -> None:
    assert N.perplexity_from_probs([0.5, 0.5]) == pytest.approx(2.0)
    assert N.perplexity_from_probs([0.25, 1.0]) == pytest.approx(2.0)  # sqrt(4 * 1)
    assert N.perplexity_from_probs([0.1, 0.0]) == math.inf
    with pytest.raises(ValueError):
        N.perplexity_from_probs([])
    with pytest.raises(ValueError):
        N.perplexity_from_probs([1.5])


def test_word_level_and_unknown_words() -> None:
    assert N.tokenize("Hello, world!\nBye.", "word") == [
        "Hello",
        ",",
        "world",
        "!",
        "\n",
        "Bye",
        ".",
    ]
    assert N.detokenize(["Hello", ",", "world", "!", "\n", "Bye", "."], "word") == (
        "Hello, world!\nBye."
    )
    m = N.NGramModel(n=2, k=1, level="word", min_count=2).fit("a b a b a c")
    assert m.vocab == ["a", "b", N.UNK]  # c occurs once
    assert m.prob(["a"], "zebra") == m.prob(["a"], N.UNK) == m.prob(["a"], "c")


def test_generation_is_seeded_and_token_by_token() -> None:
    m = N.NGramModel(n=3, k=0.01).fit("abcabcabdabc" * 20)
    text, steps = m.generate("ab", length=30, seed=1)
    assert (text, steps) == m.generate("ab", length=30, seed=1)
    assert text.startswith("ab") and len(text) == 32 and len(steps) == 30
    for i, step in enumerate(steps):
        assert step.context == tuple(text[i : i + 2]) and step.chosen == text[i + 2]
        assert step.probability == pytest.approx(m.prob(list(step.context), step.chosen))
        assert step.top[0][1] >= step.top[-1][1]
    assert steps[0].top[0][0] == "c"  # after "ab", c is the most likely


def test_errors() -> None:
    with pytest.raises(ValueError, match="n must be"):
        N.NGramModel(n=0)
    with pytest.raises(ValueError, match="level"):
        N.NGramModel(level="byte")
    with pytest.raises(RuntimeError, match="fit"):
        N.NGramModel().perplexity("abc")
    with pytest.raises(ValueError, match="fewer than n"):
        N.NGramModel(n=5).fit("abc")


def test_command_line(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i}: the cat sat on the mat.\n" for i in range(300)))
    out = tmp_path / "r.json"
    assert N.main(["--corpus", str(corpus), "--n", "1", "2", "3", "--sample", "20",
                   "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    ppl = [m["val_perplexity"] for m in report["models"]]
    assert ppl[0] > ppl[1] > ppl[2]
    with pytest.raises(SystemExit):
        N.main(["--corpus", str(tmp_path / "missing.txt")])
