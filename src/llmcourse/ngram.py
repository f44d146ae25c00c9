"""n-gram language models: predicting the next token by counting.

A language model gives a probability to every sequence of tokens x_1, ..., x_T. By the chain
rule of probability,

    P(x_1, ..., x_T) = P(x_1) P(x_2 | x_1) P(x_3 | x_1, x_2) ... P(x_T | x_1, ..., x_{T-1}),

so it is enough to predict each token from the ones before it. The **Markov assumption** of an
n-gram model keeps only the last n - 1 of them: P(x_t | x_1..x_{t-1}) ~ P(x_t | x_{t-n+1}..x_{t-1}).
The probabilities are estimated by counting in a training text. With **add-k smoothing**,

    P(x | c) = (count(c, x) + k) / (count(c) + k V),

where c is the context (the n - 1 previous tokens), count(c, x) the number of times x followed
c, count(c) the number of times c was followed by anything and V the vocabulary size. k = 0 is
the maximum-likelihood estimate, which gives probability 0 to anything not seen in training;
k > 0 moves a little probability to every unseen continuation.

A context never seen in training has count(c) = 0, and add-k then gives every token the same
probability 1/V: the model knows nothing. With ``backoff=True`` (the default) the model uses the
longest *suffix* of the context that was seen instead (for a 4-gram model, the last two tokens,
then the last one, then none: the unigram frequencies). Since it only does so where the full
context has no counts at all, every P(. | c) still sums to one.

The model is judged by its **perplexity** on text it has not seen,

    PPL = exp( -(1/N) sum_t log P(x_t | context_t) ),

the exponential of the average negative log-likelihood per token (the cross-entropy loss that
neural language models minimise). A model that spreads its probability evenly over V tokens
has perplexity V: perplexity is the number of choices the model is "hesitating between".

Tokens are characters (``level="char"``) or words and punctuation marks (``level="word"``).
Training tokens seen fewer than ``min_count`` times, and unseen tokens at evaluation, are
replaced by ``<unk>``. Generation draws one token at a time from P(x | context), appends it to
the context, and repeats: the way every model of this course produces text.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Level = Literal["char", "word"]
UNK = "<unk>"
_WORD = re.compile(r"\w+|[^\w\s]|\n")


def tokenize(text: str, level: Level = "char") -> list[str]:
    """Characters, or words, punctuation marks and line breaks."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text)
    raise ValueError(f"level must be 'char' or 'word', got {level!r}")


def detokenize(tokens: Sequence[str], level: Level = "char") -> str:
    """Tokens back to text: characters are joined, words separated by spaces."""
    if level == "char":
        return "".join(tokens)
    text = " ".join(tokens)
    return re.sub(r" ?\n ?", "\n", re.sub(r" ([.,;:!?)\]}])", r"\1", text))


def perplexity_from_probs(probs: Sequence[float]) -> float:
    """exp(-mean log p) of the probabilities a model gave to each actual next token."""
    if not probs:
        raise ValueError("perplexity needs at least one probability")
    if any(p < 0 or p > 1 for p in probs):
        raise ValueError("probabilities must be between 0 and 1")
    if any(p == 0 for p in probs):
        return math.inf
    return math.exp(-sum(math.log(p) for p in probs) / len(probs))


@dataclass
class Step:
    """One step of generation: the context, the most likely next tokens, and the draw."""

    context: tuple[str, ...]
    top: list[tuple[str, float]]
    chosen: str
    probability: float


class NGramModel:
    """An n-gram language model with add-k smoothing over characters or words."""

    def __init__(
        self,
        n: int = 3,
        k: float = 1.0,
        level: Level = "char",
        min_count: int = 1,
        backoff: bool = True,
    ):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        tokenize("", level)  # checks the level
        self.n, self.k, self.level, self.min_count = n, float(k), level, min_count
        self.backoff = backoff
        self.vocab: list[str] = []
        self.counts: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        self.totals: Counter[tuple[str, ...]] = Counter()

    def __repr__(self) -> str:
        return (
            f"NGramModel(n={self.n}, k={self.k:g}, level={self.level!r}, "
            f"backoff={self.backoff}, V={len(self.vocab)})"
        )

    def _map(self, tokens: Sequence[str]) -> list[str]:
        known = self._known
        return [t if t in known else UNK for t in tokens]

    def fit(self, text: str) -> NGramModel:
        """Count every n-gram of the training text."""
        tokens = tokenize(text, self.level)
        if len(tokens) < self.n:
            raise ValueError(f"the training text has {len(tokens)} tokens, fewer than n={self.n}")
        freq = Counter(tokens)
        kept = sorted(t for t, c in freq.items() if c >= self.min_count)
        self.vocab = kept if UNK in kept else [*kept, UNK]
        self._known = set(self.vocab)
        tokens = self._map(tokens)
        self.counts.clear()
        self.totals.clear()
        m = self.n - 1
        lengths = range(m + 1) if self.backoff else (m,)
        for i in range(m, len(tokens)):
            for length in lengths:  # the context and, for backing off, its shorter suffixes
                context = tuple(tokens[i - length : i])
                self.counts[context][tokens[i]] += 1
                self.totals[context] += 1
        return self

    def _check_fitted(self) -> None:
        if not self.vocab:
            raise RuntimeError("the model has not been trained: call fit(text) first")

    def prob(self, context: Sequence[str], token: str) -> float:
        """P(token | the last n - 1 tokens of context), add-k smoothed."""
        self._check_fitted()
        m = self.n - 1
        if len(context) < m:
            raise ValueError(f"the context needs {m} tokens, got {len(context)}")
        ctx = tuple(self._map(list(context)[len(context) - m :])) if m else ()
        if self.backoff:
            while ctx and ctx not in self.totals:
                ctx = ctx[1:]
        token = token if token in self._known else UNK
        seen = self.counts.get(ctx)
        denominator = self.totals.get(ctx, 0) + self.k * len(self.vocab)
        if denominator == 0:
            return 0.0  # k = 0 and a context never seen in training
        return ((seen[token] if seen else 0) + self.k) / denominator

    def distribution(self, context: Sequence[str]) -> dict[str, float]:
        """P(x | context) for every token x of the vocabulary."""
        return {t: self.prob(context, t) for t in self.vocab}

    def token_probs(self, text: str) -> list[float]:
        """The probability of each token of ``text`` given the n - 1 before it (the first
        n - 1 tokens only serve as context)."""
        self._check_fitted()
        tokens = tokenize(text, self.level)
        m = self.n - 1
        if len(tokens) <= m:
            raise ValueError(f"the text has {len(tokens)} tokens: it needs more than {m}")
        return [self.prob(tokens[i - m : i], tokens[i]) for i in range(m, len(tokens))]

    def perplexity(self, text: str) -> float:
        """Perplexity of the model on ``text``."""
        return perplexity_from_probs(self.token_probs(text))

    def generate(
        self, prompt: str = "", length: int = 200, seed: int = 0, top: int = 5
    ) -> tuple[str, list[Step]]:
        """Sample ``length`` tokens one at a time after ``prompt``; returns the text and every
        step. A prompt shorter than n - 1 tokens is padded with a random training context."""
        self._check_fitted()
        rng = random.Random(seed)
        tokens = self._map(tokenize(prompt, self.level))
        m = self.n - 1
        if len(tokens) < m:
            contexts = sorted(c for c in self.totals if len(c) == m)
            tokens = list(rng.choice(contexts))
        steps = []
        for _ in range(length):
            context = tuple(tokens[len(tokens) - m :]) if m else ()
            dist = self.distribution(context)
            choice = rng.choices(list(dist), weights=list(dist.values()))[0]
            best = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            steps.append(Step(context, best, choice, dist[choice]))
            tokens.append(choice)
        return detokenize(tokens, self.level), steps


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.ngram",
        description="Train character- or word-level n-gram models on a corpus, report their "
        "validation perplexity and sample text from them token by token.",
        epilog="examples:\n"
        "  python -m llmcourse.ngram --corpus pydoc-topics --n 1 2 3 4 5 --k 0.01\n"
        "  python -m llmcourse.ngram --level word --n 2 --sample 60 --json ngram.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", default="pydoc-topics", help="corpus name, file or folder")
    parser.add_argument("--level", choices=("char", "word"), default="char")
    parser.add_argument("--n", type=int, nargs="+", default=[3], help="orders to train")
    parser.add_argument("--k", type=float, default=0.01, help="add-k smoothing (default: 0.01)")
    parser.add_argument("--min-count", type=int, default=1, help="rarer tokens become <unk>")
    parser.add_argument(
        "--no-backoff", action="store_true", help="unseen contexts get the uniform distribution"
    )
    parser.add_argument("--sample", type=int, default=200, help="tokens to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    from llmcourse.data import load_corpus

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        corpus = load_corpus(args.corpus)
        train, val = corpus.train_val_split(0.1, seed=args.seed)
        results = []
        for n in args.n:
            model = NGramModel(n, args.k, args.level, args.min_count, not args.no_backoff)
            model.fit(train)
            text, _ = model.generate(length=args.sample, seed=args.seed)
            results.append(
                {
                    "n": n,
                    "vocabulary": len(model.vocab),
                    "train_perplexity": model.perplexity(train[:100_000]),
                    "val_perplexity": model.perplexity(val),
                    "sample": text,
                }
            )
            print(f"n={n}: validation perplexity {results[-1]['val_perplexity']:.2f}")
            print(f"  sample: {text!r}")
    except (ValueError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    if args.json:
        report = {
            "corpus": corpus.name,
            "level": args.level,
            "k": args.k,
            "backoff": not args.no_backoff,
            "models": results,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
