"""De-duplication: exact copies by hash, near-copies by MinHash and LSH banding.

The web repeats itself: licences, templates, quoted articles, the same page under two URLs.
A model trained on repeated text spends capacity memorising it and recites it verbatim, so
pipelines remove copies before training.

**Exact copies.** Normalise a document (Unicode NFKC, case-folded, whitespace collapsed) and
hash it; documents with the same hash are copies and only the first is kept.

**Near copies.** Two documents are compared through their sets of *shingles*, the overlapping
runs of ``k`` words (or characters), by the Jaccard similarity ``J(A, B) = |A ∩ B| / |A ∪ B|``.
Comparing every pair costs ``n²``; MinHash and LSH make it about linear:

* *MinHash.* Hash each shingle to 64 bits, then map it through ``num_perm`` random hash
  functions ``h_i(x) = (a_i x + b_i) mod p`` with ``p = 2⁶¹ - 1`` (a Mersenne prime, seeded
  random ``a_i, b_i``). The signature of a set is the minimum of each ``h_i`` over its
  shingles. For one random ``h``, the minimum over ``A ∪ B`` is equally likely to be any of its
  elements, and ``min h(A) = min h(B)`` exactly when that element lies in ``A ∩ B``: so
  ``P[min h(A) = min h(B)] = J(A, B)``. The fraction of equal signature entries estimates ``J``
  with standard error ``sqrt(J(1 - J) / num_perm)`` (at most ``0.5 / sqrt(num_perm)``).
* *LSH banding.* Cut the signature into ``b`` bands of ``r`` rows (``b r <= num_perm``) and
  put each document in one bucket per band, keyed by that band's ``r`` values. Two documents
  become *candidates* when they share a bucket in at least one band, which happens with
  probability ``1 - (1 - s^r)^b`` for Jaccard ``s``: an S-curve that rises steeply around
  ``(1/b)^(1/r)``. ``choose_bands`` places it at the wanted threshold.
* Candidates whose Jaccard (exact, from the shingle sets, or estimated from the signatures)
  reaches the threshold are near-duplicates; clusters of them (joined transitively) keep
  their first document only.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

MERSENNE_61 = (1 << 61) - 1
"""The prime ``p = 2⁶¹ - 1`` of the universal hash family."""

_P = np.uint64(MERSENNE_61)
_LOW31 = np.uint64((1 << 31) - 1)
_LOW30 = np.uint64((1 << 30) - 1)


# --------------------------------------------------------------------------------------------
# Exact duplicates
# --------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The form two documents are compared in: NFKC, case-folded, runs of whitespace made one
    space, stripped. (So ``"Hello  World\\n"`` and ``"hello world"`` count as the same text.)"""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    """A 128-bit BLAKE2b hex digest of the normalised text."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


def exact_duplicates(documents: Sequence[str]) -> tuple[list[int], dict[int, int]]:
    """(indices kept, ``{removed index: index of the earlier copy it repeats}``)."""
    first: dict[str, int] = {}
    kept, removed = [], {}
    for i, text in enumerate(documents):
        key = text_hash(text)
        if key in first:
            removed[i] = first[key]
        else:
            first[key] = i
            kept.append(i)
    return kept, removed


# --------------------------------------------------------------------------------------------
# Shingles
# --------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads the bits of 64-bit integers (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _word_ids(words: list[str]) -> np.ndarray:
    cache: dict[str, int] = {}
    ids = np.empty(len(words), dtype=np.uint64)
    for i, w in enumerate(words):
        if w not in cache:
            digest = hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest()
            cache[w] = int.from_bytes(digest, "little")
        ids[i] = cache[w]
    return ids


def shingle_hashes(text: str, k: int = 5, unit: Literal["word", "char"] = "word") -> np.ndarray:
    """The distinct 64-bit hashes of the ``k``-shingles of the normalised text, sorted.

    A shingle is ``k`` consecutive words (``unit="word"``) or characters (``"char"``); a text
    shorter than ``k`` units is one shingle. Each unit gets a 64-bit id (its BLAKE2b digest
    for words, its code point for characters), a window of ``k`` ids is combined as a
    polynomial ``sum id_j B^(k-1-j)`` modulo ``2⁶⁴`` and mixed by SplitMix64, all in NumPy.
    """
    if k < 1:
        raise ValueError(f"shingle size k must be at least 1, got {k}")
    norm = normalize(text)
    if unit == "word":
        ids = _word_ids(norm.split())
    elif unit == "char":
        ids = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    else:
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if len(ids) == 0:
        return np.empty(0, dtype=np.uint64)
    width = min(k, len(ids))
    n = len(ids) - width + 1
    h = np.zeros(n, dtype=np.uint64)
    base = np.uint64(0x100000001B3)  # odd, so multiplying by it is invertible mod 2^64
    for j in range(width):
        h = h * base + ids[j : j + n]
    return np.unique(_mix64(h))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sets given as arrays of distinct values (1 when both
    are empty)."""
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


# --------------------------------------------------------------------------------------------
# MinHash
# --------------------------------------------------------------------------------------------


def _reduce61(s: np.ndarray) -> np.ndarray:
    """``s mod p`` for ``s < 2⁶³`` (uses ``2⁶¹ ≡ 1``)."""
    s = (s & _P) + (s >> np.uint64(61))
    return np.where(s >= _P, s - _P, s)


def mulmod61(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(a * x) mod (2⁶¹ - 1)`` exactly, elementwise, for ``a, x < 2⁶¹`` in uint64.

    The 122-bit product does not fit 64 bits, so split both into 31-bit halves,
    ``a = a₁ 2³¹ + a₀`` and ``x = x₁ 2³¹ + x₀``; then
    ``a x = a₁x₁ 2⁶² + (a₁x₀ + a₀x₁) 2³¹ + a₀x₀`` where each product fits, and powers
    ``2⁶¹ ≡ 1`` fold back: ``2⁶² ≡ 2`` and ``m 2³¹ ≡ (m >> 30) + (m mod 2³⁰) 2³¹``.
    """
    a_hi, a_lo = a >> np.uint64(31), a & _LOW31
    x_hi, x_lo = x >> np.uint64(31), x & _LOW31
    mid = a_hi * x_lo + a_lo * x_hi  # < 2^62
    low = a_lo * x_lo  # < 2^62
    total = (
        ((a_hi * x_hi) << np.uint64(1))
        + (mid >> np.uint64(30))
        + ((mid & _LOW30) << np.uint64(31))
        + (low & _P)
        + (low >> np.uint64(61))
    )  # < 2^63
    return _reduce61(total)


class MinHasher:
    """``num_perm`` seeded hash functions ``h_i(x) = (a_i x + b_i) mod (2⁶¹ - 1)``, and the
    MinHash signatures they give sets of 64-bit shingle hashes."""

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be at least 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, MERSENNE_61, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE_61, size=num_perm, dtype=np.uint64)

    def hash_values(self, values: np.ndarray) -> np.ndarray:
        """``h_i(x)`` for every function ``i`` and value ``x``: shape (num_perm, len(values))."""
        x = _reduce61(_reduce61(np.asarray(values, dtype=np.uint64)))
        return _reduce61(mulmod61(self.a[:, None], x[None, :]) + self.b[:, None])

    def signature(self, values: np.ndarray, block: int = 256) -> np.ndarray:
        """The MinHash signature of a set of 64-bit values: ``min_x h_i(x)`` for each ``i``
        (all ``p``, a value no hash reaches, for the empty set).

        The same numbers as ``hash_values(values).min(axis=1)``, computed ``block`` values at
        a time with in-place NumPy operations (about three times faster, and a long document
        never needs a (num_perm x n) array at once)."""
        u = np.uint64
        a_hi, a_lo, b = (self.a >> u(31))[:, None], (self.a & _LOW31)[:, None], self.b[:, None]
        x_all = _reduce61(_reduce61(np.asarray(values, dtype=np.uint64)))
        sig = np.full(self.num_perm, MERSENNE_61, dtype=np.uint64)
        for start in range(0, len(x_all), block):
            x = x_all[start : start + block]
            x_hi, x_lo = (x >> u(31))[None, :], (x & _LOW31)[None, :]
            mid = a_hi * x_lo
            mid += a_lo * x_hi
            low = a_lo * x_lo
            t = a_hi * x_hi  # the sum of mulmod61, term by term
            t <<= u(1)
            t += mid >> u(30)
            mid &= _LOW30
            mid <<= u(31)
            t += mid
            t += low >> u(61)
            low &= _P
            t += low
            t = (t & _P) + (t >> u(61))  # fold with 2^61 = 1 (mod p): below 2^61 + 4
            t += b
            t = (t & _P) + (t >> u(61))
            t -= _P * (t >= _P)
            np.minimum(sig, t.min(axis=1), out=sig)
        return sig

    def signatures(self, sets: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures of many sets: shape (len(sets), num_perm)."""
        out = np.empty((len(sets), self.num_perm), dtype=np.uint64)
        for i, values in enumerate(sets):
            out[i] = self.signature(values)
        return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The fraction of equal signature entries: an unbiased estimate of the Jaccard."""
    return float(np.mean(sig_a == sig_b))


# --------------------------------------------------------------------------------------------
# LSH banding
# --------------------------------------------------------------------------------------------


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """``1 - (1 - s^r)^b``: the chance that two sets of Jaccard ``s`` share a bucket in at
    least one of ``b`` bands of ``r`` rows (each band matches with probability ``s^r``)."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


def _area(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule: the area under the points ``(x, y)``."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def choose_bands(threshold: float, num_perm: int, min_recall: float = 0.95) -> tuple[int, int]:
    """The ``(bands, rows)``, ``bands * rows <= num_perm``, for LSH at Jaccard ``threshold``.

    Among the settings that make a pair *at* the threshold a candidate with probability at
    least ``min_recall`` (pairs above it even more likely), take the one with the least area
    under the S-curve below the threshold: the fewest dissimilar pairs to check. For
    ``threshold=0.8`` and 128 permutations that is 13 bands of 7 rows.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if not 0.0 < min_recall < 1.0:
        raise ValueError(f"min_recall must be between 0 and 1, got {min_recall}")
    below = np.linspace(0.0, threshold, 201)
    best, best_area = None, float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            if candidate_probability(threshold, bands, rows) < min_recall:
                continue
            area = _area(candidate_probability(below, bands, rows), below)
            if area < best_area:
                best, best_area = (bands, rows), area
    if best is None:
        raise ValueError(
            f"no banding of {num_perm} permutations reaches recall {min_recall} at Jaccard "
            f"{threshold}: use more permutations or a lower min_recall"
        )
    return best


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of rows of ``signatures`` that agree on all ``rows``
    entries of at least one of the ``bands`` bands."""
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} signature entries, "
                         f"the signatures have {num_perm}")  # fmt: skip
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


# --------------------------------------------------------------------------------------------
# Near-duplicate detection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearDedupConfig:
    """Settings of the near-duplicate detector.

    ``verify="exact"`` confirms an LSH candidate by the exact Jaccard of the two shingle sets
    (which the course's corpora are small enough to keep); ``"estimate"`` by the signatures'
    agreement alone, as pipelines must that cannot keep every set. ``bands``/``rows`` of
    ``None`` are chosen by ``choose_bands`` for the threshold and ``min_recall``.
    """

    threshold: float = 0.8
    num_perm: int = 128
    shingle_size: int = 5
    unit: Literal["word", "char"] = "word"
    seed: int = 1
    min_recall: float = 0.95
    verify: Literal["exact", "estimate"] = "exact"
    bands: int | None = None
    rows: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.verify not in ("exact", "estimate"):
            raise ValueError(f"verify must be 'exact' or 'estimate', got {self.verify!r}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")

    def banding(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return choose_bands(self.threshold, self.num_perm, self.min_recall)


@dataclass
class NearDuplicates:
    """Result of ``near_duplicates``: indices kept, ``{removed: the kept document of its
    cluster}``, the number of LSH candidate pairs, and the confirmed pairs
    ``(i, j, similarity)`` (exact or estimated Jaccard, as configured)."""

    kept: list[int]
    removed: dict[int, int]
    candidates: int
    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    bands: int = 0
    rows: int = 0


def near_duplicates(
    documents: Sequence[str], config: NearDedupConfig = NearDedupConfig()
) -> NearDuplicates:
    """Find near-duplicate documents with MinHash + LSH and keep one per cluster (the first)."""
    bands, rows = config.banding()
    hasher = MinHasher(config.num_perm, config.seed)
    sets = [shingle_hashes(d, config.shingle_size, config.unit) for d in documents]
    sigs = hasher.signatures(sets)
    candidates = lsh_candidates(sigs, bands, rows)
    pairs = []
    for i, j in sorted(candidates):
        if config.verify == "exact":
            similarity = jaccard(sets[i], sets[j])
        else:
            similarity = estimated_jaccard(sigs[i], sigs[j])
        if similarity >= config.threshold:
            pairs.append((i, j, similarity))
    parent = list(range(len(documents)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the earliest document represents its cluster
    kept = [i for i in range(len(documents)) if root(i) == i]
    removed = {i: root(i) for i in range(len(documents)) if root(i) != i}
    return NearDuplicates(kept, removed, len(candidates), pairs, bands, rows)
