"""Supervised fine-tuning (SFT): turning a pretrained model into one that follows instructions.

* ``template``: ``ChatTemplate`` (``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``),
  ``ChatTokenizer``, ``add_special_tokens`` (new embedding rows at the mean embedding) and
  ``sft_loss``, the cross-entropy on the assistant's tokens only;
* ``data``: instruction data from the ``instructions`` and ``arithmetic`` corpora plus
  synthetic dialogues, labelled by task type, with a held-out split never seen in training;
* ``packing``: padding vs packing examples into rows, and their measured throughput;
* ``train``: ``SFTConfig``, ``finetune`` (full fine-tuning with the auxiliary loss
  ``L = L_FT + lambda L_PT``), ``pretraining_loss`` and ``load_sft``, the course's fine-tuned
  checkpoints;
* ``evaluate``: ``exact_match_by_task``, greedy answers compared with the references;
* ``lora``: low-rank adapters (``LoRALinear``, ``apply_lora``, ``merge_lora``).

Run ``python -m llmcourse.sft --help`` to fine-tune from the command line, and
``python -m llmcourse.chat`` to talk to the result.
"""

from .data import TASKS, Example, build_splits, task_of
from .evaluate import answers, exact_match_by_task
from .packing import pack, pack_rows, pad_batch, throughput
from .template import (
    IGNORE,
    SPECIAL_TOKENS,
    ChatTemplate,
    ChatTokenizer,
    add_special_tokens,
    sft_loss,
)
from .train import (
    PRESETS,
    RECIPES,
    SFTConfig,
    finetune,
    load_base,
    load_chat_model,
    load_sft,
    pretraining_ids,
    pretraining_loss,
    save_chat_model,
)

__all__ = [
    "IGNORE",
    "PRESETS",
    "RECIPES",
    "SPECIAL_TOKENS",
    "TASKS",
    "ChatTemplate",
    "ChatTokenizer",
    "Example",
    "SFTConfig",
    "add_special_tokens",
    "answers",
    "build_splits",
    "exact_match_by_task",
    "finetune",
    "load_base",
    "load_chat_model",
    "load_sft",
    "pack",
    "pack_rows",
    "pad_batch",
    "pretraining_ids",
    "pretraining_loss",
    "save_chat_model",
    "sft_loss",
    "task_of",
    "throughput",
]
