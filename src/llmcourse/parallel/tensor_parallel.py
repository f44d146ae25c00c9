"""Tensor parallelism (Megatron-LM): one layer's matrices split across ranks.

Write a linear layer with row vectors, Y = X A (A is d_in x d_out; ``nn.Linear`` stores A^T
as its ``weight``, shape d_out x d_in). There are two ways to split A over N ranks:

* **column split** A = [A_1, ..., A_N] (each d_in x d_out/N): rank r computes
  Y_r = X A_r, a slice of the output's features. It needs the whole input X.
* **row split** A = [A_1; ...; A_N] (each d_in/N x d_out): rank r takes the matching slice
  X_r of the input's features and computes a partial product X_r A_r; the output is the
  *sum* over ranks, Y = sum_r X_r A_r, one all-reduce.

A Transformer MLP Z = act(X A) B chains the two with no communication in between: split A by
columns and B by rows, then rank r computes act(X A_r) B_r on its own (the activation is
elementwise, so it applies to each column slice separately), and one all-reduce sums the
partial results. Attention splits the same way by heads: W_Q, W_K, W_V by columns (each rank
gets whole heads), W_O by rows.

Two conjugate operations carry the communication, each an ``autograd.Function``:

* ``copy_to_parallel`` (Megatron's *f*): identity forward; all-reduce of the gradient backward,
  since X feeds every rank's slice and its gradient is the sum of theirs;
* ``reduce_from_parallel`` (*g*): all-reduce forward; identity backward, since the sum's
  gradient reaches every summand unchanged.

So an MLP or attention block costs one all-reduce of the activations forward and one
backward, per block, between ranks that must sit close (inside one NVLink node).
``simulate_mlp`` and ``column_parallel_matmul``/``row_parallel_matmul`` do the same algebra in
one process, on lists of shards, for reading and for the exercises.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmcourse.attention import merge_heads, split_heads

Activation = Callable[[torch.Tensor], torch.Tensor]


def _world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    return dist.get_rank(group), dist.get_world_size(group)


def _split(tensor: torch.Tensor, dim: int, rank: int, world_size: int, what: str) -> torch.Tensor:
    if tensor.shape[dim] % world_size:
        raise ValueError(
            f"{what}: size {tensor.shape[dim]} along dimension {dim} does not split evenly "
            f"over {world_size} ranks"
        )
    return tensor.chunk(world_size, dim=dim)[rank].clone()


class _CopyToParallel(torch.autograd.Function):
    """f: identity forward, all-reduce (sum) of the gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromParallel(torch.autograd.Function):
    """g: all-reduce (sum) forward, identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:  # type: ignore[override]
        out = x.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class _GatherFromParallel(torch.autograd.Function):
    """All-gather along the last dimension forward; keep this rank's slice of the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.world_size = _world(group)
        parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.chunk(ctx.world_size, dim=-1)[ctx.rank].contiguous(), None


def copy_to_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Megatron's f: pass X to every rank's shard; sum the shards' input gradients backward."""
    return _CopyToParallel.apply(x, group)


def reduce_from_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Megatron's g: sum the ranks' partial outputs; hand the gradient to each unchanged."""
    return _ReduceFromParallel.apply(x, group)


def gather_from_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate the ranks' feature slices (last dimension); backward keeps the own slice."""
    return _GatherFromParallel.apply(x, group)


class _ParallelLinear(nn.Module):
    """Holds one rank's shard of a weight (and bias) and the process group it belongs to."""

    def __init__(
        self,
        weight_shape: tuple[int, int],
        bias_size: int | None,
        fan_in: int,
        group: dist.ProcessGroup | None,
        dtype: torch.dtype | None,
        device: torch.device | None,
    ) -> None:
        super().__init__()
        self.group = group
        self.rank, self.world_size = _world(group)
        # nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with the *full* layer's
        # fan_in. Seed the ranks differently (or use from_linear) so the shards differ.
        bound = 1 / math.sqrt(fan_in)
        kw = {"dtype": dtype, "device": device}
        self.weight = nn.Parameter(torch.empty(weight_shape, **kw).uniform_(-bound, bound))
        self.bias = (
            nn.Parameter(torch.empty(bias_size, **kw).uniform_(-bound, bound))
            if bias_size is not None
            else None
        )


class ColumnParallelLinear(_ParallelLinear):
    """Y_r = X A_r + b_r: this rank's d_out/N output features of a d_in -> d_out layer.

    The input passes through ``copy_to_parallel`` (its gradient is summed over ranks). With
    ``gather_output=True`` the slices are all-gathered into the full output; in a
    Megatron MLP they stay split and feed a ``RowParallelLinear``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        gather_output: bool = False,
        group: dist.ProcessGroup | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        world_size = dist.get_world_size(group)
        if out_features % world_size:
            raise ValueError(
                f"out_features = {out_features} must be divisible by the {world_size} ranks"
            )
        local = out_features // world_size
        super().__init__(
            (local, in_features), local if bias else None, in_features, group, dtype, device
        )
        self.in_features, self.out_features, self.gather_output = (
            in_features,
            out_features,
            gather_output,
        )

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, gather_output: bool = False, group: dist.ProcessGroup | None = None
    ) -> ColumnParallelLinear:
        """This rank's column shard of an existing layer (rows of ``linear.weight``)."""
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            gather_output,
            group,
            w.dtype,
            w.device,
        )
        with torch.no_grad():
            layer.weight.copy_(_split(w, 0, layer.rank, layer.world_size, "column split"))
            if linear.bias is not None:
                layer.bias.copy_(_split(linear.bias, 0, layer.rank, layer.world_size, "bias"))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input features, got {x.shape[-1]}")
        y = F.linear(copy_to_parallel(x, self.group), self.weight, self.bias)
        return gather_from_parallel(y, self.group) if self.gather_output else y


class RowParallelLinear(_ParallelLinear):
    """Y = sum_r X_r A_r + b: takes this rank's d_in/N input features, all-reduces the sum.

    The input is already split (the output of a ``ColumnParallelLinear``). The bias is whole on
    every rank and added once, after the all-reduce.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group: dist.ProcessGroup | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        world_size = dist.get_world_size(group)
        if in_features % world_size:
            raise ValueError(
                f"in_features = {in_features} must be divisible by the {world_size} ranks"
            )
        local = in_features // world_size
        super().__init__(
            (out_features, local), out_features if bias else None, in_features, group, dtype, device
        )
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group: dist.ProcessGroup | None = None
    ) -> RowParallelLinear:
        """This rank's row shard of an existing layer (columns of ``linear.weight``)."""
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            group,
            w.dtype,
            w.device,
        )
        with torch.no_grad():
            layer.weight.copy_(_split(w, 1, layer.rank, layer.world_size, "row split"))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.in_features // self.world_size
        if x.shape[-1] != local:
            raise ValueError(
                f"expected this rank's {local} of {self.in_features} input features, "
                f"got {x.shape[-1]}"
            )
        y = reduce_from_parallel(F.linear(x, self.weight), self.group)
        return y if self.bias is None else y + self.bias


class TensorParallelMLP(nn.Module):
    """Z = act(X A) B with A column-split and B row-split: one all-reduce forward, one back."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: Activation = torch.relu,
        group: dist.ProcessGroup | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.fc1 = ColumnParallelLinear(d_model, d_ff, group=group, dtype=dtype)
        self.fc2 = RowParallelLinear(d_ff, d_model, group=group, dtype=dtype)
        self.activation = activation

    @classmethod
    def from_linears(
        cls,
        linear1: nn.Linear,
        linear2: nn.Linear,
        activation: Activation = torch.relu,
        group: dist.ProcessGroup | None = None,
    ) -> TensorParallelMLP:
        """Shard an existing MLP ``linear2(act(linear1(x)))`` (e.g. chapter 6's FeedForward)."""
        mlp = cls.__new__(cls)
        nn.Module.__init__(mlp)
        mlp.fc1 = ColumnParallelLinear.from_linear(linear1, group=group)
        mlp.fc2 = RowParallelLinear.from_linear(linear2, group=group)
        mlp.activation = activation
        return mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class TensorParallelAttention(nn.Module):
    """Multi-head self-attention with the heads split across ranks.

    Q, K, V projections are column-parallel: head i owns features i*d_k..(i+1)*d_k - 1, so an
    even split of the features gives rank r the heads r*h/N..(r+1)*h/N - 1 whole, and it runs
    attention on them alone. The output projection is row-parallel over the concatenated heads.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        bias: bool = True,
        group: dist.ProcessGroup | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        world_size = dist.get_world_size(group)
        if d_model % n_heads or n_heads % world_size:
            raise ValueError(
                f"need d_model ({d_model}) divisible by n_heads ({n_heads}) and n_heads "
                f"divisible by the {world_size} ranks (each rank takes whole heads)"
            )
        self.d_model, self.n_heads, self.local_heads = d_model, n_heads, n_heads // world_size
        kw = {"bias": bias, "group": group, "dtype": dtype}
        self.q_proj = ColumnParallelLinear(d_model, d_model, **kw)
        self.k_proj = ColumnParallelLinear(d_model, d_model, **kw)
        self.v_proj = ColumnParallelLinear(d_model, d_model, **kw)
        self.out_proj = RowParallelLinear(d_model, d_model, **kw)

    @classmethod
    def from_attention(
        cls, attention: nn.Module, group: dist.ProcessGroup | None = None
    ) -> TensorParallelAttention:
        """Shard a layer with ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` and ``n_heads``
        (``llmcourse.attention.MultiHeadAttention``)."""
        world_size = dist.get_world_size(group)
        d_model, n_heads = attention.q_proj.in_features, attention.n_heads
        if n_heads % world_size:
            raise ValueError(f"{n_heads} heads do not split evenly over {world_size} ranks")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.d_model, layer.n_heads, layer.local_heads = d_model, n_heads, n_heads // world_size
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(
                layer, name, ColumnParallelLinear.from_linear(getattr(attention, name), group=group)
            )
        layer.out_proj = RowParallelLinear.from_linear(attention.out_proj, group=group)
        return layer

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x (B, L, d_model) -> (B, L, d_model), the same on every rank."""
        q = split_heads(self.q_proj(x), self.local_heads)
        k = split_heads(self.k_proj(x), self.local_heads)
        v = split_heads(self.v_proj(x), self.local_heads)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(merge_heads(heads))


# ------------------------------------------------------------------------------------------
# The same algebra in one process, on lists of shards
# ------------------------------------------------------------------------------------------


def column_parallel_matmul(x: torch.Tensor, a: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """The N ranks' outputs X A_r for A (d_in x d_out) split by columns; concatenated = X A."""
    _check_even(a, 1, world_size)
    return [x @ a_r for a_r in a.chunk(world_size, dim=1)]


def row_parallel_matmul(
    x_parts: list[torch.Tensor], a: torch.Tensor, world_size: int
) -> list[torch.Tensor]:
    """The N ranks' partial products X_r A_r for A split by rows; their sum is X A."""
    _check_even(a, 0, world_size)
    if len(x_parts) != world_size:
        raise ValueError(f"expected {world_size} input slices, got {len(x_parts)}")
    return [x_r @ a_r for x_r, a_r in zip(x_parts, a.chunk(world_size, dim=0), strict=True)]


def simulate_mlp(
    x: torch.Tensor,
    linear1: nn.Linear,
    linear2: nn.Linear,
    world_size: int,
    activation: Activation = torch.relu,
) -> torch.Tensor:
    """``linear2(act(linear1(x)))`` computed as N tensor-parallel ranks would, then summed.

    Rank r: H_r = act(X A_r + b1_r) (no communication), P_r = H_r B_r; the all-reduce is the
    sum over r, and b2 is added once.
    """
    a = linear1.weight.T  # d_model x d_ff
    b = linear2.weight.T  # d_ff x d_model
    pre = column_parallel_matmul(x, a, world_size)
    b1 = linear1.bias.chunk(world_size) if linear1.bias is not None else [0.0] * world_size
    hidden = [activation(p + b1_r) for p, b1_r in zip(pre, b1, strict=True)]
    out = torch.stack(row_parallel_matmul(hidden, b, world_size)).sum(0)
    return out if linear2.bias is None else out + linear2.bias


def _check_even(a: torch.Tensor, dim: int, world_size: int) -> None:
    if world_size < 1 or a.shape[dim] % world_size:
        raise ValueError(
            f"a matrix of shape {tuple(a.shape)} does not split evenly over {world_size} ranks "
            f"along dimension {dim}"
        )
