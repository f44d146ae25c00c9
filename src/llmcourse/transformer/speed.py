"""Why Transformers train faster than RNNs: time per training step against sequence length.

An RNN computes h_t = f(h_{t-1}, x_t): step t cannot start before step t - 1 has finished, so
a sequence of length L takes L sequential steps, each a small matrix product that uses little
of the hardware. A Transformer layer processes all L positions at once: a few large matrix
products (the projections and the FFN, L x d by d x d) plus attention, whose cost grows like
L^2 d but is also one large parallel operation. Training with teacher forcing feeds the whole
target at once, so the Transformer's advantage applies to the decoder too; only generation is
sequential.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from .blocks import EncoderBlock


def time_training_step(
    layer: nn.Module, x: torch.Tensor, repeats: int = 3, warmup: int = 1
) -> float:
    """Median seconds of one forward and backward pass of ``layer`` on ``x``."""
    device = x.device
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = layer(x)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def rnn_vs_transformer(
    lengths: Sequence[int] = (16, 32, 64, 128, 256, 512),
    d_model: int = 128,
    n_heads: int = 4,
    batch: int = 16,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, list[float]]:
    """Milliseconds per training step of an RNN, an LSTM and a Transformer encoder layer.

    All three map (batch, L, d_model) to (batch, L, d_model); the Transformer layer has a
    feed-forward width of 4 d_model. Returns ``{"length": [...], "RNN": [...], "LSTM": [...],
    "Transformer": [...]}``.
    """
    torch.manual_seed(seed)
    layers = {
        "RNN": nn.RNN(d_model, d_model, batch_first=True),
        "LSTM": nn.LSTM(d_model, d_model, batch_first=True),
        "Transformer": EncoderBlock(d_model, n_heads, 4 * d_model, norm_first=True),
    }
    result: dict[str, list[float]] = {"length": [float(n) for n in lengths]}
    for name, layer in layers.items():
        layer.to(device)
        result[name] = []
        for length in lengths:
            x = torch.randn(batch, length, d_model, device=device)
            result[name].append(1000 * time_training_step(layer, x, repeats))
    return result


def training_flops(name: str, length: int, d_model: int, batch: int) -> float:
    """Approximate floating-point operations of one training step (backward = 2 x forward).

    Per token, forward: RNN 2 (d^2 + d^2) (input and recurrent matrices); LSTM four times
    that (four gates); Transformer layer 2 (4 d^2 + 8 d^2) for the projections and a FFN of
    width 4d, plus 4 L d for the attention scores and the weighted sum.
    """
    d = d_model
    per_token = {
        "RNN": 4 * d * d,
        "LSTM": 16 * d * d,
        "Transformer": 24 * d * d + 4 * length * d,
    }[name]
    return 3.0 * per_token * length * batch


def sequential_vs_parallel(
    lengths: Sequence[int] = (16, 64, 256, 1024),
    d_model: int = 128,
    batch: int = 16,
    repeats: int = 5,
) -> dict[str, list[float]]:
    """The same arithmetic done as L dependent steps or as one big matrix product.

    An RNN must compute h_t = tanh(h_{t-1} W) one step after another: L products of a
    (batch, d) matrix by a (d, d) one. A Transformer's projections multiply all L positions
    at once: one (batch * L, d) by (d, d) product, exactly as many operations. Returns the
    milliseconds of each (forward only, no gradients).
    """
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(d_model, d_model, generator=g) / d_model**0.5
    result: dict[str, list[float]] = {"length": [], "sequential": [], "parallel": []}

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * min(times)

    with torch.no_grad():
        for length in lengths:
            x = torch.randn(batch, length, d_model, generator=g)

            def sequential(x: torch.Tensor = x) -> None:
                h = torch.zeros(batch, d_model)
                for t in range(x.shape[1]):
                    h = torch.tanh(x[:, t] + h @ weight)

            def parallel(x: torch.Tensor = x) -> None:
                torch.tanh(x.reshape(-1, d_model) @ weight)

            result["length"].append(float(length))
            result["sequential"].append(best(sequential))
            result["parallel"].append(best(parallel))
    return result


def plot_speed(result: dict[str, list[float]], title: str | None = None) -> Figure:
    """Time per step against sequence length, on log-log axes."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
    for name, values in result.items():
        if name != "length":
            ax.plot(result["length"], values, "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("ms per training step (forward + backward)")
    ax.set_title(title or "One layer, time per training step")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig
