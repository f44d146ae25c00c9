"""What scale costs: training and serving a model, checked against published runs, and what
the course's own runs cost.

Chapter 8 (``llmcourse.pretrain.compute``) holds the formulas this module builds on, and its
table of published runs (``PUBLISHED``); nothing here repeats them.

**Training.** ``C = 6 N D`` FLOPs, ``C / (MFU * P * 3600)`` GPU-hours on GPUs of peak ``P``,
energy = GPU-hours x watts x PUE, money = GPU-hours x the rental price (``compute.training_cost``).
``HARDWARE`` states the assumptions per GPU kind; every one of them is an input to replace.

**Serving.** Generating one token runs the forward pass only: ``2 N`` FLOPs (plus ``4 L d T``
for attention over a context of ``T`` tokens, a third of the training term that
``causal_lm.flops`` counts). So serving ``3 D`` tokens costs as many FLOPs as training on
``D``. Serving also holds every sequence's keys and values: the KV cache,
``2 L n_kv d_head T B`` values (``kv_cache.kv_cache_bytes``), which is what limits the batch.

**Published checks.** ``published_checks`` sets ``6 N D`` beside what GPT-3's and Llama 2's
papers report: GPT-3's FLOPs, Llama 2's GPU-hours (hence the MFU they imply on A100s), power
and emissions (hence the grid's carbon intensity they imply). Seed 004 retells a talk's round
figures for Llama 2 70B (6,000 GPUs, 12 days, about 2 million dollars): ``SEED_004_LLAMA2``.

**People and power.** Seed 001 ("money is all you need") names three costs: the cluster, the
team (data scientists, engineers, researchers) and the electricity. The first and last follow
from the formulas; the team is an input (``team_usd``): no paper states it, so none is assumed.

**The course's runs** record the seconds they took on how many CPU threads (``course_runs``,
``course_models.info``, the SFT and RLHF records). ``course_costs`` reads those records (never
trains) and prices them at a stated power per busy thread and a stated electricity price
(``CpuPower``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmcourse.causal_lm.flops import PEAK_BF16_FLOPS, flops_per_token
from llmcourse.kv_cache import kv_cache_bytes
from llmcourse.pretrain.compute import (
    LLAMA2_TOTAL_GPU_HOURS,
    PUBLISHED,
    Hardware,
    TrainingCost,
    energy_kwh,
    forward_flops,
    gpu_hours,
    training_cost,
)

HARDWARE: dict[str, Hardware] = {
    "a100": Hardware(),
    "h100": Hardware("H100 SXM", PEAK_BF16_FLOPS["H100 SXM"], 0.40, 700.0, 1.1, 3.0),
    "h200": Hardware("H200 SXM", PEAK_BF16_FLOPS["H200 SXM"], 0.40, 700.0, 1.1, 3.5),
    "l4": Hardware("L4", PEAK_BF16_FLOPS["L4"], 0.40, 72.0, 1.1, 0.8),
}
"""Stated assumptions per GPU kind: the dense bf16 peak from the vendor's data sheet
(``causal_lm.flops.PEAK_BF16_FLOPS``), 40 % MFU, the board power (TDP) from the data sheet, a
PUE of 1.1 and a rental price in dollars per GPU-hour of the order cloud price lists showed in
2024-2025. The prices are the least certain figure: replace them with your own."""


def hardware(name: str, **changes: float) -> Hardware:
    """``HARDWARE[name]`` with some assumptions changed (``mfu=0.5``, ``usd_per_gpu_hour=1``)."""
    if name not in HARDWARE:
        raise ValueError(f"unknown hardware {name!r}: choose from {', '.join(HARDWARE)}")
    unknown = set(changes) - set(Hardware.__dataclass_fields__)
    if unknown:
        raise ValueError(f"Hardware has no field(s) {sorted(unknown)}")
    return replace(HARDWARE[name], **changes)


def what_would_it_cost(
    n_params: float, n_tokens: float, names: tuple[str, ...] | None = None, **changes: float
) -> dict[str, TrainingCost]:
    """``compute.training_cost`` of ``N`` parameters on ``D`` tokens on each GPU kind in
    ``names`` (default: all of ``HARDWARE``), the same ``changes`` applied to each."""
    return {
        name: training_cost(n_params, n_tokens, hardware(name, **changes))
        for name in (names or tuple(HARDWARE))
    }


def inference_flops(
    n_params: float, n_tokens: float, n_layer: int = 0, d_model: int = 0, context: int = 0
) -> float:
    """FLOPs of generating ``n_tokens`` tokens: ``2 N`` each (``compute.forward_flops``), plus
    the attention over a ``context``-token history, ``4 L d T`` each (the forward third of
    ``causal_lm.flops``'s ``12 L d T``); leave ``n_layer``/``d_model``/``context`` at 0 to
    count ``2 N`` alone."""
    attention = flops_per_token(0, n_layer, d_model, context) / 3
    return forward_flops(n_params, n_tokens) + attention * n_tokens


@dataclass(frozen=True)
class InferenceCost:
    """The bill of generating ``n_tokens`` tokens (see ``inference_cost``)."""

    n_params: float
    n_tokens: float
    flops: float
    gpu_hours: float
    energy_kwh: float
    usd: float
    kv_cache_bytes: int
    weight_bytes: float
    hardware: Hardware

    @property
    def usd_per_million_tokens(self) -> float:
        """Dollars per million generated tokens."""
        return self.usd / self.n_tokens * 1e6


def inference_cost(
    n_params: float,
    n_tokens: float,
    hardware: Hardware | None = None,
    *,
    n_layer: int = 0,
    d_model: int = 0,
    n_kv_heads: int = 0,
    head_dim: int = 0,
    context: int = 0,
    batch_size: int = 1,
    bytes_per_value: int = 2,
) -> InferenceCost:
    """FLOPs, GPU-hours, kWh and dollars of generating ``n_tokens`` tokens at ``hardware``'s
    MFU, and the memory it holds: the weights (``N x bytes_per_value``) and the KV cache of
    ``batch_size`` sequences of ``context`` tokens. Decoding one sequence at a time reaches a
    far lower MFU than training (each token reads every weight from memory for only ``2 N``
    FLOPs), so state the MFU of the serving setup, not of training."""
    hw = hardware or Hardware()
    flops = inference_flops(n_params, n_tokens, n_layer, d_model, context)
    hours = gpu_hours(flops, hw.peak_flops, hw.mfu)
    kv = kv_cache_bytes(n_layer, n_kv_heads, head_dim, context, batch_size, bytes_per_value)
    return InferenceCost(
        n_params=n_params,
        n_tokens=n_tokens,
        flops=flops,
        gpu_hours=hours,
        energy_kwh=energy_kwh(hours, hw.watts, hw.pue),
        usd=hours * hw.usd_per_gpu_hour,
        kv_cache_bytes=kv,
        weight_bytes=n_params * bytes_per_value,
        hardware=hw,
    )


def break_even_tokens(n_tokens: float) -> float:
    """Generated tokens whose ``2 N`` FLOPs each add up to training's ``6 N D``: ``3 D``."""
    return 3 * n_tokens


# -- the published checks -------------------------------------------------------------------

SEED_004_LLAMA2 = {"gpus": 6000, "days": 12, "usd": 2e6, "weights_gb": 140, "text_tb": 10}
"""Llama 2 70B in round figures, as seed 004 retells A. Karpathy's talk "Intro to Large
Language Models" (2023): about 6,000 GPUs for 12 days, about 2 million dollars, a 140 GB file
of weights from about 10 TB of text. A talk's round numbers, not the paper's."""


def published_checks() -> list[dict[str, Any]]:
    """One row per run of ``compute.PUBLISHED``: ``6 N D`` and, where the paper gives them,
    its FLOPs (and the ratio), GPU-hours, the MFU they imply, the energy (GPU-hours x watts,
    no PUE, as the Llama 2 paper counts it), the emissions and the carbon intensity
    (kg CO2eq per kWh) that emissions over energy imply."""
    rows = []
    for key, run in PUBLISHED.items():
        row: dict[str, Any] = {
            "key": key,
            "name": run.name,
            "n_params": run.n_params,
            "n_tokens": run.n_tokens,
            "flops_6nd": run.flops,
            "source": run.source,
        }
        if run.reported_flops is not None:
            row["reported_flops"] = run.reported_flops
            row["ratio"] = run.flops / run.reported_flops
        if run.gpu_hours is not None:
            row["gpu_hours"] = run.gpu_hours
            row["implied_mfu"] = run.implied_mfu
        if run.gpu_hours is not None and run.watts is not None:
            row["energy_kwh"] = energy_kwh(run.gpu_hours, run.watts)
            if run.tco2eq is not None:
                row["tco2eq"] = run.tco2eq
                row["kg_co2_per_kwh"] = run.tco2eq * 1000 / row["energy_kwh"]
        rows.append(row)
    return rows


def llama2_totals() -> dict[str, float]:
    """The four Llama 2 sizes summed (GPU-hours, tCO2eq, kWh), beside the paper's total."""
    runs = [run for key, run in PUBLISHED.items() if key.startswith("llama2-")]
    return {
        "gpu_hours": sum(run.gpu_hours or 0 for run in runs),
        "paper_gpu_hours": LLAMA2_TOTAL_GPU_HOURS,
        "tco2eq": sum(run.tco2eq or 0 for run in runs),
        "energy_kwh": sum(energy_kwh(run.gpu_hours, run.watts) for run in runs),  # type: ignore[arg-type]
    }


def seed_004_check() -> dict[str, float]:
    """Seed 004's round figures for Llama 2 70B against the paper: the GPU-hours they make,
    the paper's GPU-hours over them, and the dollars per GPU-hour the 2 million imply."""
    talk_hours = SEED_004_LLAMA2["gpus"] * SEED_004_LLAMA2["days"] * 24
    paper = PUBLISHED["llama2-70b"]
    assert paper.gpu_hours is not None
    return {
        "talk_gpu_hours": talk_hours,
        "paper_gpu_hours": paper.gpu_hours,
        "ratio": paper.gpu_hours / talk_hours,
        "usd_per_gpu_hour": SEED_004_LLAMA2["usd"] / paper.gpu_hours,
        "bf16_weights_gb": paper.n_params * 2 / 1e9,
    }


def team_usd(people: float, months: float, usd_per_person_year: float) -> float:
    """What a team costs: people x months / 12 x the yearly cost of one person, all three
    inputs (seed 001 names the team as a cost and gives no figure, nor does any paper here)."""
    for name, value in (
        ("people", people),
        ("months", months),
        ("usd_per_person_year", usd_per_person_year),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return people * months / 12 * usd_per_person_year


# -- the course's own runs ------------------------------------------------------------------


@dataclass(frozen=True)
class CpuPower:
    """Stated assumptions that price a CPU run: the power one busy thread draws (about a
    server CPU's TDP over its cores, e.g. 280 W / 32 cores ~ 9 W, rounded up to include
    memory and the rest of the machine) and the price of a kWh. Replace them with yours."""

    watts_per_thread: float = 10.0
    usd_per_kwh: float = 0.30


@dataclass(frozen=True)
class CourseRunCost:
    """One cached course run: where its record came from, its seconds and threads, and what
    they cost under ``CpuPower``."""

    name: str
    kind: str
    seconds: float
    threads: int
    trained_on: str
    energy_kwh: float
    usd: float


def _run_record(folder: Path) -> tuple[str, dict[str, Any]] | None:
    """The record a cached run left in ``folder`` and its kind, or ``None`` when none is there:
    ``recipe.json`` (a course checkpoint, ``course_models.info``), ``rlhf.json`` (a chapter-10
    run; ``rlhf.info`` would train a missing run, so the file is read directly), ``run.json``
    (a chapter 12-14 run, ``course_runs.run_record``), or the ``sft`` section of
    ``config.json`` (a chapter-9 fine-tune)."""
    from llmcourse import course_runs

    if (folder / "recipe.json").is_file():
        return "checkpoint", json.loads((folder / "recipe.json").read_text(encoding="utf-8"))
    if (folder / "rlhf.json").is_file():
        return "rlhf", json.loads((folder / "rlhf.json").read_text(encoding="utf-8"))
    if (folder / course_runs.RUN_FILE).is_file():
        return "run", course_runs.run_record(folder)
    if (folder / "config.json").is_file():
        sft = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("sft")
        if isinstance(sft, dict):
            return "sft", sft
    return None


def course_costs(
    root: str | Path | None = None, power: CpuPower | None = None
) -> list[CourseRunCost]:
    """Every cached course run under ``root`` (default ``cache_dir()/course_models``) that
    recorded its seconds, priced at ``power``'s assumptions: kWh = seconds x threads x watts
    per thread / 3.6e6, sorted by name. Runs not trained yet are simply absent: nothing is
    trained here. A record without ``threads`` counts one."""
    from llmcourse.data import cache_dir

    power = power or CpuPower()
    root = Path(root) if root is not None else cache_dir() / "course_models"
    if not root.is_dir():
        return []
    costs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and ".tmp-" not in p.name):
        found = _run_record(folder)
        if found is None or not isinstance(found[1].get("seconds"), int | float):
            continue
        kind, record = found
        seconds, threads = float(record["seconds"]), int(record.get("threads") or 1)
        kwh = seconds * threads * power.watts_per_thread / 3.6e6
        costs.append(
            CourseRunCost(
                folder.name,
                kind,
                seconds,
                threads,
                str(record.get("trained_on", "")),
                kwh,
                kwh * power.usd_per_kwh,
            )
        )
    return costs


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.costs``: training or serving costs, the published checks, or the
    course's own runs."""
    import argparse

    parser = argparse.ArgumentParser(
        description="What scale costs: training (6ND) and serving (2N per token) on stated "
        "hardware assumptions, the published checks, and the course's cached runs."
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in (
        ("train", "training cost of N parameters on D tokens"),
        ("infer", "cost of generating tokens with an N-parameter model"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--params", type=float, required=True, help="N, parameters (e.g. 7e9)")
        p.add_argument("--tokens", type=float, help="D (train: default 20 N) or tokens generated")
        p.add_argument("--hardware", choices=sorted(HARDWARE), help="default: all kinds (train)")
        p.add_argument("--mfu", type=float, help="model FLOPs utilisation, 0-1")
        p.add_argument("--price", type=float, help="dollars per GPU-hour")
        p.add_argument("--pue", type=float, help="the data centre's PUE (>= 1)")
        p.add_argument("--watts", type=float, help="power per GPU (W)")
    infer = sub.choices["infer"]
    infer.add_argument("--layers", type=int, default=0, help="L, for attention and KV cache")
    infer.add_argument("--d-model", type=int, default=0, help="d, for the attention FLOPs")
    infer.add_argument("--kv-heads", type=int, default=0, help="KV heads, for the cache")
    infer.add_argument("--head-dim", type=int, default=0, help="head size, for the cache")
    infer.add_argument("--context", type=int, default=0, help="T, tokens of context")
    infer.add_argument("--batch", type=int, default=1, help="sequences served at once")
    sub.add_parser("published", help="6ND against GPT-3's and Llama 2's papers")
    course = sub.add_parser("course", help="what the course's cached runs cost on a CPU")
    course.add_argument("--watts-per-thread", type=float, help="default: CpuPower's")
    course.add_argument("--usd-per-kwh", type=float, help="default: CpuPower's")
    args = parser.parse_args(argv)

    if args.what == "published":
        for row in published_checks():
            extra = (
                f", paper {row['reported_flops']:.3g} (x{row['ratio']:.3f})"
                if "ratio" in row
                else ""
            )
            if "implied_mfu" in row:
                extra += f", {row['gpu_hours']:,.0f} GPU-hours -> MFU {row['implied_mfu']:.1%}"
            if "kg_co2_per_kwh" in row:
                extra += f", {row['kg_co2_per_kwh']:.3f} kg CO2eq/kWh"
            print(f"{row['name']}: 6ND = {row['flops_6nd']:.3g}{extra}")
        seed = seed_004_check()
        print(
            f"seed 004: 6000 GPUs x 12 days = {seed['talk_gpu_hours']:,.0f} GPU-hours "
            f"(paper x{seed['ratio']:.3f}); $2M -> ${seed['usd_per_gpu_hour']:.2f}/GPU-hour"
        )
        return 0
    if args.what == "course":
        changes = {"watts_per_thread": args.watts_per_thread, "usd_per_kwh": args.usd_per_kwh}
        power = replace(CpuPower(), **{k: v for k, v in changes.items() if v is not None})
        runs = course_costs(power=power)
        for run in runs:
            print(
                f"{run.name:28s} {run.kind:10s} {run.seconds:8.1f} s x {run.threads} thread(s)"
                f"  {run.energy_kwh * 1000:7.2f} Wh  ${run.usd:.4f}"
            )
        print(
            f"{len(runs)} runs, {sum(r.seconds for r in runs) / 3600:.2f} h, "
            f"{sum(r.energy_kwh for r in runs) * 1000:.1f} Wh at {power}"
        )
        return 0

    changes = {
        "mfu": args.mfu,
        "usd_per_gpu_hour": args.price,
        "pue": args.pue,
        "watts": args.watts,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    try:
        if args.what == "train":
            tokens = args.tokens if args.tokens is not None else 20 * args.params
            names = (args.hardware,) if args.hardware else None
            for name, cost in what_would_it_cost(args.params, tokens, names, **changes).items():
                print(
                    f"{name}: {cost.flops:.3g} FLOPs, {cost.gpu_hours:,.0f} GPU-hours, "
                    f"{cost.energy_kwh:,.0f} kWh, ${cost.usd:,.0f}  [{cost.hardware}]"
                )
            return 0
        tokens = args.tokens if args.tokens is not None else 1e6
        cost = inference_cost(
            args.params,
            tokens,
            hardware(args.hardware or "a100", **changes),
            n_layer=args.layers,
            d_model=args.d_model,
            n_kv_heads=args.kv_heads,
            head_dim=args.head_dim,
            context=args.context,
            batch_size=args.batch,
        )
    except ValueError as err:
        parser.error(str(err))
    print(
        f"{tokens:.3g} tokens: {cost.flops:.3g} FLOPs, {cost.gpu_hours:,.2f} GPU-hours, "
        f"${cost.usd_per_million_tokens:.3f} per million tokens; weights "
        f"{cost.weight_bytes / 1e9:.2f} GB, KV cache {cost.kv_cache_bytes / 1e9:.2f} GB  "
        f"[{cost.hardware}]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
