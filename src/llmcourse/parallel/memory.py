"""How many bytes each rank holds: weights, gradients, optimizer states and activations.

**Model states.** Mixed-precision Adam keeps, per parameter, a 16-bit weight (2 bytes) and a
16-bit gradient (2 bytes) for the forward and backward passes, and for the update an fp32
master copy of the weight, Adam's first moment m and second moment v (4 + 4 + 4 = 12 bytes,
K = 12 in the ZeRO paper): 2 + 2 + 12 = **16 bytes per parameter**. Plain fp32 Adam needs
4 + 4 + 8 = 16 as well (the fp32 weight is its own master copy).

Tensor parallelism (t ranks) and pipeline parallelism (p stages) divide the parameters a rank
holds by t p. Data parallelism (d ranks) replicates them, unless ZeRO shards the replicas'
states over the d ranks: stage 1 the optimizer states, stage 2 also the gradients, stage 3
also the weights (= FSDP). With Psi parameters per model-parallel shard:

    plain DP   (2 + 2 + K) Psi          ZeRO-2    2 Psi + (2 + K) Psi / d
    ZeRO-1     (2 + 2) Psi + K Psi / d  ZeRO-3    (2 + 2 + K) Psi / d

The ZeRO paper's example (Rajbhandari et al. 2020, figure 1): Psi = 7.5 B, d = 64 gives
120 GB, 31.4 GB, 16.6 GB and 1.9 GB.

**Activations** (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", 16-bit activations, per layer and micro-batch of b sequences of s tokens,
hidden size h, a heads):

    no parallelism:                    s b h (34 + 5 a s / h)
    tensor parallel over t:            s b h (10 + 24 / t + 5 a s / (h t))
    ... with sequence parallelism:     s b h (34 + 5 a s / h) / t
    full recomputation:                2 s b h (/ t with sequence parallelism): the layer input

The 5 a s / h term is the attention score matrix, its softmax and dropout mask; a fused
(flash) attention kernel does not store them, which drops that term. Under pipeline
parallelism a stage holds L/p layers for every micro-batch in flight: m of them under GPipe,
up to p on the first stage under 1F1B (``pipeline.peak_in_flight``).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9  # the ZeRO paper's GB are 10^9 bytes


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter for the weight, its gradient, and the optimizer's states (K)."""

    weight: float = 2.0
    grad: float = 2.0
    optimizer: float = 12.0


MIXED_ADAM = Precision(2.0, 2.0, 12.0)  # bf16/fp16 weights and grads, fp32 master + m + v
FP32_ADAM = Precision(4.0, 4.0, 8.0)  # fp32 weights and grads, m + v


@dataclass(frozen=True)
class Parallelism:
    """Degrees of data (``dp``), tensor (``tp``) and pipeline (``pp``) parallelism and the
    ZeRO stage (0 = none, 1 optimizer states, 2 + gradients, 3 + weights) over ``dp``."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    zero: int = 0

    def __post_init__(self) -> None:
        if min(self.dp, self.tp, self.pp) < 1:
            raise ValueError(f"parallel degrees must be >= 1, got {self}")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {self.zero}")

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp


@dataclass(frozen=True)
class Activations:
    """A Transformer's shape for the activation estimate: sequence length, micro-batch size,
    hidden size, heads and layers; ``in_flight`` micro-batches held per stage (``None``: the
    1F1B first stage, p of them)."""

    seq_len: int
    micro_batch: int
    hidden: int
    heads: int
    layers: int
    sequence_parallel: bool = False
    recompute: bool = False
    flash_attention: bool = False
    in_flight: int | None = None


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes one rank holds, by kind."""

    weights: float
    gradients: float
    optimizer: float
    activations: float = 0.0

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + self.activations

    def in_gb(self) -> dict[str, float]:
        """The same figures in GB (10^9 bytes), with the model-state sum and the total."""
        return {
            "weights": self.weights / GB,
            "gradients": self.gradients / GB,
            "optimizer": self.optimizer / GB,
            "activations": self.activations / GB,
            "model_states": self.model_states / GB,
            "total": self.total / GB,
        }


def model_state_bytes(
    n_params: float, parallel: Parallelism = Parallelism(), precision: Precision = MIXED_ADAM
) -> MemoryBreakdown:
    """Weights, gradients and optimizer states per rank (the ZeRO formulas above)."""
    if n_params < 0:
        raise ValueError(f"n_params must be >= 0, got {n_params}")
    psi = n_params / (parallel.tp * parallel.pp)
    d = parallel.dp
    return MemoryBreakdown(
        weights=precision.weight * psi / (d if parallel.zero >= 3 else 1),
        gradients=precision.grad * psi / (d if parallel.zero >= 2 else 1),
        optimizer=precision.optimizer * psi / (d if parallel.zero >= 1 else 1),
    )


def activation_bytes_per_layer(shape: Activations, tp: int = 1) -> float:
    """Korthikanti et al.'s bytes of stored activations for one layer and one micro-batch."""
    s, b, h, a = shape.seq_len, shape.micro_batch, shape.hidden, shape.heads
    if min(s, b, h, a, tp) < 1:
        raise ValueError(f"sizes must be positive: {shape}, tp = {tp}")
    shard = tp if shape.sequence_parallel else 1
    if shape.recompute:
        return 2 * s * b * h / shard
    scores = 0.0 if shape.flash_attention else 5 * a * s / h
    if shape.sequence_parallel:
        return s * b * h * (34 + scores) / tp
    return s * b * h * (10 + 24 / tp + scores / tp)


def activation_bytes(shape: Activations, parallel: Parallelism = Parallelism()) -> float:
    """Activations held by the busiest pipeline stage: L/p layers times micro-batches in flight."""
    if shape.layers % parallel.pp:
        raise ValueError(f"{shape.layers} layers do not split evenly into {parallel.pp} stages")
    in_flight = parallel.pp if shape.in_flight is None else shape.in_flight
    per_layer = activation_bytes_per_layer(shape, parallel.tp)
    return per_layer * (shape.layers // parallel.pp) * in_flight


def memory_per_rank(
    n_params: float,
    parallel: Parallelism = Parallelism(),
    precision: Precision = MIXED_ADAM,
    activations: Activations | None = None,
) -> MemoryBreakdown:
    """Model states plus (when a shape is given) activations, in bytes for one rank."""
    states = model_state_bytes(n_params, parallel, precision)
    held = 0.0 if activations is None else activation_bytes(activations, parallel)
    return MemoryBreakdown(states.weights, states.gradients, states.optimizer, held)


def transformer_params(hidden: int, layers: int, vocab: int, seq_len: int = 0) -> int:
    """Parameters of a GPT-style model: 12 h^2 + 13 h per layer (attention 4 h^2 + 4 h, MLP
    8 h^2 + 5 h, two LayerNorms 4 h), the token (and learned position) embeddings, a final
    LayerNorm; the output head tied to the embedding."""
    return layers * (12 * hidden**2 + 13 * hidden) + (vocab + seq_len) * hidden + 2 * hidden
