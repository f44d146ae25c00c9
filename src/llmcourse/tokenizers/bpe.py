"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2, GPT-4 and LLaMA 3.

**Bytes first.** Text is turned into its UTF-8 bytes, so the 256 byte values are the starting
vocabulary and *any* Unicode string can be encoded: there is no unknown token. An English
letter is one byte, most Chinese characters are three and an emoji four.

**Pre-tokenization.** A regular expression (GPT-4's, ``GPT4_PATTERN``) first cuts the text into
pieces: words with their leading space, runs of up to three digits, punctuation, whitespace.
Merges never cross a piece boundary, so "dog." and "dog!" share the token for " dog".

**Training** repeats one step until the vocabulary has the wanted size: count every pair of
adjacent tokens in the training pieces (each piece weighted by how often it occurs), take the
most frequent pair (a, b), give it a new token id and replace every occurrence of a, b by it.
Recounting all pairs after every merge costs a pass over the whole corpus per merge
(``train_bpe_naive``). ``train_bpe`` instead keeps the counts, remembers which pieces hold each
pair, and after a merge updates only the pieces that contained it; a heap finds the next most
frequent pair. Both learn the same merges (ties go to the smallest pair of ids).

**Encoding** a piece starts from its bytes and repeatedly merges the adjacent pair whose merged
token has the lowest rank (was learned first), leftmost on ties, until no pair is a token. This
is exactly the rule of OpenAI's ``tiktoken``, which is why ``BPETokenizer.to_tiktoken`` gives an
``tiktoken.Encoding`` that produces the same ids, much faster (it is written in Rust).

Ranks: token ids 0-255 are the single bytes; learned tokens follow in the order they were
learned; special tokens (``<|endoftext|>``) come after all of them.

**The real GPT-2 files.** GPT-2 ships its tokenizer as ``vocab.json`` (token string -> id) and
``merges.txt`` (one merge ``a b`` per line, in the order learned), the format Hugging Face's
libraries read and write. Token strings there are bytes in disguise: ``bytes_to_unicode`` gives
every byte a printable character (a space is ``Ġ``, a newline ``Ċ``), so the files are plain
text. ``BPETokenizer.from_hf_files`` reads them, with GPT-2's own ids and pre-tokenization
pattern (``GPT2_PATTERN``), and encodes by the rule of the original code: merge the adjacent
*pair* that comes first in ``merges.txt``.
"""

from __future__ import annotations

import base64
import heapq
import json
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Literal

import regex

from llmcourse.data import load_corpus

GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
"""The pre-tokenization pattern of GPT-4's ``cl100k_base`` encoding (contractions, words with
one leading non-letter, up to three digits, punctuation runs, line breaks, other whitespace)."""

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization pattern: a few English contractions, letters, digits or other
symbols each with at most one leading space, and whitespace (a run of spaces before a word
leaves its last space to the word). Hugging Face's ``ByteLevel`` pre-tokenizer uses it too."""

FORMAT = "llmcourse-bpe"
FORMAT_VERSION = 1

Pair = tuple[int, int]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte value, used to write tokens as text.

    The 188 bytes whose Latin-1 character is printable and not a space (``!`` to ``~``, ``¡`` to
    ``¬``, ``®`` to ``ÿ``) stand for themselves; the other 68 (control characters, the space,
    U+00A0, the soft hyphen) are given the characters from U+0100 on, in byte order. So the
    space (byte 32, the 33rd of those) is U+0120 ``Ġ`` and the newline (byte 10) U+010A ``Ċ``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + i) for i, b in enumerate(others)})
    return dict(sorted(mapping.items()))


def pretokenize(text: str, pattern: str = GPT4_PATTERN) -> list[str]:
    """The pieces the pattern cuts ``text`` into; joined, they give back ``text``."""
    return regex.findall(pattern, text)


def count_pieces(texts: Iterable[str] | str, pattern: str = GPT4_PATTERN) -> Counter[bytes]:
    """How often each pre-tokenized piece occurs, as UTF-8 bytes."""
    if isinstance(texts, str):
        texts = [texts]
    counts: Counter[bytes] = Counter()
    for text in texts:
        counts.update(piece.encode("utf-8") for piece in regex.findall(pattern, text))
    return counts


def count_pairs(ids: list[int], counts: Counter[Pair] | None = None, weight: int = 1):
    """Add ``weight`` to the count of every adjacent pair in ``ids``; returns the counter."""
    counts = Counter() if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] += weight
    return counts


def merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair``, left to right, by ``new_id``."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def apply_merges(ids: list[int], merges: Sequence[Pair]) -> list[int]:
    """Encode by merge priority: while some adjacent pair is one of ``merges``, merge every
    occurrence of the earliest-learned such pair (``merges[i]`` becomes id ``256 + i``).

    This replays training on new text. ``BPETokenizer.encode_piece`` uses tiktoken's rule
    (the pair whose merged *bytes* have the lowest rank); the two agree on ordinary text and
    can differ only when the same bytes can be built from two different pairs.
    """
    rank = {tuple(pair): 256 + i for i, pair in enumerate(merges)}
    while len(ids) > 1:
        present = [p for p in pairwise(ids) if p in rank]
        if not present:
            break
        best = min(present, key=rank.__getitem__)
        ids = merge(ids, best, rank[best])
    return ids


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainingLog:
    """What happened during training: the count of each merged pair, the pieces, and the
    time spent pre-tokenizing (``count_seconds``) and merging (``merge_seconds``)."""

    pair_counts: list[int] = field(default_factory=list)
    count_seconds: float = 0.0
    merge_seconds: float = 0.0
    pieces: int = 0
    distinct_pieces: int = 0

    @property
    def seconds(self) -> float:
        return self.count_seconds + self.merge_seconds

    @property
    def merges_per_second(self) -> float:
        """Merges per second of the merge loop (pre-tokenization not included)."""
        n = len(self.pair_counts)
        return n / self.merge_seconds if self.merge_seconds > 0 else float("inf")


def _new_token(vocab: list[bytes], ranks: dict[bytes, int], pair: Pair) -> int:
    """The id of the token a + b: a new one, or the existing one when the bytes are known."""
    token = vocab[pair[0]] + vocab[pair[1]]
    if token not in ranks:
        ranks[token] = len(vocab)
        vocab.append(token)
    return ranks[token]


def _start(
    texts: Iterable[str] | str, pattern: str, vocab_size: int, min_frequency: int
) -> tuple[list[bytes], dict[bytes, int], list[list[int]], list[int], TrainingLog]:
    """The first phase of both trainers: check the arguments, then pre-tokenize and count.

    Returns the 256 byte tokens (``vocab`` and their ``ranks``), the distinct pieces as lists
    of byte ids with their frequencies, and a log holding the counting time.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the byte values), got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    start = time.perf_counter()
    counts = count_pieces(texts, pattern)
    if not counts:
        raise ValueError("the training text is empty: BPE needs text to count pairs in")
    vocab = [bytes([b]) for b in range(256)]
    ranks = {t: i for i, t in enumerate(vocab)}
    words = [list(piece) for piece in counts]
    freqs = list(counts.values())
    log = TrainingLog(pieces=sum(freqs), distinct_pieces=len(words))
    log.count_seconds = time.perf_counter() - start
    return vocab, ranks, words, freqs, log


def train_bpe(
    texts: Iterable[str] | str,
    vocab_size: int,
    *,
    pattern: str = GPT4_PATTERN,
    min_frequency: int = 2,
    special_tokens: Collection[str] = (),
) -> tuple[BPETokenizer, TrainingLog]:
    """Learn merges until the vocabulary has ``vocab_size`` tokens (special tokens not
    counted) or no pair occurs ``min_frequency`` times; incremental pair counts.

    State: ``pair_counts[p]`` (occurrences of pair p, weighted by piece frequency),
    ``where[p]`` (indices of the pieces that held p at some point: a superset) and a heap of
    ``(-count, p)`` entries, some of them out of date: an entry is used only if its count is
    still the pair's current count. After merging p, each piece in ``where[p]`` that really
    changed has its old pairs subtracted and its new pairs added, so the work per merge is
    proportional to the pieces that contain p, not to the corpus.
    """
    vocab, ranks, words, freqs, log = _start(texts, pattern, vocab_size, min_frequency)
    start = time.perf_counter()
    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for i, (word, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] += freq
            where[pair].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # an out-of-date entry
        if -neg < min_frequency:
            break
        new_id = _new_token(vocab, ranks, pair)
        merges.append(pair)
        log.pair_counts.append(-neg)
        changed: set[Pair] = set()
        for i in where.pop(pair):
            word = words[i]
            new_word = merge(word, pair, new_id)
            if len(new_word) == len(word):
                continue  # the piece no longer holds the pair
            freq = freqs[i]
            for p in pairwise(word):
                pair_counts[p] -= freq
                changed.add(p)
            for p in pairwise(new_word):
                pair_counts[p] += freq
                where[p].add(i)
                changed.add(p)
            words[i] = new_word
        for p in changed:
            c = pair_counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del pair_counts[p]
    log.merge_seconds = time.perf_counter() - start
    return BPETokenizer(merges, pattern=pattern, special_tokens=special_tokens), log


def train_bpe_naive(
    texts: Iterable[str] | str,
    vocab_size: int,
    *,
    pattern: str = GPT4_PATTERN,
    min_frequency: int = 2,
    special_tokens: Collection[str] = (),
) -> tuple[BPETokenizer, TrainingLog]:
    """The same training as ``train_bpe``, recounting every pair of every piece after each
    merge: simple to read, and slow. Kept to check and to measure ``train_bpe`` against."""
    vocab, ranks, words, freqs, log = _start(texts, pattern, vocab_size, min_frequency)
    start = time.perf_counter()
    merges: list[Pair] = []
    while len(vocab) < vocab_size:
        pair_counts: Counter[Pair] = Counter()
        for word, freq in zip(words, freqs, strict=True):
            count_pairs(word, pair_counts, freq)
        if not pair_counts:
            break
        pair, count = min(pair_counts.items(), key=lambda item: (-item[1], item[0]))
        if count < min_frequency:
            break
        new_id = _new_token(vocab, ranks, pair)
        merges.append(pair)
        log.pair_counts.append(count)
        words = [merge(word, pair, new_id) for word in words]
    log.merge_seconds = time.perf_counter() - start
    return BPETokenizer(merges, pattern=pattern, special_tokens=special_tokens), log


def course_bpe() -> tuple[BPETokenizer, TrainingLog]:
    """The course's tokenizer: a vocabulary of 4096 plus ``<|endoftext|>``, trained on the first
    million characters of the training part (90 %, seed 0) of the ``stdlib-docs`` corpus.

    Offline and deterministic, so every page (and every machine) gets the same token ids; it
    trains in a second or two on a CPU.
    """
    train, _ = load_corpus("stdlib-docs").train_val_split(0.1, seed=0)
    return train_bpe(train[:1_000_000], 4096, special_tokens=["<|endoftext|>"])


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


class BPETokenizer:
    """A byte-level BPE tokenizer: a list of merges, a pre-tokenization pattern and special
    tokens. ``encode``/``decode`` round-trip any string exactly."""

    def __init__(
        self,
        merges: Iterable[Pair],
        *,
        pattern: str = GPT4_PATTERN,
        special_tokens: Collection[str] | dict[str, int] = (),
    ) -> None:
        self.merges: list[Pair] = []
        self.vocab: list[bytes] = [bytes([b]) for b in range(256)]
        self.ranks: dict[bytes, int] = {t: i for i, t in enumerate(self.vocab)}
        for pair in merges:
            a, b = (int(x) for x in pair)
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)):
                raise ValueError(
                    f"merge {len(self.merges)} ({a}, {b}) uses a token id that does not exist "
                    f"yet (the vocabulary has {len(self.vocab)} tokens at that point)"
                )
            _new_token(self.vocab, self.ranks, (a, b))
            self.merges.append((a, b))
        if not isinstance(special_tokens, dict):
            special_tokens = {s: len(self.vocab) + i for i, s in enumerate(special_tokens)}
        for token, token_id in special_tokens.items():
            if not token or token_id < len(self.vocab):
                raise ValueError(f"special token {token!r} needs an id >= {len(self.vocab)}")
        self._finish(pattern, special_tokens)
        self._pair_ranks: dict[Pair, tuple[int, int]] | None = None
        self._byte_ids = list(range(256))

    def _finish(self, pattern: str, special_tokens: dict[str, int]) -> None:
        """Compile the pattern and index the special tokens (shared by both constructors)."""
        try:
            self._regex = regex.compile(pattern)
        except regex.error as err:
            raise ValueError(f"invalid pre-tokenization pattern: {err}") from None
        self.pattern = pattern
        if len(set(special_tokens.values())) != len(special_tokens):
            raise ValueError("two special tokens share an id")
        self.special_tokens: dict[str, int] = dict(special_tokens)
        self._special_ids = {i: s for s, i in self.special_tokens.items()}
        self._cache: dict[bytes, list[int]] = {}

    @classmethod
    def from_hf_files(
        cls, vocab_json: str | Path, merges_txt: str | Path, *, pattern: str = GPT2_PATTERN
    ) -> BPETokenizer:
        """Read a byte-level BPE in GPT-2's Hugging Face format: ``vocab.json`` and
        ``merges.txt`` (what ``tokenizers``' ``BPE.save`` and GPT-2's repository hold).

        Ids are the file's ids. Entries that are neither a single byte nor the result of a
        merge (GPT-2's ``<|endoftext|>``) become special tokens. Encoding follows GPT-2's rule:
        in each pre-tokenized piece, merge every occurrence of the adjacent pair listed first in
        ``merges.txt``, and repeat while some adjacent pair is listed. ``mergeable_ranks`` and
        ``to_tiktoken`` rank by id, which for GPT-2's own files is the same order.
        """
        vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
        for path in (vocab_json, merges_txt):
            if not path.is_file():
                raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            table = json.loads(vocab_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{vocab_json} is not a vocab.json (invalid JSON: {err})") from None
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in table.items()
        ):
            raise ValueError(f"{vocab_json}: expected a JSON object mapping tokens to int ids")
        if sorted(table.values()) != list(range(len(table))):
            raise ValueError(f"{vocab_json}: the ids must be 0 .. {len(table) - 1}, each once")
        byte_of = {char: b for b, char in bytes_to_unicode().items()}
        missing = [c for c in byte_of if c not in table]
        if missing:
            raise ValueError(
                f"{vocab_json} is not a byte-level vocabulary: {len(missing)} of the 256 byte "
                f"characters are missing, e.g. {missing[:5]}"
            )
        pair_ranks: dict[Pair, tuple[int, int]] = {}
        merges: list[Pair] = []
        merged: set[str] = set()
        lines = merges_txt.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip() or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(p in table for p in parts) or "".join(parts) not in table:
                raise ValueError(
                    f"{merges_txt}, line {number}: {line!r} is not a merge 'a b' of two tokens "
                    "whose concatenation is also in vocab.json"
                )
            pair = (table[parts[0]], table[parts[1]])
            if pair not in pair_ranks:
                pair_ranks[pair] = (len(merges), table["".join(parts)])
                merges.append(pair)
                merged.add("".join(parts))
        tok = cls.__new__(cls)
        tok.merges = merges
        tok.vocab = [b""] * len(table)
        tok.ranks = {}
        special: dict[str, int] = {}
        for token, token_id in table.items():
            if token in byte_of or token in merged:
                tok.vocab[token_id] = bytes(byte_of[c] for c in token)
                tok.ranks[tok.vocab[token_id]] = token_id
            else:
                tok.vocab[token_id] = token.encode("utf-8")
                special[token] = token_id
        tok._pair_ranks = pair_ranks
        tok._byte_ids = [table[char] for char in bytes_to_unicode().values()]
        tok._finish(pattern, special)
        return tok

    @property
    def n_vocab(self) -> int:
        """Number of token ids, special tokens included."""
        return max([len(self.vocab) - 1, *self.special_tokens.values()]) + 1

    def __repr__(self) -> str:
        return (
            f"BPETokenizer({len(self.merges)} merges, {len(self.vocab)} tokens, "
            f"special {list(self.special_tokens)})"
        )

    # ----- encoding -------------------------------------------------------------------------

    def encode_piece(self, piece: bytes) -> list[int]:
        """The ids of one pre-tokenized piece: merge the lowest-ranked adjacent pair (leftmost
        on ties) while some adjacent pair forms a known token."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        if self._pair_ranks is not None:
            return self._encode_piece_by_pairs(piece)
        parts = [piece[i : i + 1] for i in range(len(piece))]
        ranks = self.ranks
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best_rank is None:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        ids = [ranks[p] for p in parts]
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def _encode_piece_by_pairs(self, piece: bytes) -> list[int]:
        """GPT-2's rule, for files read by ``from_hf_files``: while some adjacent pair is a
        listed merge, merge every occurrence (left to right) of the one listed first."""
        ids = [self._byte_ids[b] for b in piece]
        pair_ranks = self._pair_ranks
        while len(ids) > 1:
            listed = [pair_ranks[p] for p in pairwise(ids) if p in pair_ranks]
            if not listed:
                break
            rank, new_id = min(listed)
            ids = merge(ids, self.merges[rank], new_id)
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text``, treating special-token strings as ordinary text."""
        ids: list[int] = []
        for piece in self._regex.findall(text):
            ids.extend(self.encode_piece(piece.encode("utf-8")))
        return ids

    def encode(
        self, text: str, allowed_special: Literal["all"] | Collection[str] = frozenset()
    ) -> list[int]:
        """Token ids of ``text``. Occurrences of the special tokens in ``allowed_special``
        (or all of them, with ``"all"``) become their ids; anything else is ordinary text."""
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        if not allowed:
            return self.encode_ordinary(text)
        splitter = regex.compile(
            "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        )
        ids: list[int] = []
        for i, part in enumerate(splitter.split(text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for (special tokens as their UTF-8 text)."""
        out = []
        for i in ids:
            if 0 <= i < len(self.vocab):
                out.append(self.vocab[i])
            elif i in self._special_ids:
                out.append(self._special_ids[i].encode("utf-8"))
            else:
                raise ValueError(f"token id {i} is not in the vocabulary (size {self.n_vocab})")
        return b"".join(out)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of ``ids``. A list cut inside a multi-byte character decodes with U+FFFD
        there (``errors="replace"``); the full list of an ``encode`` gives the text back."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each id's bytes shown as text (bytes that are not whole characters as ``\\xNN``)."""
        return [self.decode_bytes([i]).decode("utf-8", errors="backslashreplace") for i in ids]

    # ----- tiktoken -------------------------------------------------------------------------

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Token bytes -> rank, the form ``tiktoken.Encoding`` takes."""
        return dict(self.ranks)

    def to_tiktoken(self, name: str = "llmcourse-bpe"):
        """A ``tiktoken.Encoding`` with these ranks, pattern and special tokens; it encodes
        exactly like ``encode``, in compiled code."""
        import tiktoken

        return tiktoken.Encoding(
            name,
            pat_str=self.pattern,
            mergeable_ranks=self.mergeable_ranks(),
            special_tokens=self.special_tokens,
        )

    # ----- saving ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        if self._pair_ranks is not None:
            raise ValueError(
                "this tokenizer was read from Hugging Face files (vocab.json, merges.txt): keep "
                "those files; the course format stores byte-ordered ids only"
            )
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "merges": [list(p) for p in self.merges],
            "special_tokens": self.special_tokens,
            "tokens": [base64.b64encode(t).decode("ascii") for t in self.vocab[256:]],
        }

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON: pattern, merges, special tokens, and (for reading
        only) the learned tokens' bytes in base64."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: object) -> BPETokenizer:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a saved tokenizer: expected a JSON object with format {FORMAT}")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported tokenizer version {data.get('version')!r}")
        merges, special = data.get("merges"), data.get("special_tokens", {})
        pattern = data.get("pattern")
        if not isinstance(pattern, str):
            raise ValueError("the saved tokenizer has no pattern string")
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
        ):
            raise ValueError("the saved tokenizer's merges must be a list of [int, int] pairs")
        if not isinstance(special, dict) or not all(type(v) is int for v in special.values()):
            raise ValueError("special_tokens must map strings to integer ids")
        tok = cls(merges, pattern=pattern, special_tokens=special)
        tokens = data.get("tokens")
        if tokens is not None and tokens != tok.to_dict()["tokens"]:
            raise ValueError("the saved token bytes do not match the merges: the file is corrupt")
        return tok

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a file written by ``save``, checking it; errors name the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a saved tokenizer (invalid JSON: {err})") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
