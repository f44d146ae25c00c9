"""LLaMA, the decoder of most open models since 2023: GPT-2's stack with RMSNorm, SwiGLU,
rotary position embeddings and grouped-query attention.

* ``model``: the building blocks (``RMSNorm``, ``rope_cos_sin`` / ``rotate_half`` /
  ``apply_rope`` in Hugging Face's rotate-half layout, ``apply_rope_interleaved`` and
  ``permute_meta_to_hf`` for Meta's layout, ``SwiGLU``, ``Attention`` with ``n_kv_heads``,
  ``DecoderLayer``), ``LlamaConfig`` (LLaMA-2 7B/13B/70B and CPU sizes) and ``Llama`` with
  Hugging Face's parameter names, a KV cache, ``Llama.from_hf`` and ``param_count``.

The training command line (``python -m llmcourse.llama train ...``) lives in ``__main__``; the
loss and the training loop are in ``llmcourse.causal_lm``, generation in ``llmcourse.generate``.
"""

from .model import (
    PRESETS,
    Attention,
    DecoderLayer,
    Llama,
    LlamaConfig,
    RMSNorm,
    SwiGLU,
    apply_rope,
    apply_rope_interleaved,
    config_from_hf,
    param_count,
    permute_meta_to_hf,
    rope_cos_sin,
    rotate_half,
    state_from_hf,
)

__all__ = [
    "PRESETS",
    "Attention",
    "DecoderLayer",
    "Llama",
    "LlamaConfig",
    "RMSNorm",
    "SwiGLU",
    "apply_rope",
    "apply_rope_interleaved",
    "config_from_hf",
    "param_count",
    "permute_meta_to_hf",
    "rope_cos_sin",
    "rotate_half",
    "state_from_hf",
]
