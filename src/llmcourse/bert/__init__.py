"""BERT: the encoder-only Transformer, its two pretraining tasks, and fine-tuning.

* ``model``: ``BertConfig`` (presets ``tiny`` ... ``bert-large``), ``param_count``, and the
  model read bottom-up: token + position + segment embeddings, post-norm encoder blocks with
  exact GELU, the ``[CLS]`` pooler, the MLM head (tied to the word embeddings) and the NSP
  head; ``Bert`` has Hugging Face's ``BertForPreTraining`` names and ``Bert.from_hf``;
  ``BertClassifier`` puts a classification layer on the pooled ``[CLS]`` state.
* ``masking``: ``mask_tokens``, 15 % of the tokens selected, then 80 % ``[MASK]``, 10 %
  random, 10 % unchanged.
* ``data``: sentences grouped by document, next-sentence pairs, ``[CLS] A [SEP] B [SEP]``
  inputs with segment ids and padding masks, and a small classification task.
* ``pretrain``: MLM + NSP pretraining of a small BERT on the offline corpora, run folders.
* ``finetune``: a pretrained BERT against the same network from scratch on a classification
  task.

Run ``python -m llmcourse.bert --help`` for the command line (``pretrain``, ``finetune``).
"""

from .data import (
    IS_NEXT,
    NOT_NEXT,
    TASKS,
    BertInputs,
    SentencePair,
    classification_task,
    documents,
    nsp_pairs,
)
from .finetune import FinetuneConfig, FinetuneRun, compare, finetune
from .masking import IGNORE_INDEX, mask_tokens
from .model import PRESETS, Bert, BertClassifier, BertConfig, param_count
from .pretrain import (
    PRETRAIN_PRESETS,
    PretrainConfig,
    PretrainRun,
    load_pretrained,
    pretrain,
    pretraining_figure,
    pretraining_losses,
)

__all__ = [
    "IGNORE_INDEX",
    "IS_NEXT",
    "NOT_NEXT",
    "PRESETS",
    "PRETRAIN_PRESETS",
    "TASKS",
    "Bert",
    "BertClassifier",
    "BertConfig",
    "BertInputs",
    "FinetuneConfig",
    "FinetuneRun",
    "PretrainConfig",
    "PretrainRun",
    "SentencePair",
    "classification_task",
    "compare",
    "documents",
    "finetune",
    "load_pretrained",
    "mask_tokens",
    "nsp_pairs",
    "param_count",
    "pretrain",
    "pretraining_figure",
    "pretraining_losses",
]
