"""Token streams from the offline corpora, and the random windows a language model trains on.

A corpus is encoded once into one long sequence of token ids (the training part and the
validation part separately, ``Corpus.train_val_split``). A batch is ``B`` windows of
``seq_len + 1`` consecutive tokens starting at random offsets: the model reads the first
``seq_len`` of each window and is scored on predicting the last ``seq_len``. The offsets of
step ``s`` come from a generator seeded with ``(seed, s)`` alone, so the batch of a step is the
same whether the run went straight through or was stopped and resumed. Validation uses fixed,
evenly spaced windows over the whole held-out part.

Tokenizers: the course's byte-level BPE (``llmcourse.tokenizers.course_bpe``, 4097 ids,
encoded through tiktoken's compiled encoder), plain UTF-8 bytes (256 ids, nothing to train), or
bytes plus an end-of-text token (``"bytes-eot"``, 257 ids), which a token file needs between
documents and a fine-tuned model needs to say where its answer stops.

A *batch source* gives the windows: ``CorpusBatches`` holds an encoded corpus in memory;
``llmcourse.pretrain`` streams them from memory-mapped token files instead. Both key a step's
windows on ``(seed, step)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import torch

from llmcourse.data import load_corpus
from llmcourse.tokenizers import BPETokenizer, course_bpe

TOKENIZERS = ("bpe", "bytes", "bytes-eot")
"""The tokenizer names ``TrainConfig.tokenizer`` accepts."""


class Tokenizer(Protocol):
    """What training and ``load_trained`` need from a tokenizer."""

    @property
    def n_vocab(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


EOT_TEXT = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 ids, every text round-trips, no training needed.

    With ``eot=True`` a 257th id, 256, stands for ``<|endoftext|>``; ``encode`` never produces
    it from text (a document containing those characters is just bytes), ``decode`` writes it
    out. Digits and letters stay one token each, which suits arithmetic and letter games.
    """

    FORMAT = "llmcourse-bytes"

    def __init__(self, eot: bool = False) -> None:
        self.eot = eot

    @property
    def n_vocab(self) -> int:
        return 257 if self.eot else 256

    @property
    def special_tokens(self) -> dict[str, int]:
        return {EOT_TEXT: 256} if self.eot else {}

    @property
    def eot_token(self) -> int | None:
        """The end-of-text id (256), or ``None`` without one."""
        return 256 if self.eot else None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of ``ids`` (a cut multi-byte character becomes U+FFFD)."""
        parts, run = [], bytearray()
        for i in ids:
            if self.eot and int(i) == 256:
                parts.append(run.decode("utf-8", errors=errors) + EOT_TEXT)
                run = bytearray()
            else:
                run.append(int(i))
        return "".join(parts) + run.decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return f"ByteTokenizer({self.n_vocab} ids)"


@lru_cache(maxsize=1)
def _course_bpe() -> BPETokenizer:
    return course_bpe()[0]  # trained in about a second; kept for the life of the process


def get_tokenizer(name: str) -> Tokenizer:
    """``"bpe"``: the course BPE; ``"bytes"``: ``ByteTokenizer``; ``"bytes-eot"``: the same
    with an end-of-text id."""
    if name == "bpe":
        return _course_bpe()
    if name == "bytes":
        return ByteTokenizer()
    if name == "bytes-eot":
        return ByteTokenizer(eot=True)
    raise ValueError(f"unknown tokenizer {name!r}: choose from {', '.join(TOKENIZERS)}")


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write ``tokenizer`` as JSON (the BPE's own format, or a one-line byte marker)."""
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(path)
    elif isinstance(tokenizer, ByteTokenizer):
        data = {"format": ByteTokenizer.FORMAT, "version": 1, "eot": tokenizer.eot}
        Path(path).write_text(json.dumps(data) + "\n")
    else:
        raise TypeError(f"cannot save a {type(tokenizer).__name__}: expected BPE or bytes")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a file written by ``save_tokenizer``; ``ValueError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a saved tokenizer (invalid JSON: {err})") from None
    if isinstance(data, dict) and data.get("format") == ByteTokenizer.FORMAT:
        return ByteTokenizer(eot=bool(data.get("eot", False)))
    return BPETokenizer.load(path)


def encode(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """The token ids of ``text`` as a 1-D int64 tensor (a BPE goes through tiktoken)."""
    if isinstance(tokenizer, BPETokenizer):
        ids = tokenizer.to_tiktoken().encode_ordinary(text)
    else:
        ids = tokenizer.encode(text)
    return torch.tensor(ids, dtype=torch.long)


@lru_cache(maxsize=4)
def encode_corpus(
    corpus: str, tokenizer: str, val_fraction: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, validation ids) of a corpus (``llmcourse.data.load_corpus`` name or path),
    split with ``train_val_split(val_fraction, seed=0)``, the split the course BPE was trained
    on, so validation text is unseen by the tokenizer too. Cached for the process."""
    train_text, val_text = load_corpus(corpus).train_val_split(val_fraction, seed=0)
    tok = get_tokenizer(tokenizer)
    return encode(tok, train_text), encode(tok, val_text)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends on ``(seed, step)`` only (through SHA-256, so that
    neighbouring seeds and steps give unrelated streams)."""
    digest = hashlib.sha256(f"llmcourse-batches:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def random_windows(
    ids: torch.Tensor, count: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` windows of ``length`` consecutive ids from random offsets: (count, length)."""
    if ids.dim() != 1 or len(ids) < length:
        raise ValueError(
            f"need a 1-D token stream of at least {length} ids for windows of that length, "
            f"got shape {tuple(ids.shape)}: use a bigger corpus or a shorter seq_len"
        )
    starts = torch.randint(0, len(ids) - length + 1, (count,), generator=generator)
    return ids[starts[:, None] + torch.arange(length)]


def spaced_windows(ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``count`` windows of ``length`` ids at evenly spaced offsets from the first to the
    last possible one (they overlap when the stream is short): (count, length)."""
    if ids.dim() != 1 or len(ids) < length:
        raise ValueError(
            f"the validation stream has {len(ids)} ids, fewer than one window of {length}"
        )
    starts = torch.linspace(0, len(ids) - length, count).round().long()
    return ids[starts[:, None] + torch.arange(length)]


class BatchSource(Protocol):
    """Where a trainer's windows come from (``CorpusBatches``, ``pretrain.TokenFileBatches``)."""

    vocab_size: int

    def train_windows(self, step: int, count: int, length: int, seed: int) -> torch.Tensor:
        """Step ``step``'s ``count`` windows of ``length`` ids, a function of
        ``(seed, step)`` only: (count, length), int64."""
        ...

    def val_windows(self, count: int, length: int) -> torch.Tensor:
        """``count`` fixed held-out windows of ``length`` ids."""
        ...


class CorpusBatches:
    """Windows from a corpus encoded into memory (``encode_corpus``)."""

    def __init__(self, train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> None:
        self.train_ids, self.val_ids, self.vocab_size = train_ids, val_ids, vocab_size

    @classmethod
    def from_corpus(cls, corpus: str, tokenizer: str) -> CorpusBatches:
        train_ids, val_ids = encode_corpus(corpus, tokenizer)
        return cls(train_ids, val_ids, get_tokenizer(tokenizer).n_vocab)

    def train_windows(self, step: int, count: int, length: int, seed: int) -> torch.Tensor:
        return random_windows(self.train_ids, count, length, step_generator(seed, step))

    def val_windows(self, count: int, length: int) -> torch.Tensor:
        return spaced_windows(self.val_ids, count, length)
