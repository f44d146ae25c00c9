"""WordPiece, the tokenizer of BERT: a merge score that rewards surprising pairs, and greedy
longest-match-first encoding.

Text is first split into words as BERT does it (``split_words``, BERT's "basic tokenizer"):
control characters dropped, whitespace split on, every punctuation mark and every CJK ideograph
a word of its own, optionally lowercased with the accents stripped. Each word starts as its
characters; every character but the first carries the prefix ``##``, which means "continues
the previous piece": ``hugs`` is ``h ##u ##g ##s``.

**Training** merges, like BPE, one pair of adjacent pieces at a time, but it does not take the
most *frequent* pair. It takes the pair with the highest score

    score(a, b) = freq(ab) / (freq(a) * freq(b)),

the number of times a is followed by b, divided by how common a and b are on their own (all
counts weighted by word frequency). A pair of rare pieces that almost always occur together
scores high; a pair of very common pieces (``##e``, ``##s``) scores low even when frequent.
This is the pointwise mutual information of the pair, up to a logarithm and a constant: the
merge that most increases the likelihood of the training data under a unigram model of pieces.
Merging ``a`` and ``##b`` gives ``ab``; ``##a`` and ``##b`` give ``##ab``. Only the resulting
*vocabulary* is kept, not the merges.

**Encoding** a word ignores the merge order: take the longest vocabulary entry that starts the
word, then the longest ``##`` entry that continues from there, and so on. When no entry fits,
the whole word becomes ``[UNK]``.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"

WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Unicode's White_Space characters (what Rust's ``char::is_whitespace`` and so Hugging Face's
tokenizers split on; Python's ``str.isspace`` differs, e.g. on U+001C..U+001F)."""

CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
"""The CJK Unified Ideographs blocks (and compatibility ideographs) that BERT writes as one word
per character. Hiragana, katakana and hangul are not in them: they stay in their words. The
ranges are those of Hugging Face's ``tokenizers`` (Google's original has 0x2B820 where the
sixth range starts at 0x2B920 here)."""


OTHER_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})
"""The "other" categories whose characters BERT's cleaning removes."""


def is_cjk(char: str) -> bool:
    """Whether ``char`` is a CJK ideograph that BERT splits off as a word of its own."""
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def is_punctuation(char: str) -> bool:
    """BERT's punctuation: every ASCII character that is not a letter, digit, space or control
    (so ``_``, ``$``, ``+``, ``^``, backtick...), and every Unicode punctuation mark (P*)."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def normalize(text: str, lowercase: bool = False, strip_accents: bool | None = None) -> str:
    """BERT's normalizer, in its order:

    1. clean: drop NUL, U+FFFD and every control, format, private-use or surrogate character
       (categories Cc, Cf, Co, Cs) except tab, newline and carriage return; turn whitespace into
       a plain space; unassigned code points (Cn) stay, as in Hugging Face's ``tokenizers``;
    2. put a space on each side of every CJK ideograph;
    3. strip accents (``strip_accents``, which defaults to ``lowercase``): decompose (NFD) and
       drop the nonspacing marks (category Mn), so ``é`` becomes ``e``;
    4. lowercase, character by character (so a final Greek sigma stays ``σ``).

    Character categories come from Python's ``unicodedata``. Characters added to Unicode
    recently (U+061D, say) may be classified differently by a library built on older tables.
    """
    out = []
    for char in text:
        if char in "\x00\ufffd" or (
            char not in "\t\n\r" and unicodedata.category(char) in OTHER_CATEGORIES
        ):
            continue
        if char in WHITESPACE:
            out.append(" ")
        elif is_cjk(char):
            out.append(f" {char} ")
        else:
            out.append(char)
    text = "".join(out)
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(
            c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
        )
    if lowercase:
        text = "".join(c.lower() for c in text)
    return text


def split_words(text: str, lowercase: bool = False, strip_accents: bool | None = None) -> list[str]:
    """The words and punctuation marks of ``text``, as BERT's basic tokenizer finds them:
    ``normalize``, split on whitespace, then cut every punctuation mark out as its own word.

    >>> split_words("on_click costs $5 (très cher)", lowercase=True)
    ['on', '_', 'click', 'costs', '$', '5', '(', 'tres', 'cher', ')']
    """
    words: list[str] = []
    current: list[str] = []
    for char in normalize(text, lowercase, strip_accents):
        if char in WHITESPACE or is_punctuation(char):
            if current:
                words.append("".join(current))
                current = []
            if char not in WHITESPACE:
                words.append(char)
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def word_to_pieces(word: str) -> list[str]:
    """A word's initial pieces: its first character, then ``##`` + each other character."""
    return [word[0]] + [PREFIX + c for c in word[1:]]


def merge_pieces(a: str, b: str) -> str:
    """The piece that merging ``a`` with its continuation ``b`` gives (``b`` loses its ``##``)."""
    return a + b.removeprefix(PREFIX)


def pair_scores(
    splits: dict[str, list[str]], word_freqs: dict[str, int]
) -> dict[tuple[str, str], float]:
    """score(a, b) = freq(ab) / (freq(a) * freq(b)) for every adjacent pair of pieces, in the
    order the pairs first occur."""
    piece_freq: Counter[str] = Counter()
    pair_freq: Counter[tuple[str, str]] = Counter()
    for word, pieces in splits.items():
        f = word_freqs[word]
        for p in pieces:
            piece_freq[p] += f
        for pair in pairwise(pieces):
            pair_freq[pair] += f
    return {(a, b): n / (piece_freq[a] * piece_freq[b]) for (a, b), n in pair_freq.items()}


def train_wordpiece(
    texts: Iterable[str] | str,
    vocab_size: int,
    *,
    lowercase: bool = False,
    strip_accents: bool | None = None,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
) -> WordPieceTokenizer:
    """Learn a WordPiece vocabulary of ``vocab_size`` entries (special tokens included) or
    until every word is a single piece. Ties in the score go to the pair that occurs first."""
    if isinstance(texts, str):
        texts = [texts]
    word_freqs: Counter[str] = Counter()
    for text in texts:
        word_freqs.update(split_words(text, lowercase, strip_accents))
    if not word_freqs:
        raise ValueError("the training text has no words: WordPiece needs text")
    splits = {w: word_to_pieces(w) for w in word_freqs}
    alphabet = sorted({p for pieces in splits.values() for p in pieces})
    vocab = list(dict.fromkeys([*special_tokens, *alphabet]))
    if vocab_size < len(vocab):
        raise ValueError(
            f"vocab_size {vocab_size} is smaller than the special tokens plus the alphabet "
            f"({len(vocab)})"
        )
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        scores = pair_scores(splits, word_freqs)
        if not scores:
            break
        best, best_score = None, -1.0
        for pair, score in scores.items():
            if score > best_score:
                best, best_score = pair, score
        a, b = best
        new = merge_pieces(a, b)
        merges.append((a, b))
        if new not in vocab:
            vocab.append(new)
        for word, pieces in splits.items():
            if len(pieces) < 2:
                continue
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and pieces[i] == a and pieces[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            splits[word] = out
    return WordPieceTokenizer(
        vocab, lowercase=lowercase, strip_accents=strip_accents, merges=merges
    )


class WordPieceTokenizer:
    """A WordPiece vocabulary and greedy longest-match-first encoding.

    ``lowercase`` and ``strip_accents`` are the options of BERT's normalizer (an "uncased"
    BERT lowercases and strips accents, a "cased" one does neither): loaded from a BERT
    ``vocab.txt`` with the right ``lowercase``, it gives the ids of Hugging Face's tokenizer.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        unk_token: str = "[UNK]",
        lowercase: bool = False,
        strip_accents: bool | None = None,
        max_word_chars: int = 100,
        merges: Sequence[tuple[str, str]] = (),
    ) -> None:
        if len(set(vocab)) != len(vocab):
            raise ValueError("the vocabulary has duplicate entries")
        if unk_token not in vocab:
            raise ValueError(f"the vocabulary must contain the unknown token {unk_token!r}")
        self.vocab = list(vocab)
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        self.unk_token = unk_token
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.max_word_chars = max_word_chars
        self.merges = list(merges)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({len(self.vocab)} entries)"

    def encode_word(self, word: str) -> list[str]:
        """Greedy longest match first: the longest entry at each position, ``##`` after the
        start; ``[UNK]`` for the whole word when some position matches nothing."""
        if len(word) > self.max_word_chars:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                candidate = word[start:end] if start == 0 else PREFIX + word[start:end]
                if candidate in self.ids:
                    pieces.append(candidate)
                    start = end
                    break
            else:
                return [self.unk_token]
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text``."""
        words = split_words(text, self.lowercase, self.strip_accents)
        return [p for w in words for p in self.encode_word(w)]

    def encode(self, text: str) -> list[int]:
        """The ids of the pieces of ``text``."""
        return [self.ids[p] for p in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Pieces joined back into words separated by spaces (``##`` pieces glued on)."""
        text = ""
        for i in ids:
            piece = self.vocab[i]
            text += piece[len(PREFIX) :] if piece.startswith(PREFIX) else " " + piece
        return text.strip()

    def save(self, path: str | Path) -> None:
        """One vocabulary entry per line, as BERT's ``vocab.txt``."""
        Path(path).write_text("\n".join(self.vocab) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> WordPieceTokenizer:
        """Read a ``vocab.txt`` (one entry per line); ``kwargs`` go to the constructor, e.g.
        ``lowercase=True`` for an uncased BERT."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        vocab = path.read_text(encoding="utf-8").splitlines()
        try:
            return cls(vocab, **kwargs)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
