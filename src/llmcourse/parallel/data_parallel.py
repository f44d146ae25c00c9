"""Data parallelism: every rank holds the whole model and sees a different slice of the batch.

With a global batch of B examples split into N equal shards of B/N, rank r computes the
gradient g_r of the mean loss over its own shard. The mean of those gradients is exactly the
gradient of the mean loss over the whole batch,

    g = (1/B) sum_i grad l_i = (1/N) sum_r (N/B) sum_{i in shard r} grad l_i = (1/N) sum_r g_r,

so one *all-reduce* (every rank ends with the sum over ranks) followed by a division by N gives
each rank the full-batch gradient, and identical optimizer steps keep the replicas identical,
provided they started identical (rank 0's weights are broadcast first).

``average_gradients`` is that all-reduce written by hand, one call per parameter.
``torch.nn.parallel.DistributedDataParallel`` (``wrap_ddp``) does the same with two
refinements: it packs gradients into ~25 MB buckets (fewer, larger messages) and starts a
bucket's all-reduce from an autograd hook as soon as its gradients are ready, so communication
overlaps the rest of the backward pass. Its cost per step is an all-reduce of the whole model:
with a ring, each rank sends and receives 2 (N-1)/N times the gradient bytes
(``ring_all_reduce`` plays the ring out in one process).

Launch with ``torchrun --standalone --nproc_per_node=N -m llmcourse.parallel check --checks
ddp`` (see ``launch``): gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of a global batch (dimension 0 split in equal parts)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if batch.shape[0] % world_size:
        raise ValueError(
            f"a batch of {batch.shape[0]} does not split evenly over {world_size} ranks; with "
            "unequal shards the average of the ranks' mean losses is not the batch's mean loss"
        )
    size = batch.shape[0] // world_size
    return batch[rank * size : (rank + 1) * size]


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, so the replicas start equal."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src)


def average_gradients(model: nn.Module) -> None:
    """Replace each gradient by its mean over the ranks: all-reduce (sum), then divide by N."""
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)


def ring_all_reduce(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """Sum N ranks' tensors the way a ring all-reduce does, in one process, for reading.

    Each rank's tensor is cut into N chunks and the ranks form a ring, rank r sending to
    r + 1. *Reduce-scatter*: in each of N - 1 steps every rank sends one chunk to its
    neighbour, which adds it to its own copy; afterwards rank r holds the complete sum of chunk
    (r + 1) mod N. *All-gather*: N - 1 more steps pass the completed chunks round the ring.
    Every rank ends with the sum, having sent 2 (N - 1) chunks of n / N elements: 2 (N-1)/N
    times the tensor, whatever N. Returns the N results and the elements each rank sent.
    """
    n = len(tensors)
    if n < 1 or any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError("ring_all_reduce needs at least one tensor, all of the same shape")
    chunks = [list(t.detach().reshape(-1).clone().tensor_split(n)) for t in tensors]
    sent = [0] * n
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(n - 1):
            # chunk index each rank sends in this step (all messages leave at once)
            offset = 0 if phase == "reduce-scatter" else 1
            messages = [(r, (r - step + offset) % n) for r in range(n)]
            payloads = [chunks[r][c].clone() for r, c in messages]
            for (r, c), payload in zip(messages, payloads, strict=True):
                sent[r] += payload.numel()
                receiver = chunks[(r + 1) % n]
                receiver[c] = receiver[c] + payload if phase == "reduce-scatter" else payload
    results = [torch.cat(c).view_as(tensors[0]) for c in chunks]
    return results, sent


def wrap_ddp(model: nn.Module, device: torch.device | None = None) -> DistributedDataParallel:
    """``DistributedDataParallel`` on the model (moved to ``device``; one GPU per process).

    DDP broadcasts rank 0's parameters and buffers when it is built and averages the gradients
    during ``backward()``.
    """
    device = device or torch.device("cpu")
    model = model.to(device)
    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


@dataclass
class DataParallelRun:
    """What one rank saw: the global losses, the first step's gradients, the final weights."""

    losses: list[float]
    first_grads: dict[str, torch.Tensor]
    final_state: dict[str, torch.Tensor]


def train_data_parallel(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    lr: float = 0.05,
    sync: str = "ddp",
    loss_fn: LossFn = nn.functional.mse_loss,
    device: torch.device | None = None,
) -> DataParallelRun:
    """Train ``model`` for ``steps`` SGD steps on this rank's shard of the global batch.

    Call it on every rank with the same global ``inputs``/``targets`` (each rank keeps its
    ``shard``); ``sync`` is ``"ddp"`` (``DistributedDataParallel``) or ``"manual"``
    (``broadcast_parameters`` once, ``average_gradients`` after every backward). The losses
    are global means (each rank's shard loss averaged over ranks), as a single process on the
    whole batch would log them.
    """
    if sync not in ("ddp", "manual"):
        raise ValueError(f"sync must be 'ddp' or 'manual', got {sync!r}")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = device or torch.device("cpu")
    x = shard(inputs, rank, world_size).to(device)
    y = shard(targets, rank, world_size).to(device)
    if sync == "ddp":
        net: nn.Module = wrap_ddp(model, device)
        inner = net.module
    else:
        net = inner = model.to(device)
        broadcast_parameters(inner)
    optimizer = torch.optim.SGD(inner.parameters(), lr=lr)
    losses: list[float] = []
    first_grads: dict[str, torch.Tensor] = {}
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        if sync == "manual":
            average_gradients(inner)
        if step == 0:
            first_grads = {n: p.grad.detach().cpu().clone() for n, p in inner.named_parameters()}
        optimizer.step()
        logged = loss.detach().clone()
        dist.all_reduce(logged)
        losses.append(logged.item() / world_size)
    final_state = {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
    return DataParallelRun(losses, first_grads, final_state)
