"""Parallel training on ``torch.distributed``: data, tensor and pipeline parallelism, ZeRO.

* ``launch``: start a process group, with ``spawn`` on one machine (gloo on the CPU for the
  tests and the book) or under ``torchrun`` (``init_from_env``), single- or multi-node.
* ``data_parallel``: every rank a full replica on a shard of the batch; gradients averaged by
  an all-reduce, by hand (``average_gradients``) or by ``DistributedDataParallel``; the ring
  all-reduce played out in one process (``ring_all_reduce``).
* ``tensor_parallel``: Megatron's column- and row-parallel linear layers, the parallel MLP
  and attention (heads split across ranks), and the same split algebra in one process.
* ``pipeline``: GPipe and 1F1B schedules over p stages and m micro-batches, their bubble
  (p - 1) / (m + p - 1), run in one process or across ranks with send/recv.
* ``zero``: ZeRO-1/2 by hand (``ZeroAdam``), PyTorch's FSDP (``fully_shard_model``), and the
  bytes a rank really holds (``measured_bytes``).
* ``memory``: bytes per rank of weights, gradients, Adam states and activations for
  DP/TP/PP/ZeRO combinations (16 bytes per parameter for mixed-precision Adam).
* ``checks``: the multi-process checks the tests and ``python -m llmcourse.parallel check``
  compare with a single process; ``toy``: the tiny seeded model they use.

Run ``python -m llmcourse.parallel --help`` for the command line.
"""

from .data_parallel import (
    average_gradients,
    broadcast_parameters,
    ring_all_reduce,
    shard,
    wrap_ddp,
)
from .launch import DistributedEnv, find_free_port, init_from_env, spawn
from .memory import (
    FP32_ADAM,
    MIXED_ADAM,
    Activations,
    MemoryBreakdown,
    Parallelism,
    Precision,
    activation_bytes,
    memory_per_rank,
    model_state_bytes,
    transformer_params,
)
from .pipeline import (
    bubble_fraction,
    gpipe_schedule,
    one_f_one_b_schedule,
    run_pipeline_stage,
    run_simulated,
    split_stages,
    theoretical_bubble,
)
from .tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelAttention,
    TensorParallelMLP,
    copy_to_parallel,
    reduce_from_parallel,
    simulate_mlp,
)
from .zero import ZeroAdam, fully_shard_model, measured_bytes

__all__ = [
    "FP32_ADAM",
    "MIXED_ADAM",
    "Activations",
    "ColumnParallelLinear",
    "DistributedEnv",
    "MemoryBreakdown",
    "Parallelism",
    "Precision",
    "RowParallelLinear",
    "TensorParallelAttention",
    "TensorParallelMLP",
    "ZeroAdam",
    "activation_bytes",
    "average_gradients",
    "broadcast_parameters",
    "bubble_fraction",
    "copy_to_parallel",
    "find_free_port",
    "fully_shard_model",
    "gpipe_schedule",
    "init_from_env",
    "measured_bytes",
    "memory_per_rank",
    "model_state_bytes",
    "one_f_one_b_schedule",
    "reduce_from_parallel",
    "ring_all_reduce",
    "run_pipeline_stage",
    "run_simulated",
    "shard",
    "simulate_mlp",
    "spawn",
    "split_stages",
    "theoretical_bubble",
    "transformer_params",
    "wrap_ddp",
]
