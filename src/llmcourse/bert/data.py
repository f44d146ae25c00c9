"""Text for BERT: sentences grouped by document, next-sentence pairs, and batches.

**Next-sentence prediction (NSP).** BERT's second pretraining task shows the model two
sentences A and B and asks whether B is the sentence that followed A in the text (label 0,
``IS_NEXT``) or a sentence drawn at random from another document (label 1, ``NOT_NEXT``), in
equal proportions. The input is one sequence

    [CLS] A [SEP] B [SEP]        segment ids  0 0 ... 0 0 1 ... 1 1

where the segment ids (``token_type_ids``) say which sentence a token belongs to; the answer
is read from the final state of ``[CLS]``.

The sentences come from the offline corpora (``llmcourse.data.load_corpus``): in
``pydoc-topics`` a *document* is one help topic (a title underlined with ``*``, ``=`` or
``-``), and its sentences are those of its prose paragraphs (indented code is skipped).

**A classification task** for fine-tuning (``classification_task``): ``prose-or-code`` asks
whether a line is English prose (from ``pydoc-topics``) or a line of Python code (from
``stdlib-code``, keeping only lines that compile, so no docstrings or comments).
"""

from __future__ import annotations

import functools
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmcourse.data import load_corpus
from llmcourse.tokenizers import WordPieceTokenizer

IS_NEXT, NOT_NEXT = 0, 1
"""NSP labels, as in Hugging Face's ``BertForPreTraining`` (0: B continues A)."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_HEADING_RULE = re.compile(r"^([*=\-])\1{2,}\s*$")


def documents(text: str, min_words: int = 4) -> list[list[str]]:
    """The prose sentences of ``text``, grouped by document (a titled section).

    A line made only of ``*``, ``=`` or ``-`` ends a title and starts a new document;
    paragraphs are separated by blank lines; indented paragraphs (code, grammar rules) are
    skipped; sentences end at ``.``, ``!`` or ``?`` before a capital; sentences shorter than
    ``min_words`` words are dropped. Documents with fewer than two sentences are dropped.
    """
    docs: list[list[str]] = [[]]
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph and not paragraph[0].startswith((" ", "\t")):
            joined = " ".join(line.strip() for line in paragraph)
            docs[-1].extend(s for s in _SENTENCE_END.split(joined) if len(s.split()) >= min_words)
        paragraph.clear()

    for line in text.splitlines():
        if _HEADING_RULE.match(line):
            if paragraph:
                paragraph.pop()  # the title itself
            flush()
            docs.append([])
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
    flush()
    return [d for d in docs if len(d) >= 2]


@dataclass(frozen=True)
class SentencePair:
    first: str
    second: str
    label: int  # IS_NEXT or NOT_NEXT


def nsp_pairs(docs: Sequence[Sequence[str]], n: int, seed: int = 0) -> list[SentencePair]:
    """``n`` sentence pairs: half (at random) a sentence and the one after it in its document,
    half a sentence and a random sentence of another document."""
    if len(docs) < 2:
        raise ValueError("next-sentence pairs need at least two documents")
    rng = random.Random(seed)
    weights = [len(d) - 1 for d in docs]  # documents chosen in proportion to their pairs
    pairs = []
    for _ in range(n):
        d = rng.choices(range(len(docs)), weights)[0]
        i = rng.randrange(len(docs[d]) - 1)
        if rng.random() < 0.5:
            pairs.append(SentencePair(docs[d][i], docs[d][i + 1], IS_NEXT))
        else:
            other = rng.randrange(len(docs) - 1)
            other += other >= d  # any document but d
            pairs.append(SentencePair(docs[d][i], rng.choice(docs[other]), NOT_NEXT))
    return pairs


class BertInputs:
    """Token ids of ``[CLS] A [SEP] (B [SEP])`` with segment ids, from a WordPiece tokenizer
    that has the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``."""

    def __init__(self, tokenizer: WordPieceTokenizer, max_len: int) -> None:
        missing = [t for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]") if t not in tokenizer.ids]
        if missing:
            raise ValueError(f"the tokenizer lacks the special tokens {missing}")
        if max_len < 5:
            raise ValueError(f"max_len must be at least 5, got {max_len}")
        self.tokenizer = tokenizer
        self.max_len = max_len
        ids = tokenizer.ids
        self.pad_id, self.cls_id, self.sep_id = ids["[PAD]"], ids["[CLS]"], ids["[SEP]"]
        self.mask_id = ids["[MASK]"]
        self.special_ids = sorted(ids[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
        self._pieces: dict[str, list[int]] = {}

    def pieces(self, text: str) -> list[int]:
        """The token ids of ``text`` (remembered: pairs reuse the same sentences)."""
        ids = self._pieces.get(text)
        if ids is None:
            ids = self._pieces[text] = self.tokenizer.encode(text)
        return ids

    def encode(self, first: str, second: str | None = None) -> tuple[list[int], list[int]]:
        """(ids, segment ids), truncated to ``max_len`` by cutting the end of the longer
        sentence first, as BERT does."""
        a = list(self.pieces(first))
        b = list(self.pieces(second)) if second is not None else []
        room = self.max_len - (3 if second is not None else 2)
        while len(a) + len(b) > room:
            (a if len(a) >= len(b) else b).pop()
        ids = [self.cls_id, *a, self.sep_id]
        segments = [0] * len(ids)
        if second is not None:
            ids += [*b, self.sep_id]
            segments += [1] * (len(b) + 1)
        return ids, segments

    def batch(
        self, encoded: Sequence[tuple[list[int], list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, token_type_ids, attention_mask), padded on the right with ``[PAD]``."""
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        segments = torch.zeros((len(encoded), width), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, seg) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            segments[row, : len(seg)] = torch.tensor(seg)
            mask[row, : len(ids)] = 1
        return input_ids, segments, mask


# --------------------------------------------------------------------------------------------
# A classification task
# --------------------------------------------------------------------------------------------

TASKS = ("prose-or-code",)
LABELS = {"prose-or-code": ("prose", "code")}


def is_python_line(line: str) -> bool:
    """Whether ``line`` compiles as a Python statement (a line ending in ``:`` is given a body)
    and is not a comment or a lone string (a docstring): a line of code, not of English."""
    if line.startswith(("#", '"', "'")):
        return False
    source = line + "\n    pass" if line.endswith(":") else line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences in string literals
        try:
            compile(source, "<line>", "exec")
        except (SyntaxError, ValueError):
            return False
    return True


@functools.cache
def _task_texts(name: str) -> tuple[list[str], list[str]]:
    """The texts of the two classes of a task, sorted (computed once per process)."""
    prose = sorted({s for d in documents(load_corpus("pydoc-topics").text) for s in d})
    lines = {line.strip() for line in load_corpus("stdlib-code").text[:1_000_000].split("\n")}
    code = sorted(c for c in lines if len(c) >= 20 and is_python_line(c))
    return prose, code


def classification_task(
    name: str, n: int, seed: int = 0, exclude: set[str] | None = None
) -> tuple[list[str], list[int]]:
    """``n`` labelled lines, classes balanced and shuffled.

    ``prose-or-code``: label 0 for a sentence of ``pydoc-topics`` prose, 1 for a line of
    ``stdlib-code`` of at least 20 characters that compiles on its own and is not a comment or
    a docstring, without its indentation. ``exclude`` removes texts, e.g. a training set's.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {TASKS}")
    exclude = exclude or set()
    classes = [[t for t in texts if t not in exclude] for texts in _task_texts(name)]
    rng = random.Random(seed)
    sizes = [n // 2, n - n // 2]
    if any(size > len(texts) for size, texts in zip(sizes, classes, strict=True)):
        raise ValueError(f"task {name!r} has {[len(c) for c in classes]} texts per class")
    examples = [(t, y) for y, (size, texts) in enumerate(zip(sizes, classes, strict=True))
                for t in rng.sample(texts, size)]  # fmt: skip
    rng.shuffle(examples)
    return [t for t, _ in examples], [y for _, y in examples]
