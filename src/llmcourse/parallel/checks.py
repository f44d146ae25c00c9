"""Checks that run inside a process group and return what a single process should reproduce.

Each ``*_check`` function runs on every rank of an initialised group (under ``launch.spawn``
or ``torchrun``) on the tiny seeded models of ``toy``, in float64, and returns plain tensors
and numbers: outputs, gradients, final weights, measured bytes. The caller (the test suite, or
``python -m llmcourse.parallel check``) builds the unsplit model from the same seed in one
process and compares. ``run_checks`` runs several in one group, so the processes start once.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llmcourse.attention import MultiHeadAttention
from llmcourse.transformer.blocks import FeedForward

from . import data_parallel, pipeline, tensor_parallel, zero
from .toy import toy_batch, toy_model

DTYPE = torch.float64
BATCH = 8  # global batch: divisible by 2 and 4 ranks, and by 2 and 4 micro-batches
ZERO_METHODS = ("fsdp", "zero1", "zero2", "torch_zero1", "unsharded")


def data_parallel_check(seed: int, steps: int = 3) -> dict[str, Any]:
    """DDP and the hand-written all-reduce, each from a model seeded differently on each rank
    (rank 0's seed is the one that must win, by broadcast)."""
    x, y = toy_batch(seed, BATCH, dtype=DTYPE)
    rank = dist.get_rank()
    return {
        sync: asdict(
            data_parallel.train_data_parallel(toy_model(seed + rank), x, y, steps, sync=sync)
        )
        for sync in ("ddp", "manual")
    }


def tp_probe(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Fixed random weights w for the scalar loss sum(w * output) (every output element counts)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 99), dtype=DTYPE)


def tp_layers(
    seed: int, d_model: int = 8, d_ff: int = 16, n_heads: int = 4
) -> dict[str, nn.Module]:
    """The unsplit layers the tensor-parallel check shards: chapter 6's FeedForward and
    MultiHeadAttention, and a lone Linear, seeded and the same on every rank."""
    torch.manual_seed(seed)
    return {
        "column": nn.Linear(d_model, d_ff).to(DTYPE),
        "mlp": FeedForward(d_model, d_ff).to(DTYPE),
        "attention": MultiHeadAttention(d_model, n_heads).to(DTYPE),
    }


def tp_input(seed: int, d_model: int = 8) -> torch.Tensor:
    return torch.randn(
        2, 5, d_model, generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE
    )


def tensor_parallel_check(seed: int) -> dict[str, Any]:
    """Shard each layer of ``tp_layers`` over the ranks; return outputs, the input's gradient
    and the local weight shards' gradients under the loss sum(probe * output)."""
    full = tp_layers(seed)
    sharded: dict[str, nn.Module] = {
        "column": tensor_parallel.ColumnParallelLinear.from_linear(
            full["column"], gather_output=True
        ),
        "mlp": tensor_parallel.TensorParallelMLP.from_linears(
            full["mlp"].linear1, full["mlp"].linear2
        ),
        "attention": tensor_parallel.TensorParallelAttention.from_attention(full["attention"]),
    }
    results = {}
    for name, layer in sharded.items():
        x = tp_input(seed).requires_grad_()
        out = layer(x, causal=True) if name == "attention" else layer(x)
        (out * tp_probe(out.shape, seed)).sum().backward()
        results[name] = {
            "output": out.detach(),
            "input_grad": x.grad,
            "grads": {n: p.grad for n, p in layer.named_parameters()},
        }
    return results


def pipeline_check(seed: int, n_micro: int = 4, kind: str = "gpipe") -> dict[str, Any]:
    """One pipelined step of ``toy_model(seed)``: rank s runs stage s of ``split_stages``."""
    rank, p = dist.get_rank(), dist.get_world_size()
    stage = pipeline.split_stages(toy_model(seed), p)[rank]
    make = pipeline.gpipe_schedule if kind == "gpipe" else pipeline.one_f_one_b_schedule
    schedule = make(p, n_micro)
    x, y = toy_batch(seed, BATCH, dtype=DTYPE)
    run = pipeline.run_pipeline_stage(
        stage,
        schedule,
        pipeline.micro_batches(x, n_micro) if rank == 0 else None,
        pipeline.micro_batches(y, n_micro) if rank == p - 1 else None,
        dtype=DTYPE,
    )
    return {"loss": run.loss, "grads": {n: q.grad for n, q in stage.named_parameters()}}


def zero_check(seed: int, method: str, steps: int = 3, lr: float = 0.01) -> dict[str, Any]:
    """AdamW (weight decay 0.1) steps on each rank's batch shard with sharded states.

    ``method``: "fsdp" (PyTorch's ``fully_shard``), "zero1"/"zero2" (``ZeroAdam``),
    "torch_zero1" (DDP + PyTorch's ``ZeroRedundancyOptimizer``) or "unsharded" (DDP + AdamW).
    Returns the losses, the final full weights and the bytes this rank held after the last step.
    """
    if method not in ZERO_METHODS:
        raise ValueError(f"method must be one of {ZERO_METHODS}, got {method!r}")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model = toy_model(seed)
    x, y = toy_batch(seed, BATCH, dtype=DTYPE)
    x, y = data_parallel.shard(x, rank, world_size), data_parallel.shard(y, rank, world_size)
    hyper = {"lr": lr, "weight_decay": 0.1}
    net: nn.Module = model
    if method == "fsdp":
        zero.fully_shard_model(model, units=list(model.children()))
        optimizer: Any = torch.optim.AdamW(model.parameters(), **hyper)
    elif method in ("zero1", "zero2"):
        optimizer = zero.ZeroAdam(model.parameters(), stage=int(method[-1]), **hyper)
    else:
        net = data_parallel.wrap_ddp(model)
        if method == "torch_zero1":
            from torch.distributed.optim import ZeroRedundancyOptimizer

            optimizer = ZeroRedundancyOptimizer(
                model.parameters(), optimizer_class=torch.optim.AdamW, **hyper
            )
        else:
            optimizer = torch.optim.AdamW(model.parameters(), **hyper)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        optimizer.step()
        logged = loss.detach().clone()
        dist.all_reduce(logged)
        losses.append(logged.item() / world_size)
    held = zero.measured_bytes(model, optimizer)
    state = {
        n: (p.full_tensor() if method == "fsdp" else p).detach().clone()
        for n, p in model.named_parameters()
    }
    return {"losses": losses, "state": state, "bytes": asdict(held)}


def run_checks(seed: int, names: tuple[str, ...]) -> dict[str, Any]:
    """Run the named checks ("ddp", "tp", "pipeline", "pipeline_1f1b", "zero") in this group."""
    results: dict[str, Any] = {}
    for name in names:
        if name == "ddp":
            results[name] = data_parallel_check(seed)
        elif name == "tp":
            results[name] = tensor_parallel_check(seed)
        elif name in ("pipeline", "pipeline_1f1b"):
            kind = "gpipe" if name == "pipeline" else "1f1b"
            results[name] = pipeline_check(seed, kind=kind)
        elif name == "zero":
            results[name] = {m: zero_check(seed, m) for m in ZERO_METHODS}
        else:
            raise ValueError(f"unknown check {name!r}")
        dist.barrier()
    return results
