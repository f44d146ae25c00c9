"""ZeRO and FSDP: data parallelism without a full copy of the model states on every rank.

Plain data parallelism keeps on each of the d ranks the same weights, gradients and Adam
states: d copies of 16 bytes per parameter (``memory``). ZeRO (Rajbhandari et al. 2020)
gives each rank one d-th of them instead, and communicates to make up for it:

* **ZeRO-1** shards the optimizer states. Gradients are all-reduced as in DDP; rank r updates
  only its slice r of the (flattened) parameters with its slice of Adam's m and v, then an
  all-gather hands every rank the whole updated weights.
* **ZeRO-2** also shards the gradients: a *reduce-scatter* leaves rank r with only the summed
  gradient of its slice (half of an all-reduce's traffic: all-reduce = reduce-scatter +
  all-gather), so the step costs what DDP's all-reduce costs.
* **ZeRO-3** (= FSDP, fully sharded data parallel) also shards the weights: before a layer's
  forward or backward, an all-gather assembles its full weights, which are freed right after.
  1.5 times DDP's traffic, but a rank holds only (2 + 2 + K) Psi / d bytes of model states.

``ZeroAdam`` is ZeRO-1/2 written out (AdamW on a flat parameter vector, one slice per rank),
to read. ``fully_shard_model`` applies PyTorch's own FSDP (``torch.distributed.fsdp``'s
``fully_shard``, "FSDP2", where each parameter becomes a ``DTensor`` sharded on dimension 0);
it runs on the CPU with gloo as well as on GPUs with NCCL. ``ZeroRedundancyOptimizer`` in
``torch.distributed.optim`` is PyTorch's ZeRO-1. ``measured_bytes`` counts what one rank
really holds, to compare with ``memory.model_state_bytes``.

Launch with ``torchrun --standalone --nproc_per_node=N -m llmcourse.parallel check --checks zero``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from .memory import MemoryBreakdown

try:  # the non-deprecated names from torch 2.13 on
    _all_gather = dist.all_gather_single
    _reduce_scatter = dist.reduce_scatter_single
except AttributeError:  # older torch
    _all_gather = dist.all_gather_into_tensor
    _reduce_scatter = dist.reduce_scatter_tensor


class ZeroAdam:
    """AdamW whose states are sharded over the data-parallel ranks (ZeRO stage 1 or 2).

    The parameters are viewed as one flat vector of n numbers, padded to a multiple of the d
    ranks; rank r owns positions [r c, (r+1) c) with c = ceil(n / d), and keeps m and v (and,
    for 16-bit parameters, an fp32 master copy) for those alone. ``step()`` averages the
    gradients over the ranks (stage 1: all-reduce, then keep the own slice; stage 2:
    reduce-scatter, then drop the full gradients), updates the own slice, and all-gathers the
    new parameters into every rank's model. This version flattens after the backward pass;
    DeepSpeed reduce-scatters bucket by bucket during it, so the full gradients never exist at
    once.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        stage: int = 1,
    ) -> None:
        if stage not in (1, 2):
            raise ValueError(f"ZeroAdam implements ZeRO stages 1 and 2, got {stage}")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("ZeroAdam got no parameters that require gradients")
        if len({p.dtype for p in self.params}) != 1:
            raise ValueError("ZeroAdam needs all parameters in one dtype")
        self.lr, self.betas, self.eps, self.weight_decay, self.stage = (
            lr,
            betas,
            eps,
            weight_decay,
            stage,
        )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.numel = sum(p.numel() for p in self.params)
        self.chunk = math.ceil(self.numel / self.world_size)
        dtype = self.params[0].dtype
        self.master_dtype = torch.float32 if dtype.itemsize < 4 else dtype
        own = self._flat([p.detach() for p in self.params])[self._own].to(self.master_dtype)
        self.state: dict[str, torch.Tensor] = {
            "exp_avg": torch.zeros_like(own),
            "exp_avg_sq": torch.zeros_like(own),
        }
        if self.master_dtype != dtype:
            self.state["master"] = own.clone()
        self.grad_shard: torch.Tensor | None = None
        self.steps = 0

    @property
    def _own(self) -> slice:
        return slice(self.rank * self.chunk, (self.rank + 1) * self.chunk)

    def _flat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        return nn.functional.pad(flat, (0, self.chunk * self.world_size - self.numel))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        self.grad_shard = None

    @torch.no_grad()
    def step(self) -> None:
        """Average the gradients over ranks, update the own slice, all-gather the weights."""
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:
            raise RuntimeError(f"parameters {missing} have no gradient: call backward() first")
        flat_grad = self._flat([p.grad for p in self.params])
        if self.stage == 1:
            dist.all_reduce(flat_grad)
            grad = flat_grad[self._own]
        else:
            grad = torch.empty(self.chunk, dtype=flat_grad.dtype, device=flat_grad.device)
            _reduce_scatter(grad, flat_grad)
            for p in self.params:  # stage 2 keeps only the own slice of the gradients
                p.grad = None
        grad = grad.to(self.master_dtype).div_(self.world_size)
        self.grad_shard = grad
        self.steps += 1
        beta1, beta2 = self.betas
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = m / (1 - beta1**self.steps)
        v_hat = v / (1 - beta2**self.steps)
        master = self.state.get("master")
        if master is None:
            master = self._flat([p.detach() for p in self.params])[self._own]
        master.mul_(1 - self.lr * self.weight_decay)
        master.addcdiv_(m_hat, v_hat.sqrt().add_(self.eps), value=-self.lr)
        full = torch.empty(
            self.chunk * self.world_size, dtype=self.params[0].dtype, device=master.device
        )
        _all_gather(full, master.to(self.params[0].dtype).contiguous())
        offset = 0
        for p in self.params:
            p.copy_(full[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def fully_shard_model(
    model: nn.Module, units: Iterable[nn.Module] = (), mixed_precision: bool = False
) -> nn.Module:
    """Apply PyTorch's FSDP (``fully_shard``) to each of ``units`` and then to ``model``.

    Each unit (typically a Transformer block) gathers its full weights just before its forward
    and backward and frees them after, so only one unit is ever whole on a rank. With
    ``mixed_precision`` the gathered weights are bf16 and gradients are reduced in fp32 (the
    sharded fp32 parameters are the master copy). Move the model to its device first.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    for unit in units:
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    """The part of a (possibly sharded ``DTensor``) tensor that lives on this rank."""
    return t.to_local() if hasattr(t, "to_local") else t


def _nbytes(tensors: Iterable[torch.Tensor | None]) -> int:
    return sum(_local(t).numel() * t.element_size() for t in tensors if t is not None)


def measured_bytes(model: nn.Module, optimizer: object) -> MemoryBreakdown:
    """Bytes of parameters, gradients and optimizer states this rank holds right now.

    Sharded ``DTensor`` parameters count their local shard only. The optimizer is a
    ``torch.optim`` optimizer, PyTorch's ``ZeroRedundancyOptimizer`` (its local optimizer's
    states) or a ``ZeroAdam``. Adam's scalar step counters are left out.
    """
    grads = [p.grad for p in model.parameters()]
    if isinstance(optimizer, ZeroAdam):
        states = list(optimizer.state.values())
        if optimizer.stage == 2:
            grads = [optimizer.grad_shard]
    else:
        inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer wraps one
        states = [
            t
            for state in inner.state.values()
            for key, t in state.items()
            if key != "step" and isinstance(t, torch.Tensor)
        ]
    return MemoryBreakdown(
        weights=float(_nbytes(model.parameters())),
        gradients=float(_nbytes(grads)),
        optimizer=float(_nbytes(states)),
    )
