"""A key/value cache: generate token by token without recomputing the past.

A decoder generates one token per step. Without a cache, step t runs the whole prefix of t
tokens through the model again, although the keys and values of the first t - 1 tokens are
the same as at the previous step (causal attention: an earlier token never looks at a later
one). A *KV cache* keeps, for every layer, the keys and values computed so far; a step then
feeds only the new token, computes its query, key and value, appends the key and value to the
cache and attends over everything cached. The cost of a step drops from O(t) token-passes
through the model to one, at the price of memory:

    bytes = 2 (keys and values) * n_layers * n_kv_heads * head_dim * tokens * batch * bytes/value.

The tensors are allocated once, for ``max_len`` tokens, and filled in place: no concatenation
and no reallocation while generating. The model writes each layer's new keys and values with
``update`` and, once every layer has seen the new tokens, moves the length on with ``advance``.

``causal_attention`` is the attention that goes with it: new queries over cached and new keys,
with the causal mask aligned so that the last query sees the last key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse.attention import causal_mask


def kv_cache_bytes(
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    tokens: int,
    batch_size: int = 1,
    bytes_per_value: int = 2,
) -> int:
    """Memory of a KV cache: 2 * n_layers * n_kv_heads * head_dim * tokens * batch * bytes.

    ``bytes_per_value`` is 2 for float16/bfloat16 (the usual inference dtype), 4 for float32.
    """
    return 2 * n_layers * n_kv_heads * head_dim * tokens * batch_size * bytes_per_value


class KVCache:
    """Preallocated keys and values, one (B, n_kv_heads, max_len, head_dim) pair per layer.

    ``length`` is the number of positions already cached (the same for every layer between
    forward passes). ``update(layer, k, v)`` writes the new keys/values (B, n_kv_heads, T,
    head_dim) at positions ``length ... length + T - 1`` and returns the keys and values of
    positions 0 ... length + T - 1; ``advance(T)`` then moves ``length`` on (the model calls it
    once, after its last layer). ``reset()`` empties the cache for a new batch of prompts.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        sizes = {
            "n_layers": n_layers,
            "batch_size": batch_size,
            "n_kv_heads": n_kv_heads,
            "max_len": max_len,
            "head_dim": head_dim,
        }
        bad = {name: value for name, value in sizes.items() if value < 1}
        if bad:
            raise ValueError(f"KVCache sizes must be positive, got {bad}")
        self.max_len = max_len
        self.length = 0
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def free(self) -> int:
        """Positions still free."""
        return self.max_len - self.length

    def nbytes(self) -> int:
        """Memory held by the preallocated tensors (all ``max_len`` positions)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``, ``v`` (B, n_kv_heads, T, head_dim) after the cached positions of
        ``layer``; return that layer's keys and values for positions 0 ... length + T - 1."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in 0..{self.n_layers - 1}, got {layer}")
        cached = self.keys[layer]
        expected = (cached.shape[0], cached.shape[1], cached.shape[3])
        for name, t in (("keys", k), ("values", v)):
            if t.dim() != 4 or (t.shape[0], t.shape[1], t.shape[3]) != expected:
                raise ValueError(
                    f"new {name} must have shape (batch={expected[0]}, n_kv_heads={expected[1]}, "
                    f"T, head_dim={expected[2]}), got {tuple(t.shape)}"
                )
        if k.shape[2] != v.shape[2]:
            raise ValueError(f"as many keys as values, got {k.shape[2]} and {v.shape[2]}")
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {self.length} cached + {k.shape[2]} new positions > "
                f"max_len = {self.max_len} (make a bigger cache or reset it)"
            )
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        # under autocast k may be bfloat16 while the cache is float32: attend in k's dtype
        return self.keys[layer][:, :, :end].to(k.dtype), self.values[layer][:, :, :end].to(v.dtype)

    def advance(self, n: int) -> None:
        """Count ``n`` more positions as cached (after every layer has written them)."""
        if n < 0 or self.length + n > self.max_len:
            raise ValueError(
                f"cannot advance a KV cache of length {self.length} by {n} (max_len = "
                f"{self.max_len})"
            )
        self.length += n

    def reset(self) -> None:
        """Forget every cached position (the tensors are kept and overwritten later)."""
        self.length = 0

    def __repr__(self) -> str:
        k = self.keys[0]
        return (
            f"KVCache(n_layers={self.n_layers}, batch_size={k.shape[0]}, n_kv_heads={k.shape[1]}, "
            f"max_len={self.max_len}, head_dim={k.shape[3]}, length={self.length}, "
            f"dtype={k.dtype})"
        )


def check_tokens(
    input_ids: torch.Tensor, vocab_size: int, max_seq_len: int, cache: KVCache | None
) -> int:
    """Check a (B, T) batch of token ids and the cache it extends; return its first position.

    Without a cache the tokens start at position 0; with one, at ``cache.length``. Raises a
    ``ValueError`` for a wrong shape or dtype, ids outside the vocabulary (checked on the CPU),
    a cache of another batch size, a cache overflow or a sequence past ``max_seq_len``.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (batch, length) tensor of token ids, got {shape}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[1] < 1:
        raise ValueError("input_ids is empty: need at least one token per sequence")
    # a range check on an accelerator would wait for the GPU: there the embedding reports it
    if input_ids.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token ids must be in 0..{vocab_size - 1}, got {low}..{high}")
    start = 0
    if cache is not None:
        if cache.batch_size != input_ids.shape[0]:
            raise ValueError(
                f"the cache holds {cache.batch_size} sequences, input_ids {input_ids.shape[0]}"
            )
        start = cache.length
        if start + input_ids.shape[1] > cache.max_len:
            raise ValueError(
                f"KV cache overflow: {start} cached + {input_ids.shape[1]} new tokens > the "
                f"cache's max_len = {cache.max_len}"
            )
    if start + input_ids.shape[1] > max_seq_len:
        raise ValueError(
            f"sequence too long: {start + input_ids.shape[1]} positions > the model's "
            f"max_seq_len = {max_seq_len}"
        )
    return start


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal attention of T new queries over S >= T keys, the last T of which are theirs.

    q is (B, h, T, d), k and v (B, h_kv, S, d) with h a multiple of h_kv (grouped-query
    attention: query head i reads key/value head i // (h / h_kv)). The S - T keys before the
    queries come from a cache, so query t (at position S - T + t) may see keys 0 ... S - T + t:
    the causal mask is aligned bottom-right. Three cases, all on PyTorch's fused kernel:

    * S == T (no cache, or an empty one): SDPA's own ``is_causal``, the fast path;
    * T == 1 (one decoding step): the single query sees every key, no mask at all;
    * otherwise (a prompt after cached tokens): an explicit bottom-right boolean mask.
    """
    length_q, length_k = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if length_q == length_k or length_q == 1:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=length_q > 1, enable_gqa=gqa
        )
    mask = causal_mask(length_q, length_k, device=q.device)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa
    )
