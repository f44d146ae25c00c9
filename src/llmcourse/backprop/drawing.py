"""Pictures for the chapter: the 2-2-2 network and computation graphs of the engine.

Both are drawn with plain matplotlib (no graphviz). A computation graph is laid out in columns
by depth: a node sits one column to the right of its deepest parent, and leaves sit just left
of their first use, so the arrows run left to right in the order backpropagation reverses.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .engine import Value, topological_order
from .network import INITIAL_PARAMS, PARAM_NAMES, _checked

__all__ = ["draw_graph", "draw_network", "graph_edges", "graph_table"]

_OP_SYMBOLS = {"*": "×", "sigmoid": "σ", "neg": "−"}


def _names(order: list[Value]) -> dict[int, str]:
    """A printable name per node: its label, a constant's value, or ``v<k>``."""
    names: dict[int, str] = {}
    for k, node in enumerate(order):
        if node.label:
            names[id(node)] = node.label
        elif not node.parents:
            names[id(node)] = f"{node.data:g}"
        else:
            names[id(node)] = f"v{k}"
    return names


def graph_edges(root: Value) -> list[tuple[Value, Value]]:
    """Every edge ``(parent, child)`` of the graph that computed ``root``, parents first."""
    return [(p, node) for node in topological_order(root) for p in node.parents]


def graph_table(root: Value) -> str:
    """One line per node in topological order: name, how it was computed, value and gradient."""
    order = topological_order(root)
    names = _names(order)
    lines = [f"{'node':<10} {'computed as':<26} {'value':>12} {'grad':>12}"]
    for node in order:
        if node.parents:
            args = ", ".join(names[id(p)] for p in node.parents)
            how = f"{node.op}({args})"
        else:
            how = "leaf"
        lines.append(f"{names[id(node)]:<10} {how:<26} {node.data:>12.6g} {node.grad:>12.6g}")
    return "\n".join(lines)


def _layout(order: list[Value]) -> dict[int, tuple[float, float]]:
    """Column = depth; rows ordered to keep each node near its neighbours (a barycentre sweep)."""
    depth: dict[int, int] = {}
    for node in order:
        depth[id(node)] = 1 + max((depth[id(p)] for p in node.parents), default=-1)
    children: dict[int, list[Value]] = {id(n): [] for n in order}
    for node in order:
        for p in node.parents:
            children[id(p)].append(node)
    for node in order:  # pull leaves next to their first use
        if not node.parents and children[id(node)]:
            depth[id(node)] = min(depth[id(c)] for c in children[id(node)]) - 1
    columns: dict[int, list[Value]] = {}
    for node in order:
        columns.setdefault(depth[id(node)], []).append(node)
    row = {id(n): float(k) for col in columns.values() for k, n in enumerate(col)}
    for _ in range(6):
        for col in columns.values():
            for n in col:
                nbrs = [*n.parents, *children[id(n)]]
                if nbrs:
                    row[id(n)] = sum(row[id(m)] for m in nbrs) / len(nbrs)
            col.sort(key=lambda n: row[id(n)])
            for k, n in enumerate(col):
                row[id(n)] = k - (len(col) - 1) / 2
    return {id(n): (float(depth[id(n)]), -row[id(n)]) for n in order}


def draw_graph(
    root: Value, *, show_grad: bool = True, ax: Axes | None = None, fontsize: float = 7
) -> Figure:
    """Draw the computation graph of ``root``: one box per node (name or operation, value and,
    if ``show_grad``, the gradient after ``root.backward()``) and an arrow per edge."""
    order = topological_order(root)
    names = _names(order)
    pos = _layout(order)
    n_cols = 1 + max(x for x, _ in pos.values()) - min(x for x, _ in pos.values())
    n_rows = max(sum(1 for x, _ in pos.values() if x == c) for c in {x for x, _ in pos.values()})
    if ax is None:
        _, ax = plt.subplots(figsize=(1.25 * n_cols + 0.5, 0.75 * n_rows + 0.6), layout="tight")
    for parent, child in graph_edges(root):
        ax.annotate(
            "",
            xy=pos[id(child)],
            xytext=pos[id(parent)],
            arrowprops={
                "arrowstyle": "->",
                "color": "0.55",
                "lw": 0.8,
                "shrinkA": 14,
                "shrinkB": 14,
            },
        )
    for node in order:
        op = _OP_SYMBOLS.get(node.op, node.op.replace("**", "^"))
        if not node.parents:
            head = names[id(node)]
            color = "#dbe9f6" if node.label else "#eeeeee"
        else:
            head = f"{node.label}: {op}" if node.label else op
            color = "#fde2c8" if node is root else "#fff7df"
        text = f"{head}\n{node.data:.4g}" if node.label or node.parents else head
        if show_grad:
            text += f"\ng={node.grad:.3g}"
        ax.text(
            *pos[id(node)],
            text,
            ha="center",
            va="center",
            fontsize=fontsize,
            bbox={"boxstyle": "round,pad=0.3", "fc": color, "ec": "0.4", "lw": 0.6},
        )
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    return ax.figure


def draw_network(params: Mapping[str, float] | None = None, *, ax: Axes | None = None) -> Figure:
    """Draw the 2-2-2 network of the worked example with the source's labels and weights."""
    p = _checked(params, PARAM_NAMES, INITIAL_PARAMS, "parameters")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 5.2), layout="tight")
    radius = 0.2
    neurons = {
        "x1": (0.0, 1.0, "$x_1$"),
        "x2": (0.0, 0.0, "$x_2$"),
        "h1": (1.2, 1.0, "$z_1$\n$f(z_1)$"),
        "h2": (1.2, 0.0, "$z_2$\n$f(z_2)$"),
        "o1": (2.4, 1.0, "$i_1$\n$o_1$"),
        "o2": (2.4, 0.0, "$i_2$\n$o_2$"),
    }
    biases = {"b1": (0.6, -0.75, ("h1", "h2")), "b2": (1.8, -0.75, ("o1", "o2"))}
    weights = {
        "w1": ("x1", "h1"),
        "w2": ("x1", "h2"),
        "w3": ("x2", "h1"),
        "w4": ("x2", "h2"),
        "w5": ("h1", "o1"),
        "w6": ("h1", "o2"),
        "w7": ("h2", "o1"),
        "w8": ("h2", "o2"),
    }

    def edge(start: tuple[float, float], end: tuple[float, float], **style: object) -> None:
        (x0, y0), (x1, y1) = start, end
        length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        ax.annotate(
            "",
            xy=(x1 - radius * ux, y1 - radius * uy),
            xytext=(x0 + radius * ux, y0 + radius * uy),
            arrowprops={"arrowstyle": "-|>", "shrinkA": 0, "shrinkB": 0, **style},
        )

    for name, (src, dst) in weights.items():
        (x0, y0, _), (x1, y1, _) = neurons[src], neurons[dst]
        edge((x0, y0), (x1, y1), color="0.25", lw=1.0)
        t = 0.33  # near the start of the edge, where edges that cross are still apart
        ax.text(
            x0 + t * (x1 - x0),
            y0 + t * (y1 - y0),
            f"${name[0]}_{name[1]} = {p[name]:g}$",
            ha="center",
            va="center",
            fontsize=9,
            color="#1f4e79",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            zorder=3,
        )
    for name, (x, y, targets) in biases.items():
        for dst in targets:
            edge((x, y), neurons[dst][:2], color="0.55", lw=0.9, linestyle="--")
        ax.text(
            x,
            y,
            f"${name[0]}_{name[1]} = {p[name]:g}$",
            ha="center",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.3", "fc": "#eeeeee", "ec": "0.4"},
        )
    for x, y, text in neurons.values():
        ax.add_patch(Circle((x, y), radius, fc="#dbe9f6", ec="0.3", lw=1.0, zorder=2))
        ax.text(x, y, text, ha="center", va="center", fontsize=9, zorder=3)
    for x, title in [(0.0, "input layer"), (1.2, "hidden layer"), (2.4, "output layer")]:
        ax.text(x, 1.42, title, ha="center", fontsize=10, weight="bold")
    ax.set_xlim(-0.35, 2.75)
    ax.set_ylim(-1.0, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax.figure
