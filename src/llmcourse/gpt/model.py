"""GPT-2: a decoder-only Transformer that predicts the next token. Read bottom-up, as nanoGPT's
model.py: the small pieces come first and each class uses only the ones above it.

    token ids -> wte(token) + wpe(position) -> dropout
              -> n_layer x Block:   x = x + attn(ln_1(x));   x = x + mlp(ln_2(x))
              -> ln_f -> lm_head (the transpose of wte) -> logits over the vocabulary

What makes it GPT-2 rather than the 2017 decoder: no encoder and no cross-attention, learned
position embeddings (``wpe``), LayerNorm *before* each sublayer (pre-norm) plus a final one
(``ln_f``), GELU in its tanh form, and an output layer that reuses the token embedding matrix
(weight tying: the same vector says "this is token i" at the input and scores token i at the
output, and it saves V x d parameters). The parameter names are Hugging Face's, so loading
the released weights is a short mapping (``GPT.from_hf``); the only twist is that GPT-2's
``Conv1D`` layers store their weights as (in, out), the transpose of ``nn.Linear``'s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.hf_loading import check_config, load_into, read_source
from llmcourse.kv_cache import KVCache, causal_attention, check_tokens


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused projection ``c_attn`` for Q, K and V.

    ``c_attn`` maps d -> 3d in one matrix multiplication; the result is split into Q, K, V and
    each into ``n_head`` heads by a reshape (no loop over heads), then PyTorch's fused
    ``scaled_dot_product_attention`` does softmax(Q K^T / sqrt(d_head)) V with the causal
    mask. With a ``KVCache`` the new keys/values are appended to the cached ones first.
    """

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head, self.n_embd, self.layer_idx = config.n_head, config.n_embd, layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        # (B, T, 3d) -> (3, B, h, T, d_head): q, k, v for all heads at once
        qkv = self.c_attn(x).view(batch, length, 3, self.n_head, self.n_embd // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        out = causal_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, length, self.n_embd)  # concatenate the heads
        return self.resid_dropout(self.c_proj(out))


class MLP(nn.Module):
    """Position-wise feed-forward network: c_proj(GELU(c_fc(x))), hidden size 4d.

    GPT-2's GELU is the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """A pre-norm decoder block: x + attn(ln_1(x)), then + mlp(ln_2(x)).

    Normalising the input of each sublayer, not its output, leaves the residual path x -> x
    untouched from the embeddings to ``ln_f``, which keeps deep stacks trainable.
    """

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        eps, bias = config.layer_norm_eps, config.bias
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=eps, bias=bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=eps, bias=bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


@dataclass
class GPTConfig:
    """Sizes of a GPT. ``bias=False`` drops the biases of every Linear and LayerNorm."""

    vocab_size: int
    n_positions: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        sizes = (self.vocab_size, self.n_positions, self.n_layer, self.n_head, self.n_embd)
        if min(sizes) < 1:
            raise ValueError(f"GPTConfig sizes must be positive, got {self}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd = {self.n_embd} must be divisible by n_head = {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named size (see ``PRESETS``), with any field overridden, e.g. ``vocab_size``."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT preset {name!r}; choose from {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# CPU sizes use the course BPE's vocabulary (4096 tokens + <|endoftext|>); GPT-2's released
# sizes use its 50257-token vocabulary and 1024 positions.
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(vocab_size=4097, n_positions=128, n_layer=4, n_head=4, n_embd=128),
    "small": GPTConfig(vocab_size=4097, n_positions=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2": GPTConfig(vocab_size=50257, n_positions=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(
        vocab_size=50257, n_positions=1024, n_layer=24, n_head=16, n_embd=1024
    ),
    "gpt2-large": GPTConfig(vocab_size=50257, n_positions=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(vocab_size=50257, n_positions=1024, n_layer=48, n_head=25, n_embd=1600),
}


class GPT(nn.Module):
    """GPT-2 language model: ``forward(input_ids, cache=None)`` -> float32 logits (B, T, V).

    With a ``KVCache`` (``new_cache``), ``input_ids`` are only the new tokens: they sit at
    positions ``cache.length ... cache.length + T - 1``, their keys and values are written to
    the cache, and the cache length moves on by T.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(c.vocab_size, c.n_embd),
                "wpe": nn.Embedding(c.n_positions, c.n_embd),
                "drop": nn.Dropout(c.dropout),
                "h": nn.ModuleList(Block(c, i) for i in range(c.n_layer)),
                "ln_f": nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps, bias=c.bias),
            }
        )
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: each residual projection scaled by 1/sqrt(2 n_layer) (two per block), so the
        # residual stream's variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def max_seq_len(self) -> int:
        return self.config.n_positions

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (the tied embedding counted once).

        ``non_embedding=True`` leaves out the position table ``wpe``: a lookup, no matrix
        multiplication. The token table stays in, because as ``lm_head`` it does one (this is
        the N of the 6N training FLOPs per token).
        """
        total = sum(p.numel() for p in self.parameters())
        return total - self.transformer.wpe.weight.numel() if non_embedding else total

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty ``KVCache`` for ``batch_size`` sequences of up to ``max_len`` tokens."""
        max_len = self.max_seq_len if max_len is None else max_len
        if max_len > self.max_seq_len:
            raise ValueError(f"max_len = {max_len} exceeds the context of {self.max_seq_len}")
        c, weight = self.config, self.transformer.wte.weight
        return KVCache(
            c.n_layer, batch_size, c.n_head, max_len, c.n_embd // c.n_head, weight.dtype,
            weight.device,
        )  # fmt: skip

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = check_tokens(input_ids, self.config.vocab_size, self.max_seq_len, cache)
        length = input_ids.shape[1]
        positions = torch.arange(start, start + length, device=input_ids.device)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(positions))
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.advance(length)
        return self.lm_head(self.transformer.ln_f(x)).float()

    @classmethod
    def from_hf(cls, source: Any, dtype: torch.dtype = torch.float32) -> GPT:
        """A GPT with the weights of a Hugging Face GPT-2 (``GPT2LMHeadModel`` or ``GPT2Model``
        instance, or a folder with config.json + model.safetensors), in eval mode."""
        hf_config, hf_state = read_source(source)
        config = config_from_hf(hf_config)
        state = state_from_hf(hf_state)
        copy = not isinstance(source, (str, Path))  # never share memory with a live HF model
        tied = {"lm_head.weight": "transformer.wte.weight"}
        return load_into(lambda: cls(config), state, tied=tied, dtype=dtype, copy=copy)


def param_count(config: GPTConfig, non_embedding: bool = False) -> int:
    """Parameters of a GPT with this config, from the formula (nothing is allocated).

    With d = n_embd, V = vocab_size, P = n_positions, L = n_layer, and biases:
    V d (wte, shared with lm_head) + P d (wpe) + L (12 d^2 + 13 d) + 2 d (ln_f), where a block
    holds c_attn (3d^2 + 3d), c_proj (d^2 + d), c_fc (4d^2 + 4d), its c_proj (4d^2 + d) and two
    LayerNorms (2d each). ``non_embedding`` leaves out P d, as ``GPT.num_params`` does.
    """
    d, b = config.n_embd, int(config.bias)
    block = 12 * d * d + b * (3 * d + d + 4 * d + d) + 2 * (d + b * d)
    total = config.vocab_size * d + config.n_positions * d + config.n_layer * block + d + b * d
    return total - config.n_positions * d if non_embedding else total


def config_from_hf(hf: dict[str, Any]) -> GPTConfig:
    """Our ``GPTConfig`` for a Hugging Face ``GPT2Config`` (as a dict); refuses what we lack."""
    dropouts = {hf.get(key, 0.0) for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    check_config(
        hf,
        "gpt2",
        ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd"),
        {
            "activation_function must be the tanh GELU": hf.get("activation_function", "gelu_new")
            not in ("gelu_new", "gelu_pytorch_tanh"),
            "n_inner must be 4 * n_embd": hf.get("n_inner") not in (None, 4 * hf.get("n_embd", 0)),
            "add_cross_attention": bool(hf.get("add_cross_attention", False)),
            "scale_attn_weights=False": not hf.get("scale_attn_weights", True),
            "scale_attn_by_inverse_layer_idx": bool(hf.get("scale_attn_by_inverse_layer_idx")),
            "untied word embeddings": not hf.get("tie_word_embeddings", True),
            "different resid/embd/attn dropout rates": len(dropouts) > 1,
        },
    )
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        n_positions=hf["n_positions"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=dropouts.pop(),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )


def state_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 tensors under our names: Conv1D weights transposed, buffers dropped.

    Files saved from ``GPT2Model`` (the hub's ``gpt2``) lack the ``transformer.`` prefix; old
    ones also hold the attention mask buffers ``attn.bias`` / ``attn.masked_bias`` (not weights).
    """
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {}
    for name, tensor in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        state[name] = tensor.t() if name.endswith(conv1d) else tensor
    return state
