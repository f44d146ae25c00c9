"""Small sequence-to-sequence tasks on digit strings, generated on the fly (nothing to download).

* ``reverse``: 40213 -> 31204. Output position t must find input position n - 1 - t: pure
  attention by position.
* ``sort``: 40213 -> 01234. Each output digit depends on the whole input (how many of each
  digit it holds): attention by content.

Tokens: 0 = <pad>, 1 = <s> (start of the decoder input), 2 = </s> (end), then the digits 0-9
as 3..12. A held-out set of inputs is drawn first and never used for training, so the exact
match measured on it is on inputs the model has not seen. It is drawn from inputs of at least
``heldout_min_len`` digits: there are only 10 one-digit strings, and holding them out would
mean never training on them at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<s>", "</s>")
DIGITS = "0123456789"
VOCAB_SIZE = len(SPECIALS) + len(DIGITS)

TASKS: dict[str, Callable[[str], str]] = {
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
}
"""Each task maps an input digit string to its output string."""


def encode(text: str) -> list[int]:
    """Digit string -> token ids (no special tokens)."""
    if any(ch not in DIGITS for ch in text):
        raise ValueError(f"only the digits 0-9 can be encoded, got {text!r}")
    return [len(SPECIALS) + int(ch) for ch in text]


def decode(ids: list[int] | torch.Tensor) -> str:
    """Token ids -> digit string, stopping at the first </s> and skipping <pad> and <s>."""
    out = []
    for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
        if i == EOS:
            break
        if i >= len(SPECIALS):
            out.append(DIGITS[i - len(SPECIALS)])
    return "".join(out)


@dataclass
class Batch:
    """Encoder input, decoder input (<s> + target) and decoder target (target + </s>)."""

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device))


def make_batch(inputs: list[str], task: str) -> Batch:
    """Pad a list of inputs into a ``Batch`` for ``task`` (teacher forcing: tgt_in is tgt_out
    shifted right by one, with <s> in front)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    if not inputs or any(not s for s in inputs):
        raise ValueError("need at least one input, and no empty string")
    targets = [encode(TASKS[task](s)) for s in inputs]
    src = encode_sources(inputs)
    width = max(map(len, targets)) + 1
    tgt_in, tgt_out = torch.full((len(inputs), width), PAD), torch.full((len(inputs), width), PAD)
    for row, t in enumerate(targets):
        tgt_in[row, : len(t) + 1] = torch.tensor([BOS, *t])
        tgt_out[row, : len(t) + 1] = torch.tensor([*t, EOS])
    return Batch(src, tgt_in, tgt_out)


def encode_sources(inputs: list[str]) -> torch.Tensor:
    """The (B, S) source ids of a list of digit strings, padded with <pad> to the longest."""
    if not inputs or any(not s for s in inputs):
        raise ValueError("need at least one input, and no empty string")
    ids = [encode(s) for s in inputs]
    src = torch.full((len(ids), max(map(len, ids))), PAD)
    for row, s in enumerate(ids):
        src[row, : len(s)] = torch.tensor(s)
    return src


def random_inputs(
    n: int, min_len: int, max_len: int, generator: torch.Generator, exclude: frozenset = frozenset()
) -> list[str]:
    """``n`` random digit strings, lengths uniform in [min_len, max_len], none in ``exclude``."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    out: list[str] = []
    while len(out) < n:
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        s = "".join(DIGITS[int(d)] for d in torch.randint(0, 10, (length,), generator=generator))
        if s not in exclude:
            out.append(s)
    return out


class DigitTask:
    """A task with a fixed held-out set and a stream of training batches that avoids it."""

    def __init__(
        self,
        task: str = "reverse",
        min_len: int = 1,
        max_len: int = 10,
        n_heldout: int = 500,
        seed: int = 0,
        heldout_min_len: int = 4,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
        self.task, self.min_len, self.max_len, self.seed = task, min_len, max_len, seed
        g = torch.Generator().manual_seed(seed)
        shortest = max(min_len, min(heldout_min_len, max_len))
        heldout = dict.fromkeys(random_inputs(n_heldout, shortest, max_len, g))
        possible = sum(10**n for n in range(shortest, max_len + 1))
        while len(heldout) < min(n_heldout, possible // 2):  # distinct inputs
            heldout.update(dict.fromkeys(random_inputs(1, shortest, max_len, g)))
        self.heldout = list(heldout)
        self._exclude = frozenset(self.heldout)

    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch of a given step (the same for the same step: resumable)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 1)
        inputs = random_inputs(batch_size, self.min_len, self.max_len, g, self._exclude)
        return make_batch(inputs, self.task)

    def answer(self, text: str) -> str:
        """The correct output for an input string."""
        return TASKS[self.task](text)
