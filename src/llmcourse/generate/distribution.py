"""What the model sees at one step: the distribution over the next token, and a bar chart of it.

Given "The quick brown", a trained model puts most of its probability on a handful of
continuations; the decoding strategy (``sampling``) decides which of them is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .loop import CausalLM, check_prompt, model_device


@torch.no_grad()
def next_token_distribution(
    model: CausalLM, input_ids: torch.Tensor, top: int = 10, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` most likely next tokens after ``input_ids`` and their probabilities.

    Returns ``(ids, probs)``, most likely first: shapes (top,) for a (T,) or (1, T) prompt,
    (B, top) for a batch. The probabilities are softmax(z / temperature) over the whole
    vocabulary, so they sum to at most 1 (the rest is spread over the other tokens).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    ids = check_prompt(model, input_ids).to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        logits = model(ids)[:, -1].float()
    finally:
        model.train(was_training)
    probs = torch.softmax(logits / temperature, dim=-1)
    values, indices = torch.topk(probs, min(top, probs.shape[-1]), dim=-1)
    if ids.shape[0] == 1:
        return indices[0].cpu(), values[0].cpu()
    return indices.cpu(), values.cpu()


def plot_distribution(
    ids: Sequence[int] | torch.Tensor,
    probs: Sequence[float] | torch.Tensor,
    decode: Callable[[list[int]], str],
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """Horizontal bars, most likely token on top, each labelled with its text (``decode``)."""
    ids = [int(i) for i in ids]
    probs = [float(p) for p in probs]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.32 * len(ids) + 1.0), layout="constrained")
    labels = [repr(decode([i])) for i in ids]
    ax.barh(range(len(ids))[::-1], probs, color="tab:blue")
    ax.set_yticks(range(len(ids))[::-1], labels, fontfamily="monospace")
    for y, p in zip(range(len(ids))[::-1], probs, strict=True):
        ax.text(p, y, f" {p:.1%}", va="center", fontsize=8)
    ax.set_xlim(0, min(1.0, max(probs) * 1.25 + 0.02))
    ax.set_xlabel("probability of being the next token")
    if title:
        ax.set_title(title)
    return ax.figure
