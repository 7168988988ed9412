"""Pictures: learned graphs in a Kamada-Kawai layout (Fig. 3, 9) and threshold curves (Fig. 2). Torch-free.

Files are PNG or SVG by suffix and appear atomically (written beside the target, then renamed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from . import graphs  # noqa: E402
from .errors import DagwireError  # noqa: E402
from .files import atomic_write  # noqa: E402
from .spec import GraphSpec  # noqa: E402

# Seaborn's "deep" qualitative palette: stages stay distinguishable in print and for most colour-blind readers.
STAGE_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
DEFAULT_TAU = graphs.DEFAULT_TAU
MAX_ARROW_EDGES = 400  # beyond this, arrow patches take seconds and hide the structure


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG or SVG (by suffix) atomically, then close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        if fmt not in ("png", "svg", "pdf"):
            raise DagwireError(f"cannot write a figure as {path.suffix!r}: use .png or .svg")
        atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=130, bbox_inches="tight"))
    finally:
        plt.close(fig)  # also on failure: pyplot keeps every open figure alive


def _shown_graph(spec: GraphSpec, tau: float | None) -> tuple[GraphSpec, bool]:
    """The graph to draw (pruned at τ when given) and whether it is disconnected."""
    if tau is None:
        return spec, not graphs.is_connected(spec)
    pruned = graphs.prune(spec, tau)
    if graphs.is_connected(pruned):
        return pruned, False
    # Dead-path removal would erase everything: show what the threshold left instead.
    return graphs.threshold(spec, tau), True


def draw_graph(
    spec: GraphSpec,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    tau: float | None = None,
    ax: Any = None,
    arrows: bool | None = None,
) -> None:
    """Draw `spec` (pruned at τ when given) in a Kamada-Kawai layout: nodes by stage, edge width by weight.

    With `ax` the drawing goes into that axes and nothing is saved; otherwise it is written to
    `path`. arrows=None draws arrow heads only up to MAX_ARROW_EDGES edges; edges always go from
    the lower to the higher node index, so plain lines lose no information.
    """
    if ax is None and path is None:
        raise ValueError("draw_graph needs a path when it makes its own figure")
    shown, disconnected = _shown_graph(spec, tau)
    nodes = shown.active_nodes()
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(shown.edges)
    layout = graphs.kamada_kawai(g.to_undirected())
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(6, 6))
    weights = list(shown.weights) if shown.weights is not None else [1.0] * shown.num_edges
    top = max(weights, default=0.0)
    # A floor keeps the weakest surviving edges visible; above it, width grows linearly with weight,
    # thinner overall in dense graphs so that they do not turn into a grey blot.
    widest = 2.7 * min(1.0, (100 / max(shown.num_edges, 1)) ** 0.5)
    widths = [0.3 + widest * w / top if top > 0 else 0.3 for w in weights]
    if arrows is None:
        arrows = shown.num_edges <= MAX_ARROW_EDGES
    style = {"arrows": True, "arrowstyle": "-|>", "arrowsize": 6, "node_size": 110} if arrows else {"arrows": False}
    if shown.edges:
        nx.draw_networkx_edges(g, layout, edgelist=list(shown.edges), width=widths, edge_color="#444444",
                               alpha=0.5, ax=ax, **style)
    colours = [STAGE_COLOURS[spec.stage_of(n) % len(STAGE_COLOURS)] for n in nodes]
    ends = (0, spec.output)
    sizes = [330 if n in ends else 110 for n in nodes]
    nx.draw_networkx_nodes(g, layout, nodelist=nodes, node_color=colours, node_size=sizes,
                           edgecolors="black", linewidths=[1.4 if n in ends else 0.5 for n in nodes], ax=ax)
    nx.draw_networkx_labels(g, layout, labels={0: "in", spec.output: "out"}, font_size=7,
                            font_weight="bold", ax=ax)
    for s in range(len(spec.stages)):
        ax.scatter([], [], color=STAGE_COLOURS[s % len(STAGE_COLOURS)], edgecolors="black", linewidths=0.5,
                   label=f"stage {s}")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    summary = f"{len(nodes)} nodes, {shown.num_edges} edges" + (f", τ = {tau:g}" if tau is not None else "")
    if disconnected:
        summary += " — disconnected (output unreachable)"
    ax.set_title(f"{title}\n{summary}" if title else summary, fontsize=9,
                 color="#C44E52" if disconnected else "black")
    ax.set_axis_off()
    ax.margins(0.06)
    if own_figure:
        save_figure(fig, path)


def plot_threshold_curve(rows: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """Test accuracy and sparsity against τ in two panels (Fig. 2), the default τ = 0.006 marked."""
    rows = sorted(rows, key=lambda r: r["threshold"])
    taus = [float(r["threshold"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    top.plot(taus, [r["test_accuracy"] for r in rows], "o-", color="#4C72B0", markersize=4)
    top.set_ylabel("test accuracy\n(no fine-tuning)")
    bottom.plot(taus, [r["sparsity"] for r in rows], "o-", color="#DD8452", markersize=4)
    bottom.set_ylabel("sparsity")
    bottom.set_xlabel("threshold τ")
    cut = [r for r in rows if r.get("disconnected")]
    if cut:
        for ax, key in ((top, "test_accuracy"), (bottom, "sparsity")):
            ax.plot([r["threshold"] for r in cut], [r[key] for r in cut], "x", color="#C44E52", markersize=9,
                    markeredgewidth=2, label="disconnected")
        top.legend(loc="best", fontsize=8, frameon=False)
    positive = [t for t in taus if t > 0]
    # τ spans 0 … 0.3: symlog shows 0 while keeping the small thresholds apart.
    linthresh = min(1e-3, min(positive)) if positive else 1e-3
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.axvline(DEFAULT_TAU, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    top.annotate(f" τ = {DEFAULT_TAU:g}", xy=(DEFAULT_TAU, 0.97), xycoords=("data", "axes fraction"),
                 va="top", color="grey", fontsize=8)
    if title:
        top.set_title(title)
    save_figure(fig, path)
