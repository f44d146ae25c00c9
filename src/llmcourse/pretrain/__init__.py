"""Pretraining (chapter 8): from raw corpora to token files, and a trainer that streams them.

* ``data``: the pipeline: a corpus cut into documents, privacy scrubbing, quality filters,
  de-duplication, tokenization, the mixture, the train/val token files and their report;
* ``filters``: the quality rules (length, mean word length, symbol ratio, repeated lines,
  alphabetic fraction) and the e-mail/IP scrubber;
* ``dedup``: exact de-duplication by hash, near de-duplication by MinHash and LSH banding;
* ``mixture``: picking documents so each corpus supplies its weight's share of the tokens;
* ``tokenfile``: the memory-mapped binary token file, its JSON sidecar, random-window batches;
* ``trainer``: ``pretrain`` (the causal-LM trainer fed by token files, cosine or WSD, DDP under
  torchrun, exact resume), ``TRAIN_PRESETS``, ``TokenFileBatches``.

Command lines: ``python -m llmcourse.pretrain --help`` (train) and
``python -m llmcourse.pretrain data --help`` (token files).
"""

from llmcourse.pretrain.data import (
    PRESETS,
    DataConfig,
    DataReport,
    build_token_files,
    corpus_documents,
    split_paragraphs,
)
from llmcourse.pretrain.dedup import (
    MinHasher,
    NearDedupConfig,
    NearDuplicates,
    candidate_probability,
    choose_bands,
    estimated_jaccard,
    exact_duplicates,
    jaccard,
    lsh_candidates,
    near_duplicates,
    normalize,
    shingle_hashes,
)
from llmcourse.pretrain.filters import (
    FilterReport,
    QualityConfig,
    quality_filter,
    quality_rules,
    scrub_pii,
)
from llmcourse.pretrain.mixture import MixturePlan, plan_mixture
from llmcourse.pretrain.tokenfile import (
    TokenFile,
    TokenFileWriter,
    TokenizerInfo,
    describe_tokenizer,
    token_dtype,
    write_token_file,
)
from llmcourse.pretrain.trainer import TRAIN_PRESETS, TokenFileBatches, pretrain, token_files

__all__ = [
    "PRESETS",
    "TRAIN_PRESETS",
    "DataConfig",
    "DataReport",
    "FilterReport",
    "MinHasher",
    "MixturePlan",
    "NearDedupConfig",
    "NearDuplicates",
    "QualityConfig",
    "TokenFile",
    "TokenFileBatches",
    "TokenFileWriter",
    "TokenizerInfo",
    "build_token_files",
    "candidate_probability",
    "choose_bands",
    "corpus_documents",
    "describe_tokenizer",
    "estimated_jaccard",
    "exact_duplicates",
    "jaccard",
    "lsh_candidates",
    "near_duplicates",
    "normalize",
    "plan_mixture",
    "pretrain",
    "quality_filter",
    "quality_rules",
    "scrub_pii",
    "shingle_hashes",
    "split_paragraphs",
    "token_dtype",
    "token_files",
    "write_token_file",
]
