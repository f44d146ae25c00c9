"""What pretraining costs: FLOPs, GPU-hours, energy and money, and how to spend a budget.

**FLOPs.** A weight that multiplies a token's activation costs one multiply and one add:
2 FLOPs per parameter per token in the forward pass. The backward pass does that product twice
more, once for the gradient of the activation (to pass back) and once for the gradient of the
weight: 4 FLOPs. Training a model of ``N`` parameters on ``D`` tokens therefore costs

    C = 2 N D (forward) + 4 N D (backward) = 6 N D

(Kaplan et al. 2020; attention over the context adds ``12 L d T`` per token, a few per cent at
these scales; ``llmcourse.causal_lm.flops`` counts it.)

**Time, energy, money.** A GPU of peak ``P`` FLOP/s that keeps a fraction ``MFU`` (model FLOPs
utilisation) of it busy with the model's arithmetic needs

    GPU-hours = C / (MFU * P * 3600)

Energy is GPU-hours times the power drawn per GPU, times the data centre's PUE (power usage
effectiveness: the total facility power over the IT power, about 1.1 for a modern one); money
is GPU-hours times a rental price. Read backwards, a published GPU-hour figure and ``6 N D``
give the MFU the run must have achieved.

**Spending a budget.** For ``C`` FLOPs, Hoffmann et al. (2022) found the loss lowest when
parameters and tokens grow together, about 20 tokens per parameter: ``D = 20 N``, so
``N = sqrt(C / 120)`` (``chinchilla_optimal``; ``scaling.ScalingLaw.optimal_allocation`` does
the same from a fitted law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

FORWARD_FLOPS = 2
"""FLOPs per parameter per token of the forward pass (a multiply and an add)."""
BACKWARD_FLOPS = 4
"""FLOPs per parameter per token of the backward pass (activation and weight gradients)."""

A100_BF16 = 312e12
"""Dense bf16 peak FLOP/s of an NVIDIA A100 (40 or 80 GB), from NVIDIA's data sheet."""


def _check(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def forward_flops(n_params: float, n_tokens: float) -> float:
    """``2 N D``: the forward passes over ``D`` tokens."""
    _check(n_params=n_params, n_tokens=n_tokens)
    return FORWARD_FLOPS * n_params * n_tokens


def backward_flops(n_params: float, n_tokens: float) -> float:
    """``4 N D``: the backward passes over ``D`` tokens."""
    _check(n_params=n_params, n_tokens=n_tokens)
    return BACKWARD_FLOPS * n_params * n_tokens


def training_flops(n_params: float, n_tokens: float) -> float:
    """``C = 6 N D``: forward plus backward over ``D`` tokens."""
    return forward_flops(n_params, n_tokens) + backward_flops(n_params, n_tokens)


def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """The GPU-hours ``flops`` take at ``mfu`` of a ``peak_flops`` FLOP/s GPU."""
    _check(flops=flops, peak_flops=peak_flops, mfu=mfu)
    if mfu > 1:
        raise ValueError(f"mfu is a fraction of the peak, at most 1, got {mfu}")
    return flops / (mfu * peak_flops * 3600)


def implied_mfu(flops: float, gpu_hours: float, peak_flops: float) -> float:
    """The MFU a run of ``flops`` must have reached to take ``gpu_hours``:
    ``flops / (gpu_hours * 3600 * peak_flops)``."""
    _check(flops=flops, gpu_hours=gpu_hours, peak_flops=peak_flops)
    return flops / (gpu_hours * 3600 * peak_flops)


def energy_kwh(gpu_hours: float, watts_per_gpu: float, pue: float = 1.0) -> float:
    """Energy in kWh: GPU-hours times kW per GPU times the facility's PUE (>= 1)."""
    _check(gpu_hours=gpu_hours, watts_per_gpu=watts_per_gpu, pue=pue)
    if pue < 1:
        raise ValueError(f"a PUE is total power over IT power, at least 1, got {pue}")
    return gpu_hours * watts_per_gpu / 1000 * pue


def chinchilla_optimal(compute: float, tokens_per_param: float = 20.0) -> tuple[float, float]:
    """``(N, D)`` with ``6 N D = compute`` and ``D = tokens_per_param * N``."""
    _check(compute=compute, tokens_per_param=tokens_per_param)
    n = math.sqrt(compute / (6 * tokens_per_param))
    return n, tokens_per_param * n


@dataclass(frozen=True)
class Hardware:
    """The assumptions that turn FLOPs into hours, energy and money; every figure is a stated
    assumption, to be replaced by your own. The default: A100s at 40 % MFU, 400 W each (their
    TDP), in a data centre of PUE 1.1, rented at 2 dollars per GPU-hour."""

    name: str = "A100"
    peak_flops: float = A100_BF16
    mfu: float = 0.40
    watts: float = 400.0
    pue: float = 1.1
    usd_per_gpu_hour: float = 2.0


@dataclass(frozen=True)
class TrainingCost:
    """The bill of one training run (see ``training_cost``)."""

    n_params: float
    n_tokens: float
    flops: float
    gpu_hours: float
    energy_kwh: float
    usd: float
    hardware: Hardware = field(default_factory=Hardware)

    def days(self, n_gpus: int) -> float:
        """Wall-clock days on ``n_gpus`` GPUs (perfect scaling)."""
        if n_gpus < 1:
            raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
        return self.gpu_hours / n_gpus / 24


def training_cost(
    n_params: float, n_tokens: float, hardware: Hardware | None = None
) -> TrainingCost:
    """FLOPs (``6 N D``), GPU-hours, kWh and dollars of training ``N`` parameters on ``D``
    tokens under ``hardware``'s assumptions."""
    hw = hardware or Hardware()
    flops = training_flops(n_params, n_tokens)
    hours = gpu_hours(flops, hw.peak_flops, hw.mfu)
    _check(usd_per_gpu_hour=hw.usd_per_gpu_hour)
    return TrainingCost(
        n_params=n_params,
        n_tokens=n_tokens,
        flops=flops,
        gpu_hours=hours,
        energy_kwh=energy_kwh(hours, hw.watts, hw.pue),
        usd=hours * hw.usd_per_gpu_hour,
        hardware=hw,
    )


@dataclass(frozen=True)
class PublishedRun:
    """A training run as its paper reports it (``None`` where the paper gives no figure)."""

    name: str
    n_params: float
    n_tokens: float
    source: str
    reported_flops: float | None = None
    gpu: str | None = None
    peak_flops: float | None = None
    gpu_hours: float | None = None
    watts: float | None = None
    tco2eq: float | None = None

    @property
    def flops(self) -> float:
        """``6 N D`` for this run."""
        return training_flops(self.n_params, self.n_tokens)

    @property
    def implied_mfu(self) -> float:
        """The MFU the reported GPU-hours imply, from ``6 N D``."""
        if self.gpu_hours is None or self.peak_flops is None:
            raise ValueError(f"{self.name}: the paper reports no GPU-hours to compare with")
        return implied_mfu(self.flops, self.gpu_hours, self.peak_flops)


_LLAMA2 = "Touvron et al. 2023, Llama 2, table 2 (A100-80GB, 2.0T tokens)"
PUBLISHED: dict[str, PublishedRun] = {
    "gpt3-175b": PublishedRun(
        "GPT-3 175B", 174.6e9, 300e9, "Brown et al. 2020, table D.1 (3.14e23 FLOPs, 3640 PF-days)",
        reported_flops=3.14e23,
    ),
    "llama2-7b": PublishedRun(
        "Llama 2 7B", 7e9, 2e12, _LLAMA2, gpu="A100-80GB", peak_flops=A100_BF16,
        gpu_hours=184_320, watts=400, tco2eq=31.22,
    ),
    "llama2-13b": PublishedRun(
        "Llama 2 13B", 13e9, 2e12, _LLAMA2, gpu="A100-80GB", peak_flops=A100_BF16,
        gpu_hours=368_640, watts=400, tco2eq=62.44,
    ),
    "llama2-34b": PublishedRun(
        "Llama 2 34B", 34e9, 2e12, _LLAMA2, gpu="A100-80GB", peak_flops=A100_BF16,
        gpu_hours=1_038_336, watts=350, tco2eq=153.90,
    ),
    "llama2-70b": PublishedRun(
        "Llama 2 70B", 70e9, 2e12, _LLAMA2, gpu="A100-80GB", peak_flops=A100_BF16,
        gpu_hours=1_720_320, watts=400, tco2eq=291.42,
    ),
}  # fmt: skip
"""Published runs the course checks ``6 N D`` against. Parameter counts are the papers' round
names except GPT-3's 174.6 B (its table D.1); Llama 2 70B has 69.0 B parameters, which changes
its implied MFU by about 1.5 %."""

LLAMA2_TOTAL_GPU_HOURS = 3_311_616
"""The Llama 2 paper's total A100-80GB GPU-hours for pretraining the four sizes."""


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.pretrain.compute``: the bill of one run, or the published checks."""
    import argparse

    default = Hardware()
    parser = argparse.ArgumentParser(
        description="FLOPs (6ND), GPU-hours, energy and dollars of a training run; unset "
        f"hardware options keep the stated defaults ({default})."
    )
    parser.add_argument("--params", type=float, help="N, parameters (e.g. 7e9)")
    parser.add_argument("--tokens", type=float, help="D, training tokens (default: 20 N)")
    parser.add_argument("--flops", type=float, help="a budget C instead: N and D by D = 20 N")
    parser.add_argument("--peak", type=float, help="peak FLOP/s of one GPU")
    parser.add_argument("--mfu", type=float, help="model FLOPs utilisation, 0-1")
    parser.add_argument("--watts", type=float, help="power per GPU (W)")
    parser.add_argument("--pue", type=float, help="the data centre's PUE (>= 1)")
    parser.add_argument("--price", type=float, help="dollars per GPU-hour")
    parser.add_argument("--gpus", type=int, default=1024, help="GPUs, for the wall-clock days")
    args = parser.parse_args(argv)

    if args.params is None and args.flops is None:
        for run in PUBLISHED.values():
            mfu = f", implied MFU {run.implied_mfu:.1%}" if run.gpu_hours else ""
            print(f"{run.name}: 6ND = {run.flops:.3g} FLOPs{mfu}  [{run.source}]")
        return 0
    changes = {"peak_flops": args.peak, "mfu": args.mfu, "watts": args.watts, "pue": args.pue,
               "usd_per_gpu_hour": args.price}  # fmt: skip
    hw = replace(default, **{k: v for k, v in changes.items() if v is not None})
    if args.flops is not None:
        n, d = chinchilla_optimal(args.flops)
    else:
        n = args.params
        d = args.tokens if args.tokens is not None else 20 * n
    try:
        cost = training_cost(n, d, hw)
    except ValueError as err:
        parser.error(str(err))
    print(f"N = {n:.4g} parameters, D = {d:.4g} tokens, C = 6ND = {cost.flops:.4g} FLOPs")
    print(f"{cost.gpu_hours:,.0f} GPU-hours ({cost.days(args.gpus):,.1f} days on {args.gpus} "
          f"GPUs), {cost.energy_kwh:,.0f} kWh, {cost.usd:,.0f} dollars")  # fmt: skip
    print(f"assumptions: {hw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
