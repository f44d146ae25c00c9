"""Tokenizers: turning text into the integer ids a language model reads, and back.

* ``bpe``: byte-level byte-pair encoding (GPT-2/GPT-4 style) trained from scratch, with
  incremental pair counts, save/load, and export to ``tiktoken``;
* ``wordpiece``: BERT's WordPiece, its merge score and greedy longest-match-first encoding;
* ``pretrained``: OpenAI's published tiktoken encodings, loaded only from the local cache
  unless downloading is allowed.

Command line: ``python -m llmcourse.tokenizers --help``.
"""

from llmcourse.tokenizers.bpe import (
    GPT4_PATTERN,
    BPETokenizer,
    TrainingLog,
    apply_merges,
    count_pairs,
    course_bpe,
    merge,
    pretokenize,
    train_bpe,
    train_bpe_naive,
)
from llmcourse.tokenizers.pretrained import EncodingUnavailable, cached_encoding, is_cached
from llmcourse.tokenizers.wordpiece import WordPieceTokenizer, pair_scores, train_wordpiece

__all__ = [
    "GPT4_PATTERN",
    "BPETokenizer",
    "EncodingUnavailable",
    "TrainingLog",
    "WordPieceTokenizer",
    "apply_merges",
    "cached_encoding",
    "count_pairs",
    "course_bpe",
    "is_cached",
    "merge",
    "pair_scores",
    "pretokenize",
    "train_bpe",
    "train_bpe_naive",
    "train_wordpiece",
]
