"""How much a KV cache saves: generation time with and without it at growing lengths.

Without a cache, step n runs the model over all n tokens so far, so n new tokens cost about
n^2 / 2 token-passes (plus attention, which grows as n^3 in total); with a cache every step
is one token-pass, n in total. The speed-up therefore grows roughly linearly with the number
of new tokens, until the per-step overhead (Python, kernel launches) dominates the cached run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .loop import CausalLM, GenerationConfig, generate, model_device


def _timed(model: CausalLM, prompt: torch.Tensor, config: GenerationConfig) -> float:
    device = model_device(model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    generate(model, prompt, config)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def time_generation(
    model: CausalLM,
    new_tokens: Sequence[int] = (32, 64, 128, 256, 512),
    prompt_len: int = 8,
    batch_size: int = 1,
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds to generate each number of ``new_tokens`` greedily, with and without the cache.

    The prompt is ``prompt_len`` random tokens; no stop ids, so every run generates exactly
    the number asked for. Each time is the best of ``repeats`` runs (after one warm-up run of
    a few tokens). Returns the table as columns: ``{"new_tokens", "cached_s", "uncached_s",
    "speedup"}``. ``prompt_len + max(new_tokens)`` must fit in the model's context window.
    """
    longest = prompt_len + max(new_tokens)
    if longest > model.max_seq_len:
        raise ValueError(
            f"prompt_len + max(new_tokens) = {longest} exceeds the model's context window "
            f"{model.max_seq_len}: the uncached run would crop, and the cache would be rebuilt"
        )
    vocab = model(torch.zeros(1, 1, dtype=torch.long, device=model_device(model))).shape[-1]
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(vocab, (batch_size, prompt_len), generator=g)
    greedy = GenerationConfig(max_new_tokens=4, temperature=0.0)
    _timed(model, prompt, greedy)
    _timed(model, prompt, replace(greedy, use_cache=False))
    table: dict[str, list[float]] = {k: [] for k in ("new_tokens", "cached_s", "uncached_s")}
    for n in new_tokens:
        config = replace(greedy, max_new_tokens=n)
        cached = min(_timed(model, prompt, config) for _ in range(repeats))
        uncached = min(
            _timed(model, prompt, replace(config, use_cache=False)) for _ in range(repeats)
        )
        table["new_tokens"].append(n)
        table["cached_s"].append(cached)
        table["uncached_s"].append(uncached)
    table["speedup"] = [u / c for u, c in zip(table["uncached_s"], table["cached_s"], strict=True)]
    return table


def plot_speedup(table: dict[str, list[float]], title: str | None = None) -> Figure:
    """Time against the number of new tokens (left) and the cache's speed-up (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    n = table["new_tokens"]
    left.plot(n, table["uncached_s"], "o-", label="without cache")
    left.plot(n, table["cached_s"], "o-", label="with KV cache")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("new tokens generated")
    left.set_ylabel("seconds")
    left.grid(alpha=0.3, which="both")
    left.legend()
    right.plot(n, table["speedup"], "o-", color="tab:green")
    right.set_xscale("log", base=2)
    right.set_xlabel("new tokens generated")
    right.set_ylabel("speed-up (time without / with)")
    right.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title)
    return fig
