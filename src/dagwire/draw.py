"""Pictures: learned graphs in a Kamada-Kawai layout (Fig. 3, 9) and threshold curves (Fig. 2). Torch-free."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from . import graphs  # noqa: E402
from .files import atomic_write  # noqa: E402
from .spec import GraphSpec  # noqa: E402

STAGE_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure to PNG or SVG (by suffix) atomically, then close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=130, bbox_inches="tight"))
    plt.close(fig)


def draw_graph(spec: GraphSpec, path: str | os.PathLike | None = None, title: str | None = None,
               tau: float | None = None, ax=None, arrows: bool = True) -> None:
    """Draw `spec` (pruned at τ when given): nodes coloured by stage, edge width by weight.

    arrows=False draws plain lines, much faster for grids of large graphs (edges always go from
    the lower to the higher node index, so direction is implied).
    """
    shown, note = spec, ""
    if tau is not None:
        pruned = graphs.prune(spec, tau)
        if graphs.is_connected(pruned):
            shown = pruned
        else:
            shown, note = graphs.threshold(spec, tau), " (disconnected)"
    nodes = shown.active_nodes()
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    weights = shown.weights or (1.0,) * shown.num_edges
    g.add_edges_from(shown.edges)
    layout = nx.kamada_kawai_layout(g.to_undirected(), weight=None) if len(nodes) > 1 else {nodes[0]: (0, 0)}
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(6, 6))
    top = max(weights) if weights else 1.0
    widths = [0.4 + 3.0 * w / top for w in weights] if top > 0 else [0.4] * len(weights)
    arrow_style = {"arrows": True, "arrowsize": 7, "node_size": 120} if arrows else {"arrows": False}
    nx.draw_networkx_edges(g, layout, edgelist=list(shown.edges), width=widths, edge_color="#555555",
                           alpha=0.55, ax=ax, **arrow_style)
    colours = [STAGE_COLOURS[spec.stage_of(n) % len(STAGE_COLOURS)] for n in nodes]
    sizes = [320 if n in (0, spec.output) else 120 for n in nodes]
    nx.draw_networkx_nodes(g, layout, nodelist=nodes, node_color=colours, node_size=sizes,
                           edgecolors="black", linewidths=0.6, ax=ax)
    nx.draw_networkx_labels(g, layout, labels={0: "in", spec.output: "out"}, font_size=7, ax=ax)
    for s in range(len(spec.stages)):
        ax.scatter([], [], color=STAGE_COLOURS[s % len(STAGE_COLOURS)], label=f"stage {s}")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    label = (title or "") + note
    ax.set_title(f"{label}\n{len(nodes)} nodes, {shown.num_edges} edges" + (f", τ={tau:g}" if tau is not None else ""),
                 fontsize=9)
    ax.set_axis_off()
    if own_figure:
        if path is None:
            raise ValueError("draw_graph needs a path when it makes its own figure")
        save_figure(fig, path)


def plot_threshold_curve(rows: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """Test accuracy and sparsity against τ (Fig. 2), with the default τ = 0.006 marked."""
    taus = [r["threshold"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    top.plot(taus, [r["test_accuracy"] for r in rows], "o-", color="#4C72B0")
    top.set_ylabel("test accuracy (no fine-tuning)")
    bottom.plot(taus, [r["sparsity"] for r in rows], "o-", color="#DD8452")
    bottom.set_ylabel("sparsity")
    bottom.set_xlabel("threshold τ")
    for r in rows:
        if r["disconnected"]:
            top.plot([r["threshold"]], [r["test_accuracy"]], "x", color="#C44E52", markersize=9)
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=1e-3)  # τ spans 0 … 0.3 and 0 must show
        ax.axvline(0.006, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    top.text(0.006, top.get_ylim()[0], " τ=0.006", color="grey", fontsize=8, va="bottom")
    if title:
        top.set_title(title + "  (× = disconnected)")
    save_figure(fig, path)
