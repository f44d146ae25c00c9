"""GPT-2, the decoder-only Transformer: a stack of masked self-attention blocks trained to
predict the next token.

* ``model``: ``GPTConfig`` (GPT-2's released sizes and CPU-sized ones), the building blocks
  (``CausalSelfAttention`` with one fused Q/K/V projection, ``MLP``, pre-norm ``Block``) and
  ``GPT`` with Hugging Face's parameter names, tied input/output embeddings, a KV cache for
  generation, ``GPT.from_hf`` for released weights and ``param_count`` from a config alone.

The training command line (``python -m llmcourse.gpt train ...``) lives in ``__main__``; the
loss and the training loop are in ``llmcourse.causal_lm``, generation in ``llmcourse.generate``.
"""

from .model import (
    GPT,
    MLP,
    PRESETS,
    Block,
    CausalSelfAttention,
    GPTConfig,
    config_from_hf,
    param_count,
    state_from_hf,
)

__all__ = [
    "GPT",
    "MLP",
    "PRESETS",
    "Block",
    "CausalSelfAttention",
    "GPTConfig",
    "config_from_hf",
    "param_count",
    "state_from_hf",
]
