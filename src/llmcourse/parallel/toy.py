"""The tiny model and data that the parallel checks, demos and tests share.

A stack of blocks Linear -> LayerNorm -> tanh with a linear head, small enough that several
processes train it in milliseconds on a CPU, deep enough to cut into pipeline stages. The
LayerNorm weights are drawn away from their init (1 and 0), so a parameter whose gradient is
lost or left unsynchronised changes the result.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def toy_model(
    seed: int, widths: tuple[int, ...] = (8, 16, 16, 16, 4), dtype: torch.dtype = torch.float64
) -> nn.Sequential:
    """Blocks Linear(w_i, w_i+1) -> LayerNorm -> tanh, then a Linear head, seeded.

    ``widths`` lists the feature sizes from input to output; the model has len(widths) - 1
    children (len(widths) - 2 blocks and the head), which ``pipeline.split_stages`` groups.
    """
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths needs at least an input and an output size, got {widths}")
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(widths[:-1]):
        layers.append(nn.Sequential(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.Tanh()))
    layers.append(nn.Linear(widths[-2], widths[-1]))
    model = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, nn.Linear):
                scale = module.in_features**-0.5
                module.weight.copy_(scale * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(scale * torch.randn(module.bias.shape, generator=generator))
    return model


def toy_batch(
    seed: int, n: int, d_in: int = 8, d_out: int = 4, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded regression batch: inputs (n, d_in) and targets (n, d_out)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=generator, dtype=dtype)
    return x, torch.randn(n, d_out, generator=generator, dtype=dtype)
