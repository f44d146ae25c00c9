"""Data mixtures: how much of each corpus the model sees.

A pretraining set is a blend (web pages, books, code, encyclopaedia, ...) and the blend is
chosen by weight, not by how much of each happens to exist. The first LLaMA, for example,
took 67 % of its sampled tokens from CommonCrawl and 4.5 % each from GitHub code, Wikipedia and
books, and so went over Wikipedia and the books more than twice (2.45 and 2.23 epochs) while
seeing the crawl about once (1.10 epochs). Weights are set
on *tokens*: source ``i`` with weight ``w_i`` gets ``T_i = T w_i / sum_j w_j`` of a budget of
``T`` tokens.

``plan_mixture`` takes each source's document lengths (in tokens) and the weights, and picks
documents for every source in seeded random order, going round again (a new shuffle, a new
*epoch*) when a small source must be repeated, until its share is reached: in the last pass a
document is taken only if that brings the count closer to the share, so a source misses its
share by at most half a document. Without a budget it takes the largest ``T`` that repeats no
source, so the scarcest source relative to its weight is used once in full. The picks of all
sources are then shuffled together, so that a training window mixes sources in proportion
everywhere in the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MixturePlan:
    """The documents of a mixture, ``(source, document index)`` in output order, and what they
    add up to per source: tokens taken, the tokens wanted and the epochs (times through the
    source)."""

    order: list[tuple[str, int]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    epochs: dict[str, float] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def proportions(self) -> dict[str, float]:
        """Each source's realised share of the tokens."""
        total = self.total_tokens
        return {name: count / total for name, count in self.tokens.items()}

    def to_dict(self, weights: Mapping[str, float] | None = None) -> dict:
        """Per source: tokens, documents picked, share, target share (if given) and epochs."""
        picks: dict[str, int] = dict.fromkeys(self.tokens, 0)
        for name, _ in self.order:
            picks[name] += 1
        norm = sum(weights.values()) if weights else 0.0
        return {
            name: {
                "tokens": self.tokens[name],
                "documents": picks[name],
                "share": share,
                **({"weight": weights[name] / norm} if weights else {}),
                "epochs": self.epochs[name],
            }
            for name, share in self.proportions().items()
        }


def normalized_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The weights scaled to sum to 1; each must be positive."""
    if not weights:
        raise ValueError("a mixture needs at least one source")
    for name, weight in weights.items():
        if not weight > 0:
            raise ValueError(f"the weight of {name!r} must be positive, got {weight}")
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def plan_mixture(
    lengths: Mapping[str, Sequence[int]],
    weights: Mapping[str, float],
    total_tokens: int | None = None,
    seed: int = 0,
) -> MixturePlan:
    """Choose documents so that source ``i`` supplies a share ``w_i`` of ``total_tokens``.

    ``lengths[name]`` lists the token counts of that source's documents. ``total_tokens=None``
    takes the largest budget that repeats no source.
    """
    shares = normalized_weights(weights)
    unknown = set(shares) - set(lengths)
    if unknown:
        raise ValueError(f"weights given for sources without documents: {sorted(unknown)}")
    available = {}
    for name in shares:
        available[name] = int(np.sum(lengths[name], dtype=np.int64))
        if available[name] <= 0:
            raise ValueError(f"source {name!r} has no tokens: it cannot take a share")
    if total_tokens is None:
        total_tokens = int(min(available[n] / shares[n] for n in shares))
    if total_tokens < 1:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    plan = MixturePlan()
    for index, name in enumerate(shares):
        rng = np.random.default_rng([seed, index])
        sizes = np.asarray(lengths[name], dtype=np.int64)
        target = shares[name] * total_tokens
        taken, last_pass = 0, False
        while not last_pass:  # one pass over a fresh shuffle of the source per epoch
            for doc in rng.permutation(len(sizes)):
                if taken + sizes[doc] / 2 > target:
                    last_pass = True  # skip what overshoots; finish this pass with the rest
                    continue
                plan.order.append((name, int(doc)))
                taken += int(sizes[doc])
        plan.tokens[name] = taken
        plan.targets[name] = target
        plan.epochs[name] = taken / available[name]
    shuffle = np.random.default_rng([seed, len(shares)]).permutation(len(plan.order))
    plan.order = [plan.order[i] for i in shuffle]
    return plan
