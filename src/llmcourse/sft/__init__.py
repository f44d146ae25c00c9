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
from .lora import (
    GPT_TARGETS,
    LLAMA_TARGETS,
    LoRALinear,
    apply_lora,
    load_adapter,
    merge_lora,
    optimizer_state_bytes,
    save_adapter,
    trainable_parameters,
)
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
    pretraining_loss,
    pretraining_tokens,
    save_chat_model,
)

__all__ = [
    "GPT_TARGETS",
    "IGNORE",
    "LLAMA_TARGETS",
    "PRESETS",
    "RECIPES",
    "SPECIAL_TOKENS",
    "TASKS",
    "ChatTemplate",
    "ChatTokenizer",
    "Example",
    "LoRALinear",
    "SFTConfig",
    "add_special_tokens",
    "answers",
    "apply_lora",
    "build_splits",
    "exact_match_by_task",
    "finetune",
    "load_adapter",
    "load_base",
    "load_chat_model",
    "load_sft",
    "merge_lora",
    "optimizer_state_bytes",
    "pack",
    "pack_rows",
    "pad_batch",
    "pretraining_loss",
    "pretraining_tokens",
    "save_adapter",
    "save_chat_model",
    "sft_loss",
    "task_of",
    "throughput",
    "trainable_parameters",
]
