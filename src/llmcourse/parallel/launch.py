"""Starting a process group: spawned on one machine, or launched by ``torchrun``.

Every parallel method in this package runs the same program in N processes, one per device,
that talk through ``torch.distributed`` collectives (all-reduce, all-gather, send/recv). The
processes find each other through a *rendezvous*: an address and port that rank 0 listens on,
and each process's ``rank`` (0..N-1) and the ``world_size`` N. The *backend* moves the bytes:
NCCL between CUDA GPUs, gloo between CPU processes (what the tests and the book use).

Two ways to start the processes:

* ``spawn(fn, world_size, args)`` from Python: starts ``world_size`` fresh processes on this
  machine, sets up a gloo (CPU) or NCCL (GPU) group on a free port, calls ``fn(*args)`` in
  each and returns every rank's result. A hang (a rank waiting on a collective the others never
  reach) ends in a ``TimeoutError`` instead of blocking forever.

* ``torchrun`` from the shell, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT`` in every process; the script then calls
  ``init_from_env()``::

      # one machine, 4 processes (one per GPU, or 4 CPU processes with gloo)
      torchrun --standalone --nproc_per_node=4 -m llmcourse.parallel check

      # two machines with 8 GPUs each: run the same line on both; node A's address is the
      # rendezvous endpoint, the job id is any string shared by the nodes
      torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
          --rdzv_endpoint=nodeA.example.org:29500 --rdzv_id=run42 -m llmcourse.parallel check

  With the c10d rendezvous torchrun numbers the nodes itself (no ``--node_rank`` needed) and
  the global rank is node_rank * nproc_per_node + local_rank. ``LOCAL_RANK`` picks the GPU on
  each machine.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits in the group: its rank, the group size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, logs and saves checkpoints; the others stay quiet."""
        return self.rank == 0


def find_free_port() -> int:
    """A TCP port on localhost that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    """NCCL when CUDA GPUs are there, gloo (CPU) otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(
    backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistributedEnv:
    """Join the process group described by torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous ``MASTER_ADDR`` /
    ``MASTER_PORT``); on NCCL each process takes GPU ``LOCAL_RANK``. A collective that waits
    longer than ``timeout_s`` raises instead of hanging.
    """
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"not launched by torchrun: {', '.join(missing)} unset; run e.g. "
            "'torchrun --standalone --nproc_per_node=2 -m llmcourse.parallel check' or use spawn()"
        )
    backend = backend or default_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistributedEnv(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _entry(
    rank: int,
    fn: Callable[..., Any],
    args: tuple,
    world_size: int,
    port: int,
    backend: str,
    timeout_s: float,
    out_dir: str,
    threads: int,
) -> None:
    """What each spawned process runs: join the group, call ``fn``, save its result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(threads)
    init_from_env(backend, timeout_s)
    try:
        result = fn(*args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads: int = 1,
) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` new processes joined in one group; return the results.

    ``fn`` must be importable by name (defined at module level), since the processes are
    started fresh ("spawn", not "fork"). Inside, ``torch.distributed`` is initialised, so ``fn``
    reads its rank with ``dist.get_rank()``. Results (tensors, numbers, lists and dicts of
    them) come back in rank order. A rank that raises makes ``spawn`` raise; a group that has
    not finished after ``timeout_s`` seconds is terminated and ``TimeoutError`` is raised.
    ``threads`` caps each process's CPU threads, so N processes do not fight over the cores.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    backend = backend or default_backend()
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(
            f"NCCL needs one GPU per process: {world_size} processes, "
            f"{torch.cuda.device_count()} GPUs; use backend='gloo' to run on the CPU"
        )
    with tempfile.TemporaryDirectory(prefix="llmcourse_parallel_") as out_dir:
        context = mp.start_processes(
            _entry,
            args=(fn, args, world_size, find_free_port(), backend, timeout_s, out_dir, threads),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout_s
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.terminate()
                for process in context.processes:
                    process.join(5.0)
                raise TimeoutError(
                    f"the {world_size} processes running {fn.__name__} did not finish in "
                    f"{timeout_s:.0f} s (a rank waiting on a collective the others never reach?)"
                )
        return [
            torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(world_size)
        ]
