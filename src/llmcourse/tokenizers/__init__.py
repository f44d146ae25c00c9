"""Tokenizers: turning text into the integer ids a language model reads, and back.

* ``bpe``: byte-level byte-pair encoding (GPT-2/GPT-4 style) trained from scratch, with
  incremental pair counts, save/load, export to ``tiktoken``, and GPT-2's own file format
  (``vocab.json`` + ``merges.txt``, the byte-to-unicode trick) read with GPT-2's ids;
* ``wordpiece``: BERT's WordPiece, its merge score and greedy longest-match-first encoding,
  after BERT's own word splitting (punctuation, CJK ideographs, lowercasing and accents);
* ``pretrained``: OpenAI's published tiktoken encodings, loaded only from the local cache
  unless downloading is allowed.

Command line: ``python -m llmcourse.tokenizers --help``.
"""

from llmcourse.tokenizers.bpe import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    BPETokenizer,
    TrainingLog,
    apply_merges,
    bytes_to_unicode,
    count_pairs,
    course_bpe,
    merge,
    pretokenize,
    train_bpe,
    train_bpe_naive,
)
from llmcourse.tokenizers.pretrained import EncodingUnavailable, cached_encoding, is_cached
from llmcourse.tokenizers.wordpiece import (
    WordPieceTokenizer,
    pair_scores,
    split_words,
    train_wordpiece,
)

__all__ = [
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "BPETokenizer",
    "EncodingUnavailable",
    "TrainingLog",
    "WordPieceTokenizer",
    "apply_merges",
    "bytes_to_unicode",
    "cached_encoding",
    "count_pairs",
    "course_bpe",
    "is_cached",
    "merge",
    "pair_scores",
    "pretokenize",
    "split_words",
    "train_bpe",
    "train_bpe_naive",
    "train_wordpiece",
]
