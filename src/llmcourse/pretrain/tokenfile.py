"""The token file: a corpus tokenized once into a flat binary array that training streams from.

A pretraining corpus is far larger than memory, so it is tokenized once, ahead of training,
into one long array of token ids written straight to disk, with an end-of-text token between
documents (so the model learns where a document stops and does not read one document as the
continuation of another). Training then *memory-maps* the file (``numpy.memmap``): the
operating system reads only the pages a batch touches, so a 100 GB file costs no more memory
than a 1 MB one.

* The ids take 2 bytes each (``uint16``) when every id fits, i.e. a vocabulary of at most
  65 536 ids (GPT-2's 50 257 does); otherwise 4 bytes (``uint32``, e.g. Llama-3's 128 256).
* A JSON *sidecar* beside the file (``train.bin`` -> ``train.bin.json``) records the dtype,
  vocabulary size, end-of-text id, the tokenizer's name and fingerprint, the number of tokens
  and documents, and each source's share. ``TokenFile.open`` checks the file against it, so a
  truncated file or a file read with the wrong tokenizer fails loudly instead of training on
  garbage.
* A batch is ``B`` windows of ``seq_len + 1`` consecutive tokens at random offsets; the inputs
  ``x`` are their first ``seq_len`` tokens and the targets ``y`` the last ``seq_len`` (each
  position predicts the next token). The offsets of step ``s`` come from a generator seeded
  with ``(seed, s)`` only, so a run resumed at step ``s`` sees exactly the batches an
  uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

FORMAT = "llmcourse-tokens"
FORMAT_VERSION = 1
EOT_TEXT = "<|endoftext|>"
"""The end-of-text special token of GPT-2, tiktoken and the course BPE."""

_PROBE = "Tokenizer fingerprint: The quick brown fox, 3.14159, naïve café, 中文, def f(x): ..."


class Tokenizer(Protocol):
    """What the token file needs from a tokenizer (a vocabulary size is found separately)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id ``0 .. vocab_size - 1`` fits in 16 bits, else ``uint32``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size {vocab_size} does not fit 32-bit token ids")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a token file: ``train.bin`` -> ``train.bin.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


# --------------------------------------------------------------------------------------------
# Tokenizers: what the file records about them
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerInfo:
    """A tokenizer as a token file records it: a name, a fingerprint that changes when its
    ids would change, its vocabulary size and its end-of-text id."""

    name: str
    fingerprint: str
    vocab_size: int
    eot_id: int


def vocab_size_of(tokenizer: Any) -> int:
    """The number of ids: ``n_vocab`` (course BPE, tiktoken), ``vocab_size`` (Hugging Face)
    or ``len(tokenizer)``."""
    for attribute in ("n_vocab", "vocab_size"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    try:
        return len(tokenizer)
    except TypeError:
        raise TypeError(
            f"cannot tell the vocabulary size of a {type(tokenizer).__name__}: give it an "
            "n_vocab or vocab_size attribute"
        ) from None


def eot_id_of(tokenizer: Any) -> int:
    """The end-of-text id: ``special_tokens["<|endoftext|>"]`` (course BPE), ``eot_token``
    (tiktoken) or ``eos_token_id`` (Hugging Face)."""
    special = getattr(tokenizer, "special_tokens", None)
    if isinstance(special, dict) and EOT_TEXT in special:
        return int(special[EOT_TEXT])
    for attribute in ("eot_token", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"the {type(tokenizer).__name__} has no end-of-text token, which separates documents in "
        f"a token file: train it with the special token {EOT_TEXT!r} or pass eot_id"
    )


def describe_tokenizer(
    tokenizer: Any, *, name: str | None = None, eot_id: int | None = None
) -> TokenizerInfo:
    """The ``TokenizerInfo`` of any object with ``encode``/``decode`` and a vocabulary size.

    The fingerprint is the SHA-256 of the tokenizer's saved form where it has one
    (``to_dict``), else of its vocabulary size and the ids it gives a fixed probe sentence.
    """
    vocab = vocab_size_of(tokenizer)
    eot = eot_id_of(tokenizer) if eot_id is None else int(eot_id)
    if not 0 <= eot < vocab:
        raise ValueError(f"end-of-text id {eot} is outside the vocabulary (size {vocab})")
    if hasattr(tokenizer, "to_dict"):
        payload = json.dumps(tokenizer.to_dict(), sort_keys=True)
    else:
        payload = json.dumps([vocab, eot, list(tokenizer.encode(_PROBE))])
    fingerprint = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    return TokenizerInfo(name or type(tokenizer).__name__, fingerprint, vocab, eot)


def encoder(tokenizer: Any):
    """A function text -> ids. The course BPE goes through tiktoken's compiled encoder
    (``to_tiktoken``, the same ids, many times faster); anything else through ``encode``."""
    if hasattr(tokenizer, "to_tiktoken"):
        return tokenizer.to_tiktoken().encode_ordinary
    return tokenizer.encode


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class TokenFileWriter:
    """Writes documents' ids to ``path`` one after the other, the end-of-text id between two
    documents, and the sidecar on ``close``. The data goes to ``path + ".tmp"`` first and is
    renamed only when complete, so a crash never leaves a half-written file under the name.

    Use as a context manager::

        with TokenFileWriter("train.bin", describe_tokenizer(tok)) as out:
            for text in documents:
                out.add(tok.encode(text), source="pydoc-topics")
    """

    def __init__(self, path: str | Path, tokenizer: TokenizerInfo) -> None:
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.dtype = token_dtype(tokenizer.vocab_size)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed in close())
        self.num_tokens = 0
        self.num_documents = 0
        self.sources: dict[str, dict[str, int]] = {}

    def add(self, ids: Sequence[int] | np.ndarray, source: str = "") -> None:
        """Append one document's ids (after an end-of-text id, unless it is the first)."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim != 1:
            raise ValueError(f"a document is a 1-D sequence of ids, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.tokenizer.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.tokenizer.vocab_size}), got ids from "
                f"{arr.min()} to {arr.max()}: was the document encoded with this tokenizer?"
            )
        if self.num_documents:
            self._file.write(np.array([self.tokenizer.eot_id], dtype=self.dtype).tobytes())
            self.num_tokens += 1
        self._file.write(arr.astype(self.dtype).tobytes())
        self.num_tokens += arr.size
        self.num_documents += 1
        counts = self.sources.setdefault(source, {"documents": 0, "tokens": 0})
        counts["documents"] += 1
        counts["tokens"] += int(arr.size)

    def close(self, extra: dict | None = None) -> Path:
        """Finish the file, write its sidecar (with ``extra`` under ``"extra"``); the path."""
        self._file.close()
        if self.num_tokens == 0:
            self._tmp.unlink()
            raise ValueError(f"no tokens were written to {self.path}: nothing to train on")
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "vocab_size": self.tokenizer.vocab_size,
            "eot_id": self.tokenizer.eot_id,
            "separator": "eot_id between consecutive documents",
            "tokenizer": {"name": self.tokenizer.name, "fingerprint": self.tokenizer.fingerprint},
            "num_tokens": self.num_tokens,
            "num_documents": self.num_documents,
            "sources": self.sources,
            "extra": extra or {},
        }
        os.replace(self._tmp, self.path)
        side = sidecar_path(self.path)
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, side)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TokenFileWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()
        elif not self._file.closed:
            self.close()


def write_token_file(
    path: str | Path,
    documents: Iterable[str],
    tokenizer: Any,
    *,
    source: str = "",
    name: str | None = None,
) -> TokenFile:
    """Tokenize ``documents`` into a token file at ``path`` and open it."""
    info = describe_tokenizer(tokenizer, name=name)
    encode = encoder(tokenizer)
    with TokenFileWriter(path, info) as out:
        for text in documents:
            out.add(encode(text), source)
    return TokenFile.open(path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends on ``(seed, step)`` only, through SHA-256, so neighbouring
    steps and seeds draw unrelated numbers."""
    digest = hashlib.sha256(f"llmcourse-tokenfile:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class TokenFile:
    """A token file opened for reading: ``tokens`` is a read-only ``numpy.memmap``."""

    def __init__(self, path: Path, tokens: np.ndarray, meta: dict) -> None:
        self.path = path
        self.tokens = tokens
        self.meta = meta

    @classmethod
    def open(cls, path: str | Path, tokenizer: Any = None) -> TokenFile:
        """Memory-map ``path`` after checking it against its sidecar (and, when ``tokenizer``
        is given, that the file was written with that tokenizer)."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no token file at {path}")
        if not side.is_file():
            raise FileNotFoundError(
                f"{path} has no sidecar {side.name}: token files are written by "
                "TokenFileWriter (python -m llmcourse.pretrain data), which records the dtype "
                "and tokenizer there"
            )
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the sidecar {side} is not valid JSON ({err})") from None
        cls._check(path, meta)
        if tokenizer is not None:
            fingerprint = describe_tokenizer(tokenizer).fingerprint
            if fingerprint != meta["tokenizer"]["fingerprint"]:
                raise ValueError(
                    f"{path} was written with the tokenizer {meta['tokenizer']['name']!r} "
                    f"(fingerprint {meta['tokenizer']['fingerprint'][:12]}...), not with the "
                    f"given one (fingerprint {fingerprint[:12]}...): its ids would mean other text"
                )
        tokens = np.memmap(path, dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
        return cls(path, tokens, meta)

    @staticmethod
    def _check(path: Path, meta: Any) -> None:
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{sidecar_path(path)} is not a token-file sidecar (format {FORMAT})")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported token-file version {meta.get('version')!r}")
        needed = ("dtype", "vocab_size", "eot_id", "num_tokens", "num_documents", "tokenizer")
        missing = [key for key in needed if key not in meta]
        if missing:
            raise ValueError(f"the sidecar of {path} lacks {', '.join(missing)}")
        expected = token_dtype(meta["vocab_size"]).name
        if meta["dtype"] != expected:
            raise ValueError(
                f"the sidecar of {path} says dtype {meta['dtype']}, but a vocabulary of "
                f"{meta['vocab_size']} is stored as {expected}"
            )
        size = path.stat().st_size
        want = meta["num_tokens"] * np.dtype(expected).itemsize
        if size != want:
            state = "truncated" if size < want else "longer than recorded"
            raise ValueError(
                f"{path} is {state}: {size} bytes, but {meta['num_tokens']} {expected} tokens "
                f"take {want}. Rebuild it (python -m llmcourse.pretrain data)"
            )

    def __len__(self) -> int:
        return int(self.meta["num_tokens"])

    def __repr__(self) -> str:
        return (
            f"TokenFile({str(self.path)!r}, {len(self):,} tokens, {self.meta['num_documents']:,} "
            f"documents, {self.meta['dtype']}, vocab {self.vocab_size})"
        )

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])

    @property
    def sources(self) -> dict[str, dict[str, int]]:
        """Per source: documents and tokens (separators not counted)."""
        return self.meta.get("sources", {})

    def window_starts(
        self, step: int, batch_size: int, seq_len: int, *, seed: int = 0
    ) -> torch.Tensor:
        """The offsets of step ``step``'s ``batch_size`` windows of ``seq_len + 1`` tokens:
        uniform over ``0 .. len - seq_len - 1``, drawn from ``step_generator(seed, step)``."""
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, "
                             f"{seq_len}")  # fmt: skip
        if len(self) < seq_len + 1:
            raise ValueError(
                f"{self.path} holds {len(self)} tokens, fewer than one window of seq_len + 1 = "
                f"{seq_len + 1}: use a shorter seq_len or more data"
            )
        return torch.randint(
            0, len(self) - seq_len, (batch_size,), generator=step_generator(seed, step)
        )

    def batch(
        self,
        step: int,
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of training step ``step``: ``x`` and ``y``, int64 of shape
        ``(batch_size, seq_len)``, ``y`` being ``x`` shifted by one token. Windows start at
        ``window_starts(step, ...)``; only their pages are read from disk. On CUDA the batch
        is copied from pinned memory without blocking."""
        starts = self.window_starts(step, batch_size, seq_len, seed=seed)
        windows = np.stack([self.tokens[s : s + seq_len + 1] for s in starts.tolist()])
        data = torch.from_numpy(windows.astype(np.int64))
        x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
        if device is not None and torch.device(device).type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
            y = y.pin_memory().to(device, non_blocking=True)
        elif device is not None:
            x, y = x.to(device), y.to(device)
        return x, y
