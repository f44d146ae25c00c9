"""LLaMA: GPT's decoder with four changes. Read bottom-up, as nanoGPT's model.py: the small
pieces come first and each class uses only the ones above it.

    token ids -> embed_tokens (no position table)
              -> n_layer x DecoderLayer:
                     x = x + self_attn(input_layernorm(x))     (RoPE on q and k, GQA)
                     x = x + mlp(post_attention_layernorm(x))  (SwiGLU)
              -> norm -> lm_head -> logits

1. **RMSNorm** instead of LayerNorm: divide by the root mean square, no mean subtraction and
   no bias: y = x / sqrt(mean(x^2) + eps) * g.
2. **SwiGLU** feed-forward: down(SiLU(gate(x)) * up(x)), a gated unit with three matrices.
3. **Rotary position embedding** (RoPE) instead of a learned position table: queries and keys
   are rotated by angles proportional to their position, so q_m . k_n depends on m - n only.
4. **Grouped-query attention** (LLaMA-2 70B): ``n_kv_heads`` < ``n_head`` key/value heads,
   each shared by a group of query heads, which shrinks the KV cache by n_head / n_kv_heads.

Pre-norm as GPT-2, no biases anywhere. The parameter names are Hugging Face's
(``LlamaForCausalLM``) and RoPE uses its "rotate-half" layout; Meta's original checkpoints pair
the dimensions differently, and ``permute_meta_to_hf`` converts their q/k weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.hf_loading import check_config, load_into, read_source
from llmcourse.kv_cache import KVCache, causal_attention, check_tokens


class RMSNorm(nn.Module):
    """Root-mean-square normalisation: y = x / sqrt(mean(x^2) + eps) * g, over the last axis.

    LayerNorm subtracts the mean and divides by the standard deviation, then adds a bias;
    RMSNorm keeps only the rescaling (the re-centring turned out not to matter) and is cheaper.
    The statistics are computed in float32 even for bfloat16 inputs.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rope_cos_sin(
    head_dim: int, positions: torch.Tensor | Sequence[int], theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (len(positions), head_dim), float32.

    Dimension pair i (i = 0 ... head_dim/2 - 1) turns at frequency theta^(-2i / head_dim); at
    position m its angle is m * theta^(-2i / head_dim). In the rotate-half layout, pair i is
    made of dimensions i and i + head_dim/2, so the table repeats the head_dim/2 angles twice.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of dimensions: head_dim must be even, got {head_dim}")
    positions = torch.as_tensor(positions)
    exponent = torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    inv_freq = 1.0 / theta**exponent
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis: a 90-degree turn of each pair
    (x[i], x[i + d/2])."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + d/2]) of x (B, h, T, d) by its angle at each position.

    x cos + rotate_half(x) sin is, for one pair (a, b) and angle t:
    (a cos t - b sin t, b cos t + a sin t), the rotation of (a, b) by t. ``cos`` and ``sin``
    are (T, d), from ``rope_cos_sin``.
    """
    if x.dim() != 4 or cos.shape != (x.shape[2], x.shape[3]) or sin.shape != cos.shape:
        raise ValueError(
            f"apply_rope needs x (B, h, T, head_dim) and cos, sin (T, head_dim), got "
            f"{tuple(x.shape)}, {tuple(cos.shape)}, {tuple(sin.shape)}"
        )
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in Meta's original layout: pair i is dimensions (2i, 2i + 1), adjacent.

    Same angles as ``apply_rope`` (``cos``, ``sin`` from ``rope_cos_sin``); only which two
    dimensions form a pair differs. Used to show what ``permute_meta_to_hf`` undoes.
    """
    half = x.shape[-1] // 2
    cos, sin = cos[..., :half].to(x.dtype), sin[..., :half].to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def permute_meta_to_hf(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a q or k projection (n_heads * head_dim, dim) from Meta's layout
    (pairs at rows 2i, 2i + 1 of each head) to the rotate-half layout (rows i, i + head_dim/2).

    Within each head, row 2i goes to row i and row 2i + 1 to row i + head_dim/2. Then
    rotate-half RoPE on x W_hf^T gives the interleaved RoPE of x W_meta^T with its dimensions
    reordered the same way, so q . k, hence attention, is unchanged. (For k_proj pass the
    number of key/value heads.)
    """
    rows, dim = weight.shape
    if rows % n_heads or (rows // n_heads) % 2:
        raise ValueError(f"{rows} rows do not split into {n_heads} heads of even size")
    head_dim = rows // n_heads
    return weight.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


class SwiGLU(nn.Module):
    """Gated feed-forward network: down_proj(SiLU(gate_proj(x)) * up_proj(x)).

    SiLU(z) = z sigmoid(z). The gate decides, per hidden unit, how much of up_proj(x) passes.
    With three matrices instead of two, LLaMA takes ``hidden_dim`` about 2/3 of 4d so the
    parameter count stays that of a 4d MLP (11008 for d = 4096 in LLaMA-2 7B).
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Causal self-attention with RoPE and grouped-query attention (``n_kv_heads`` heads for
    keys and values, each read by n_head / n_kv_heads query heads). No biases."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        c = config
        self.n_head, self.n_kv_heads, self.head_dim = c.n_head, c.n_kv_heads, c.head_dim
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(c.dim, c.n_head * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_head * c.head_dim, c.dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # the cache holds rotated keys
        out = causal_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + self_attn(input_layernorm(x)), then
    x + mlp(post_attention_layernorm(x))."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.hidden_dim)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class LlamaConfig:
    """Sizes of a LLaMA. ``hidden_dim`` is the SwiGLU inner size; head_dim = dim / n_head."""

    vocab_size: int
    dim: int
    n_layer: int
    n_head: int
    n_kv_heads: int
    hidden_dim: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        sizes = (self.vocab_size, self.dim, self.n_layer, self.n_head, self.n_kv_heads,
                 self.hidden_dim, self.max_seq_len)  # fmt: skip
        if min(sizes) < 1:
            raise ValueError(f"LlamaConfig sizes must be positive, got {self}")
        if self.dim % self.n_head or (self.dim // self.n_head) % 2:
            raise ValueError(
                f"dim = {self.dim} must split into n_head = {self.n_head} heads of even size "
                "(RoPE rotates pairs of dimensions)"
            )
        if self.n_head % self.n_kv_heads:
            raise ValueError(
                f"n_head = {self.n_head} must be a multiple of n_kv_heads = {self.n_kv_heads} "
                "(each key/value head serves a whole group of query heads)"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LlamaConfig:
        """A named size (see ``PRESETS``), with any field overridden, e.g. ``vocab_size``."""
        if name not in PRESETS:
            raise ValueError(f"unknown LLaMA preset {name!r}; choose from {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# CPU sizes use the course BPE's vocabulary (4096 + <|endoftext|>) and show GQA (2 key/value
# heads); the LLaMA-2 sizes are Meta's (32000 tokens, 4096 positions).
PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(4097, dim=128, n_layer=4, n_head=4, n_kv_heads=2, hidden_dim=352,
                        max_seq_len=128),
    "small": LlamaConfig(4097, dim=384, n_layer=6, n_head=6, n_kv_heads=2, hidden_dim=1024,
                         max_seq_len=256),
    "llama2-7b": LlamaConfig(32000, dim=4096, n_layer=32, n_head=32, n_kv_heads=32,
                             hidden_dim=11008, max_seq_len=4096),
    "llama2-13b": LlamaConfig(32000, dim=5120, n_layer=40, n_head=40, n_kv_heads=40,
                              hidden_dim=13824, max_seq_len=4096),
    "llama2-70b": LlamaConfig(32000, dim=8192, n_layer=80, n_head=64, n_kv_heads=8,
                              hidden_dim=28672, max_seq_len=4096),
}  # fmt: skip


class Llama(nn.Module):
    """LLaMA language model: ``forward(input_ids, cache=None)`` -> float32 logits (B, T, V).

    With a ``KVCache`` (``new_cache``), ``input_ids`` are only the new tokens: they sit at
    positions ``cache.length ... cache.length + T - 1`` (their RoPE angles), their keys and
    values are written to the cache, and the cache length moves on by T.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.model = nn.ModuleDict(
            {
                "embed_tokens": nn.Embedding(c.vocab_size, c.dim),
                "layers": nn.ModuleList(DecoderLayer(c, i) for i in range(c.n_layer)),
                "norm": RMSNorm(c.dim, c.norm_eps),
            }
        )
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # N(0, 0.02) as Hugging Face's LLaMA; the two residual projections of each layer
        # scaled by 1/sqrt(2 n_layer) as in GPT-2, so the residual stream does not grow
        for name, p in self.named_parameters():
            if p.dim() == 2:
                residual = name.endswith(("o_proj.weight", "down_proj.weight"))
                std = 0.02 / math.sqrt(2 * c.n_layer) if residual else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (a tied embedding counted once).

        ``non_embedding=True`` leaves out the token lookup table ``embed_tokens`` unless it is
        tied to ``lm_head`` (then it does a matrix multiplication and counts): the N of 6N.
        """
        total = sum(p.numel() for p in self.parameters())
        if non_embedding and not self.config.tie_embeddings:
            total -= self.model.embed_tokens.weight.numel()
        return total

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty ``KVCache`` (n_kv_heads per layer) for ``batch_size`` sequences."""
        max_len = self.max_seq_len if max_len is None else max_len
        if max_len > self.max_seq_len:
            raise ValueError(f"max_len = {max_len} exceeds the context of {self.max_seq_len}")
        c, weight = self.config, self.model.embed_tokens.weight
        return KVCache(
            c.n_layer, batch_size, c.n_kv_heads, max_len, c.head_dim, weight.dtype, weight.device
        )

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        c = self.config
        start = check_tokens(input_ids, c.vocab_size, self.max_seq_len, cache)
        length = input_ids.shape[1]
        positions = torch.arange(start, start + length, device=input_ids.device)
        cos, sin = rope_cos_sin(c.head_dim, positions, c.rope_theta)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache)
        if cache is not None:
            cache.advance(length)
        return self.lm_head(self.model.norm(x)).float()

    @classmethod
    def from_hf(cls, source: Any, dtype: torch.dtype = torch.float32) -> Llama:
        """A Llama with the weights of a Hugging Face LLaMA (``LlamaForCausalLM`` instance, or
        a folder with config.json + model.safetensors or its shards), in eval mode."""
        hf_config, hf_state = read_source(source)
        config = config_from_hf(hf_config)
        state = state_from_hf(hf_state)
        tied = {"lm_head.weight": "model.embed_tokens.weight"} if config.tie_embeddings else {}
        copy = not isinstance(source, (str, Path))  # never share memory with a live HF model
        return load_into(lambda: cls(config), state, tied=tied, dtype=dtype, copy=copy)


def param_count(config: LlamaConfig, non_embedding: bool = False) -> int:
    """Parameters of a Llama with this config, from the formula (nothing is allocated).

    With d = dim, h = n_head, g = n_kv_heads, e = head_dim, f = hidden_dim, V = vocab_size:
    V d (embed_tokens) + V d (lm_head, unless tied) + d (final norm) + n_layer x
    [d h e (q) + 2 d g e (k, v) + h e d (o) + 3 d f (SwiGLU) + 2 d (two RMSNorms)].
    ``non_embedding`` leaves out the untied embedding table, as ``Llama.num_params`` does.
    """
    c, d, e = config, config.dim, config.head_dim
    layer = 2 * d * c.n_head * e + 2 * d * c.n_kv_heads * e + 3 * d * c.hidden_dim + 2 * d
    embeddings = c.vocab_size * d * (1 if c.tie_embeddings else 2)
    total = embeddings + c.n_layer * layer + d
    return total - c.vocab_size * d if non_embedding and not c.tie_embeddings else total


def _rope_theta(hf: dict[str, Any]) -> tuple[float, list[str]]:
    """RoPE base and any unsupported RoPE options of an HF config (4.x or 5.x style)."""
    problems = []
    if hf.get("rope_scaling"):
        problems.append(f"rope_scaling {hf['rope_scaling']}")
    params = hf.get("rope_parameters") or {}
    if params.get("rope_type", "default") != "default":
        problems.append(f"rope_type {params['rope_type']!r}")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        problems.append("partial_rotary_factor")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0))), problems


def config_from_hf(hf: dict[str, Any]) -> LlamaConfig:
    """Our ``LlamaConfig`` for a Hugging Face ``LlamaConfig`` (as a dict); refuses what we lack
    (RoPE scaling, biases, another activation, a head_dim other than dim / n_head)."""
    dim, n_head = hf.get("hidden_size") or 0, hf.get("num_attention_heads") or 1
    theta, rope_problems = _rope_theta(hf)
    head_dim = hf.get("head_dim") or dim // n_head
    unsupported = {f"RoPE variant ({p})": True for p in rope_problems}
    unsupported |= {
        "attention_bias": bool(hf.get("attention_bias", False)),
        "mlp_bias": bool(hf.get("mlp_bias", False)),
        f"hidden_act {hf.get('hidden_act')!r} (only 'silu')": hf.get("hidden_act", "silu")
        != "silu",
        f"head_dim {head_dim} != hidden_size / num_attention_heads": head_dim != dim // n_head,
    }
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings")  # fmt: skip
    check_config(hf, "llama", required, unsupported)
    return LlamaConfig(
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_heads=hf.get("num_key_value_heads") or n_head,
        hidden_dim=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_theta=theta,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def state_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF LLaMA tensors under our names (the same ones): drops old files' ``rotary_emb.inv_freq``
    buffers and adds the ``model.`` prefix to files saved from a bare ``LlamaModel``."""
    state = {}
    for name, tensor in hf_state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if not name.startswith(("model.", "lm_head.")):
            name = "model." + name
        state[name] = tensor
    return state
