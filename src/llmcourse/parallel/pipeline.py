"""Pipeline parallelism: consecutive layers on consecutive ranks, micro-batches in flight.

Cut a model into p *stages* (groups of consecutive layers), one per rank. Stage s receives
activations from stage s-1, sends its output to s+1, and in the backward pass receives the
gradient of its output from s+1 and sends the gradient of its input back to s-1. Fed one
batch at a time, only one stage would work at any moment; GPipe splits the batch into m
*micro-batches* so that stage s works on micro-batch j while stage s+1 works on j-1.

A *schedule* is a table: for every stage and time step, which operation runs there, F_j (the
forward of micro-batch j) or B_j (its backward), or nothing (idle). With unit-time operations,
GPipe runs all forwards, then all backwards:

    stage 0 | F0 F1 F2 F3 .  .  .  B0 B1 B2 B3 .  .  .
    stage 1 | .  F0 F1 F2 F3 .  .  .  B0 ...                 (p = 4, m = 4)

Each stage idles p-1 steps while the pipeline fills and p-1 while it drains, out of
2(m+p-1), so the *bubble* (the idle fraction) is

    bubble = (p - 1) / (m + p - 1),

small only when m >> p. ``build_schedule`` does not assume this formula: it places every
operation as soon as its inputs exist (F_j on stage s after F_j on s-1; B_j after B_j on
s+1), and ``bubble_fraction`` counts the idle cells of the resulting table. 1F1B
(``one_f_one_b_order``: after a warm-up of p-s-1 forwards each stage alternates one forward,
one backward) has the same bubble, but stage s holds at most p-s micro-batches' activations
instead of m (``peak_in_flight``).

The loss is the mean over micro-batches of each micro-batch's mean loss, and gradients
accumulate over micro-batches before the one optimizer step, so the pipelined step equals the
unsplit model's step on the whole batch. ``run_simulated`` executes a schedule in one process
(stages as a list of modules); ``run_pipeline_stage`` executes this rank's row of it with
point-to-point ``send``/``recv`` between ranks, as
``torchrun --nproc_per_node=p -m llmcourse.parallel check --checks pipeline`` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_MAX_DIMS = 8


@dataclass(frozen=True)
class Op:
    """One cell of a schedule: the forward ("F") or backward ("B") of micro-batch ``micro``."""

    kind: str
    micro: int

    def __str__(self) -> str:
        return f"{self.kind}{self.micro}"


@dataclass(frozen=True)
class Schedule:
    """``grid[s][t]``: the operation stage s runs at time step t, or ``None`` when idle."""

    grid: tuple[tuple[Op | None, ...], ...]
    n_micro: int

    @property
    def n_stages(self) -> int:
        return len(self.grid)

    @property
    def n_steps(self) -> int:
        return len(self.grid[0])

    def __str__(self) -> str:
        width = max(len(str(op)) for row in self.grid for op in row if op is not None)
        return "\n".join(
            f"stage {s} | " + " ".join(str(op or ".").ljust(width) for op in row)
            for s, row in enumerate(self.grid)
        )


def gpipe_order(n_stages: int, n_micro: int) -> list[list[Op]]:
    """GPipe: every stage runs F_0..F_{m-1}, then B_0..B_{m-1}."""
    _check_sizes(n_stages, n_micro)
    ops = [Op("F", j) for j in range(n_micro)] + [Op("B", j) for j in range(n_micro)]
    return [list(ops) for _ in range(n_stages)]


def one_f_one_b_order(n_stages: int, n_micro: int) -> list[list[Op]]:
    """1F1B (PipeDream-Flush): p-s-1 warm-up forwards, then one forward, one backward."""
    _check_sizes(n_stages, n_micro)
    orders = []
    for s in range(n_stages):
        warmup = min(n_stages - s - 1, n_micro)
        ops = [Op("F", j) for j in range(warmup)]
        for i in range(n_micro - warmup):
            ops += [Op("F", warmup + i), Op("B", i)]
        ops += [Op("B", j) for j in range(n_micro - warmup, n_micro)]
        orders.append(ops)
    return orders


def build_schedule(orders: list[list[Op]]) -> Schedule:
    """Lay out per-stage operation orders on a time grid, each as early as its inputs allow.

    F_j on stage s needs F_j done on s-1 at an earlier step; B_j needs F_j on s, and B_j on
    s+1 unless s is the last stage. A stage runs its next operation in its own order, or idles.
    """
    n_stages = len(orders)
    n_micro = sum(op.kind == "F" for op in orders[0])
    for s, order in enumerate(orders):
        expected = sorted((k, j) for k in "FB" for j in range(n_micro))
        if sorted((op.kind, op.micro) for op in order) != expected:
            raise ValueError(f"stage {s} must run F and B of micro-batches 0..{n_micro - 1} once")
    done: dict[tuple[int, str, int], int] = {}
    position = [0] * n_stages
    grid: list[list[Op | None]] = [[] for _ in range(n_stages)]
    t = 0
    while any(position[s] < len(orders[s]) for s in range(n_stages)):
        ran = False
        for s in range(n_stages):
            op = orders[s][position[s]] if position[s] < len(orders[s]) else None
            if op is not None and _ready(op, s, n_stages, done, t):
                grid[s].append(op)
                done[(s, op.kind, op.micro)] = t
                position[s] += 1
                ran = True
            else:
                grid[s].append(None)
        if not ran:
            raise ValueError(f"the schedule deadlocks at time step {t}: no stage can proceed")
        t += 1
    return Schedule(tuple(tuple(row) for row in grid), n_micro)


def _ready(op: Op, s: int, n_stages: int, done: dict, t: int) -> bool:
    def before(key: tuple[int, str, int]) -> bool:
        return key in done and done[key] < t

    if op.kind == "F":
        return s == 0 or before((s - 1, "F", op.micro))
    own_forward = before((s, "F", op.micro))
    return own_forward and (s == n_stages - 1 or before((s + 1, "B", op.micro)))


def _check_sizes(n_stages: int, n_micro: int) -> None:
    if n_stages < 1 or n_micro < 1:
        raise ValueError(f"need at least one stage and one micro-batch, got {n_stages}, {n_micro}")


def gpipe_schedule(n_stages: int, n_micro: int) -> Schedule:
    """The GPipe schedule of ``n_micro`` micro-batches over ``n_stages`` stages."""
    return build_schedule(gpipe_order(n_stages, n_micro))


def one_f_one_b_schedule(n_stages: int, n_micro: int) -> Schedule:
    """The 1F1B schedule of ``n_micro`` micro-batches over ``n_stages`` stages."""
    return build_schedule(one_f_one_b_order(n_stages, n_micro))


def bubble_fraction(schedule: Schedule) -> float:
    """Idle cells / all cells of the schedule's grid (stages x time steps)."""
    idle = sum(op is None for row in schedule.grid for op in row)
    return idle / (schedule.n_stages * schedule.n_steps)


def theoretical_bubble(n_stages: int, n_micro: int) -> float:
    """(p - 1) / (m + p - 1): the fill-and-drain fraction of GPipe and 1F1B."""
    _check_sizes(n_stages, n_micro)
    return (n_stages - 1) / (n_micro + n_stages - 1)


def peak_in_flight(schedule: Schedule, stage: int) -> int:
    """Most micro-batches whose forward ran on ``stage`` and whose backward has not yet: how
    many micro-batches' activations the stage must hold at once."""
    live = peak = 0
    for op in schedule.grid[stage]:
        if op is not None:
            live += 1 if op.kind == "F" else -1
            peak = max(peak, live)
    return peak


def split_stages(model: nn.Sequential, n_stages: int) -> list[nn.Sequential]:
    """Cut a ``Sequential`` into ``n_stages`` consecutive groups of children, sizes within one
    of each other (earlier stages take the extra layer). The stages share the parameters."""
    children = list(model.children())
    if not 1 <= n_stages <= len(children):
        raise ValueError(f"cannot cut {len(children)} layers into {n_stages} non-empty stages")
    size, extra = divmod(len(children), n_stages)
    stages, start = [], 0
    for s in range(n_stages):
        end = start + size + (1 if s < extra else 0)
        stages.append(nn.Sequential(*children[start:end]))
        start = end
    return stages


def micro_batches(batch: torch.Tensor, n_micro: int) -> list[torch.Tensor]:
    """Split dimension 0 into ``n_micro`` equal micro-batches."""
    if batch.shape[0] % n_micro:
        raise ValueError(
            f"a batch of {batch.shape[0]} does not split into {n_micro} equal micro-batches "
            "(unequal ones would weight examples unequally in the mean loss)"
        )
    return list(batch.chunk(n_micro))


def run_simulated(
    stages: list[nn.Module],
    inputs: list[torch.Tensor],
    targets: list[torch.Tensor],
    schedule: Schedule,
    loss_fn: LossFn = nn.functional.mse_loss,
) -> float:
    """Execute ``schedule`` in one process; gradients accumulate in the stages' parameters.

    Every stage's input is a detached copy of the previous stage's output (as if it had been
    sent over the network), so the backward pass must hand the gradient across by hand, as the
    ranks do. Returns the loss, mean over micro-batches of ``loss_fn``.
    """
    p, m = len(stages), schedule.n_micro
    if schedule.n_stages != p or len(inputs) != m or len(targets) != m:
        raise ValueError(
            f"{p} stages, {len(inputs)} inputs and {len(targets)} targets for a schedule of "
            f"{schedule.n_stages} stages and {m} micro-batches"
        )
    stage_in: dict[tuple[int, int], torch.Tensor] = {}
    stage_out: dict[tuple[int, int], torch.Tensor] = {}
    grad_in: dict[tuple[int, int], torch.Tensor] = {}
    total = 0.0
    for t in range(schedule.n_steps):
        for s in range(p):
            op = schedule.grid[s][t]
            if op is None:
                continue
            j = op.micro
            if op.kind == "F":
                x = inputs[j] if s == 0 else stage_out[(s - 1, j)].detach().requires_grad_()
                stage_in[(s, j)] = x
                out = stages[s](x)
                if s == p - 1:
                    out = loss_fn(out, targets[j]) / m
                    total += out.item()
                stage_out[(s, j)] = out
            else:
                out = stage_out.pop((s, j))
                out.backward(None if s == p - 1 else grad_in.pop((s + 1, j)))
                x = stage_in.pop((s, j))
                if s > 0:
                    grad_in[(s, j)] = x.grad
    return total


def _send(tensor: torch.Tensor, dst: int, tag: int) -> list[dist.Work]:
    if tensor.dim() > _MAX_DIMS:
        raise ValueError(f"can only send tensors of at most {_MAX_DIMS} dimensions")
    header = torch.zeros(_MAX_DIMS + 1, dtype=torch.int64, device=tensor.device)
    header[0] = tensor.dim()
    header[1 : tensor.dim() + 1] = torch.tensor(tensor.shape, device=tensor.device)
    payload = tensor.detach().contiguous()
    return [dist.isend(header, dst, tag=2 * tag), dist.isend(payload, dst, tag=2 * tag + 1)]


def _recv(src: int, tag: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    header = torch.empty(_MAX_DIMS + 1, dtype=torch.int64, device=device)
    dist.recv(header, src, tag=2 * tag)
    shape = header[1 : int(header[0]) + 1].tolist()
    payload = torch.empty(shape, dtype=dtype, device=device)
    dist.recv(payload, src, tag=2 * tag + 1)
    return payload


@dataclass
class StageRun:
    """One rank's pipeline step: the loss (same on every rank) and its operations' timings."""

    loss: float
    timeline: list[tuple[str, float, float]]


def run_pipeline_stage(
    stage: nn.Module,
    schedule: Schedule,
    inputs: list[torch.Tensor] | None,
    targets: list[torch.Tensor] | None,
    loss_fn: LossFn = nn.functional.mse_loss,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> StageRun:
    """Run this rank's row of ``schedule`` on its ``stage``; rank s is stage s.

    Rank 0 needs the micro-batch ``inputs``, the last rank the ``targets``; activations and
    gradients travel by point-to-point messages (sends are non-blocking, receives block, so
    any schedule that ``build_schedule`` accepts cannot deadlock). Gradients accumulate in
    ``stage``'s parameters; the loss is broadcast from the last rank to all. ``dtype`` and
    ``device`` are those of the activations (the CPU with gloo, this rank's GPU with NCCL).
    """
    rank, p = dist.get_rank(), dist.get_world_size()
    m = schedule.n_micro
    if schedule.n_stages != p:
        raise ValueError(f"a schedule of {schedule.n_stages} stages needs {p} ranks")
    if rank == 0 and (inputs is None or len(inputs) != m):
        raise ValueError(f"rank 0 needs the {m} input micro-batches")
    if rank == p - 1 and (targets is None or len(targets) != m):
        raise ValueError(f"the last rank needs the {m} target micro-batches")
    stage_in: dict[int, torch.Tensor] = {}
    stage_out: dict[int, torch.Tensor] = {}
    pending: list[dist.Work] = []
    timeline: list[tuple[str, float, float]] = []
    device = device or torch.device("cpu")
    total = torch.zeros((), dtype=torch.float64, device=device)
    for op in schedule.grid[rank]:
        if op is None:
            continue
        j, start = op.micro, time.perf_counter()
        if op.kind == "F":
            x = inputs[j] if rank == 0 else _recv(rank - 1, j, dtype, device).requires_grad_()
            stage_in[j] = x
            out = stage(x)
            if rank == p - 1:
                out = loss_fn(out, targets[j]) / m
                total += out.detach().double()
            else:
                pending += _send(out, rank + 1, j)
            stage_out[j] = out
        else:
            out = stage_out.pop(j)
            grad = None if rank == p - 1 else _recv(rank + 1, m + j, dtype, device)
            out.backward(grad)
            x = stage_in.pop(j)
            if rank > 0:
                pending += _send(x.grad, rank - 1, m + j)
        timeline.append((str(op), start, time.perf_counter()))
    for work in pending:
        work.wait()
    dist.broadcast(total, src=p - 1)
    return StageRun(total.item(), timeline)
