"""Loss curves (and any other line plots) saved as PNG files.

The functions return the matplotlib ``Figure`` as well as writing it, so a notebook can show
the same figure that the command line writes to disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def plot_curves(
    curves: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str = "step",
    ylabel: str = "loss",
    title: str | None = None,
    logy: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """Draw one line per entry of ``curves`` and save the figure as PNG when ``path`` is given.

    Each value is either the y values (plotted against 0, 1, 2, ...) or a pair ``(x, y)``.
    """
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for label, values in curves.items():
        if isinstance(values, tuple) and len(values) == 2:
            x, y = values
        else:
            y = values
            x = range(len(y))
        ax.plot(list(x), list(y), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent folders are created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def close(fig: Figure) -> None:
    """Release a figure that was only written to disk (command lines make many)."""
    plt.close(fig)
