"""Causal language modelling: training a GPT or a LLaMA to predict the next token.

* ``loss``: ``causal_lm_loss``, the cross-entropy of each position against the next token;
* ``data``: the course BPE or bytes, corpora as token streams, random windows keyed on the step,
  batch sources (``CorpusBatches``; ``llmcourse.pretrain`` adds token files);
* ``optim``: AdamW with weight-decay groups; warm-up then cosine or warmup-stable-decay (WSD);
* ``flops``: FLOPs per token (6N + 12 L d T), device peaks and the MFU;
* ``trainer``: ``TrainConfig``, ``PRESETS`` and ``train_causal_lm`` on the shared loop;
* ``saving``: safetensors weights, config and tokenizer; ``load_trained``;
* ``cli``: the ``python -m llmcourse.gpt train`` / ``python -m llmcourse.llama train`` commands.
"""

from .data import (
    ByteTokenizer,
    CorpusBatches,
    encode_corpus,
    get_tokenizer,
    random_windows,
    step_generator,
)
from .flops import PEAK_BF16_FLOPS, flops_per_token, matmul_params, mfu, peak_flops
from .loss import causal_lm_loss
from .optim import (
    SCHEDULES,
    cosine_lr,
    cosine_scheduler,
    lr_scheduler,
    make_adamw,
    schedule_lr,
    weight_decay_groups,
    wsd_lr,
)
from .saving import load_trained, save_trained
from .trainer import PRESETS, TrainConfig, build_model, preset, train_causal_lm

__all__ = [
    "PEAK_BF16_FLOPS",
    "PRESETS",
    "SCHEDULES",
    "ByteTokenizer",
    "CorpusBatches",
    "TrainConfig",
    "build_model",
    "causal_lm_loss",
    "cosine_lr",
    "cosine_scheduler",
    "encode_corpus",
    "flops_per_token",
    "get_tokenizer",
    "load_trained",
    "lr_scheduler",
    "make_adamw",
    "matmul_params",
    "mfu",
    "peak_flops",
    "preset",
    "random_windows",
    "save_trained",
    "schedule_lr",
    "step_generator",
    "train_causal_lm",
    "weight_decay_groups",
    "wsd_lr",
]
