"""Pictures: learned graphs in a Kamada-Kawai layout (Fig. 3, 9) and threshold curves (Fig. 2). Torch-free.

Files are PNG or SVG by suffix and appear atomically (written beside the target, then renamed).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from . import graphs  # noqa: E402
from .errors import DagwireError  # noqa: E402
from .files import atomic_write  # noqa: E402
from .spec import GraphSpec  # noqa: E402
from .compare import (DATASET_COLOURS, UMAP_MIN_POINTS, TopKResult, connected_runs, dataset_blocks,  # noqa: E402
                      dataset_of, dataset_order, load_graph, mean_std, numeric_values, with_flags)
from .front import CONTROLS  # noqa: E402
from .rundir import RunDir  # noqa: E402
from .stats import OrderingResult  # noqa: E402

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


def draw_pruning(spec: GraphSpec, tau: float, path: str | os.PathLike, title: str | None = None,
                 summary: str | None = None) -> None:
    """What pruning at τ kept of the initial DAG: every initial edge as an arc, the kept ones above the
    nodes and dark, the cut ones below and faded; beside it the learned graph as `draw_graph` draws it.

    `summary` (default `graphs.pruning_summary` without accuracies) is the figure's second title line.
    """
    from matplotlib.patches import Arc

    pruned = graphs.prune(spec, tau)
    connected = graphs.is_connected(pruned)
    kept = set(pruned.edges) if connected else set()
    live = set(pruned.active_nodes()) if connected else set()
    fig, (arcs, learned) = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.25, 1]})
    weights = dict(zip(spec.edges, spec.weights)) if spec.weights is not None else {}
    top = max((weights.get(e, 1.0) for e in kept), default=1.0) or 1.0
    span = max(spec.num_nodes - 1, 1)
    # An arc diagram, because the complete DAG in any force layout is a uniform blot: here every
    # edge has its own place (its two ends on the line), so the cut ones can be seen as a set.
    for i, j in spec.edges:
        is_kept = (i, j) in kept
        arcs.add_patch(Arc(((i + j) / 2, 0.0), j - i, (j - i) * 0.9, theta1=0 if is_kept else 180,
                           theta2=180 if is_kept else 360,
                           color="#333333" if is_kept else "#C8C8C8", alpha=0.75 if is_kept else 0.6,
                           linewidth=0.5 + 2.0 * weights.get((i, j), 1.0) / top if is_kept else 0.5))
    nodes = spec.active_nodes()
    for n in nodes:
        colour = STAGE_COLOURS[spec.stage_of(n) % len(STAGE_COLOURS)]
        alive = n in live
        arcs.scatter([n], [0.0], s=90 if n in (0, spec.output) else 45, zorder=3,
                     color=colour if alive else "white", edgecolors="black" if alive else colour, linewidths=1.0)
    arcs.text(0, -0.04 * span, "in", ha="center", va="top", fontsize=7, fontweight="bold")
    arcs.text(spec.output, -0.04 * span, "out", ha="center", va="top", fontsize=7, fontweight="bold")
    arcs.text(0.01, 0.98, f"kept ({len(kept)} edges)", transform=arcs.transAxes, va="top", fontsize=8)
    arcs.text(0.01, 0.02, f"cut ({spec.num_edges - len(kept)} edges; hollow: removed nodes)",
              transform=arcs.transAxes, va="bottom", fontsize=8, color="#888888")
    arcs.set_xlim(-0.5, spec.num_nodes - 0.5)
    arcs.set_ylim(-0.47 * span, 0.47 * span)
    arcs.set_aspect("equal")
    arcs.set_axis_off()
    arcs.set_title("the initial DAG, node by node", fontsize=9)
    draw_graph(spec, tau=tau, ax=learned, title="the learned graph")
    line = summary or graphs.pruning_summary(spec, tau)
    fig.suptitle(f"{title}\n{line}" if title else line, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # the two-line title above both panels' own titles
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


# --- figures of a sweep's comparison (Figs. 2, 4, 6-9): numbers from compare.py, drawn here ----------

def plot_similarity(S: np.ndarray, labels: Sequence, path: str | os.PathLike,
                    title: str = "RBF similarity of standardised graph features") -> None:
    """Fig. 4: the similarity matrix as a heatmap, dataset blocks outlined and named."""

    n = len(labels)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(np.asarray(S), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    blocks = dataset_blocks(labels)
    for _, start, stop in blocks:
        # A white square around each dataset's block: within-dataset similarity is the point of Fig. 4.
        ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), stop - start, stop - start,
                                   fill=False, edgecolor="white", linewidth=1.5))
    centres = [(start + stop - 1) / 2 for _, start, stop in blocks]
    names = [f"{d} ({stop - start})" for d, start, stop in blocks]
    ax.set_xticks(centres, names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(centres, names, fontsize=8)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="similarity")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def plot_umap(E: np.ndarray, labels: Sequence, path: str | os.PathLike) -> None:
    """Fig. 8: the 2-D embedding, one colour per dataset (says so when PCA stood in for UMAP)."""

    E = np.asarray(E, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    datasets = dataset_order([dataset_of(label) for label in labels])
    for k, d in enumerate(datasets):
        idx = [i for i, label in enumerate(labels) if dataset_of(label) == d]
        runs = len({tuple(labels[i][:2]) if isinstance(labels[i], (tuple, list)) else labels[i] for i in idx})
        count = f"{len(idx)}" if runs == len(idx) else f"{runs} runs, {len(idx)} points"
        ax.scatter(E[idx, 0], E[idx, 1], s=40, color=DATASET_COLOURS[k % len(DATASET_COLOURS)],
                   edgecolors="black", linewidths=0.4, label=f"{d} ({count})")
    method = "UMAP" if len(labels) >= UMAP_MIN_POINTS else (
        f"PCA (only {len(labels)} networks: UMAP needs at least {UMAP_MIN_POINTS})")
    ax.set_title(f"{method} of standardised graph features", fontsize=10)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_graph_grid(df, path: str | os.PathLike, tau: float = DEFAULT_TAU, max_seeds: int = 10) -> None:
    """Fig. 9: pruned graphs drawn in a grid, rows = datasets, columns = seeds (up to max_seeds)."""

    df = with_flags(df)
    datasets = dataset_order(df["dataset"])
    seeds = sorted({int(s) for s in df["seed"]})[:max_seeds]
    if not datasets or not seeds:
        raise DagwireError("no runs to draw")
    fig, axes = plt.subplots(len(datasets), len(seeds), figsize=(2.6 * len(seeds), 2.7 * len(datasets)),
                             squeeze=False)
    handles: tuple = ()
    for r, d in enumerate(datasets):
        for c, s in enumerate(seeds):
            ax = axes[r][c]
            match = df[(df["dataset"] == d) & (df["seed"].astype(int) == s)]
            row = match.iloc[0] if len(match) else None
            spec = load_graph(row["run_dir"]) if row is not None and row["status"] == "done" else None
            if spec is None or spec.weights is None:
                why = "no run" if row is None else ("failed" if row["status"] != "done" else "no graph.json")
                ax.text(0.5, 0.5, f"{d} seed {s}\n{why}", ha="center", va="center", fontsize=8, color="grey")
                ax.set_axis_off()
                continue
            draw_graph(spec, title=f"{d} seed {s}", tau=tau, ax=ax, arrows=False)
            legend = ax.get_legend()
            if legend is not None:
                if not handles:
                    handles = (legend.legend_handles, [t.get_text() for t in legend.get_texts()])
                legend.remove()  # one stage legend for the whole grid, outside the drawings
    if handles:
        fig.legend(*handles, loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(f"Pruned graphs (τ = {tau:g}), Kamada-Kawai layout, nodes coloured by stage", fontsize=11)
    save_figure(fig, path)


def plot_edge_trajectories(history: np.ndarray, retained: np.ndarray, tau: float, path: str | os.PathLike,
                           sample: int = 25, seed: int = 0, title: str | None = None) -> None:
    """Fig. 6a: |tanh w| over epochs of a random sample of retained (left) and eliminated (right) edges."""

    history = np.atleast_2d(np.asarray(history, dtype=float))
    retained = np.asarray(retained, dtype=bool)
    if history.shape[1] != retained.size:
        raise ValueError(f"history {history.shape} does not match {retained.size} edges")
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, history.shape[0] + 1)
    # Log scale: an exact zero has no place on it, so it is drawn at the floor.
    floor = max(min(tau / 100.0, float(np.min(history[history > 0], initial=1.0))), 1e-9)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, mask, name, colour in ((axes[0], retained, "retained", "#4C72B0"),
                                   (axes[1], ~retained, "eliminated", "#C44E52")):
        idx = np.flatnonzero(mask)
        chosen = np.sort(rng.choice(idx, size=min(sample, idx.size), replace=False)) if idx.size else idx
        for e in chosen:
            ax.plot(epochs, np.maximum(history[:, e], floor), color=colour, alpha=0.45, linewidth=0.9)
        ax.axhline(tau, color="black", linestyle="--", linewidth=1)
        ax.text(epochs[0], tau, f" τ={tau:g}", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{name} edges ({chosen.size} of {idx.size} shown)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("|tanh w| at the end of the epoch")
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def plot_dsc(df, path: str | os.PathLike) -> None:
    """Fig. 6b: mean DSC of the pruned edges with the largest / smallest epoch-1 edges, per dataset (± std)."""

    rows = connected_runs(df)  # a disconnected run has no pruned edge set to compare
    datasets = dataset_order(rows["dataset"])
    stats = {key: [mean_std(numeric_values(rows.loc[rows["dataset"] == d, key]) if key in rows.columns else [])
                   for d in datasets] for key in ("dyn_dsc_largest", "dyn_dsc_smallest")}
    x = np.arange(len(datasets))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(datasets) + 2), 3.8))
    for offset, key, name, colour in ((-0.18, "dyn_dsc_largest", "largest", "#4C72B0"),
                                      (0.18, "dyn_dsc_smallest", "smallest", "#DD8452")):
        means = [m for m, _, _ in stats[key]]
        errors = [0.0 if not np.isfinite(s) else s for _, s, _ in stats[key]]
        ax.bar(x + offset, means, width=0.36, yerr=errors, capsize=3, color=colour,
               label=f"{name} edges after epoch 1")
    ax.set_xticks(x, [f"{d}\n(n={stats['dyn_dsc_largest'][k][2]})" for k, d in enumerate(datasets)], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("DSC with the pruned edge set")
    ax.set_title("Pruned edges vs the same number of largest / smallest edges after epoch 1", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_topk(result: TopKResult, path: str | os.PathLike) -> None:
    """Fig. 7: (a) RBF and (b) DSC similarity, pruned graphs (rows) × top-k graphs (columns)."""

    n = len(result.labels)
    if n == 0:
        raise DagwireError("no top-k graphs to plot: " + ("; ".join(result.skipped) or "no connected runs"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.0), gridspec_kw={"wspace": 0.3})
    blocks = dataset_blocks(result.labels)
    centres = [(start + stop - 1) / 2 for _, start, stop in blocks]
    names = [d for d, _, _ in blocks]
    for ax, matrix, name in ((axes[0], result.rbf, "(a) structural (RBF) similarity"),
                             (axes[1], result.dsc, "(b) edge DSC")):
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        for _, start, stop in blocks:
            ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), stop - start, stop - start,
                                       fill=False, edgecolor="white", linewidth=1.2))
        ax.set_xticks(centres, names, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(centres, names, fontsize=8)
        ax.set_xlabel("top-k graph (largest edges after epoch 1)")
        ax.set_title(name, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    axes[0].set_ylabel("pruned graph")
    save_figure(fig, path)


def plot_threshold_curves(df, path: str | os.PathLike, tau: float = DEFAULT_TAU) -> int:
    """Fig. 2: mean test accuracy and sparsity over τ per dataset, from each done run's thresholds.csv."""
    import pandas as pd


    frames = []
    for _, row in df[df["done"]].iterrows():
        csv = RunDir(row["run_dir"]).thresholds_csv if row["run_dir"] else None
        if csv is not None and csv.is_file():
            try:
                frame = pd.read_csv(csv)
            except (pd.errors.ParserError, pd.errors.EmptyDataError):
                continue
            if {"threshold", "test_accuracy", "sparsity"} <= set(frame.columns):
                frames.append(frame.assign(dataset=row["dataset"]))
    if not frames:
        raise DagwireError("no run has a thresholds.csv (run `dagwire thresholds RUN`)")
    data = pd.concat(frames)
    mean = data.groupby(["dataset", "threshold"])[["test_accuracy", "sparsity"]].mean()
    counts = data.groupby("dataset")["threshold"].count() // data.groupby("dataset")["threshold"].nunique()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for k, d in enumerate(dataset_order(data["dataset"])):
        curve = mean.loc[d].sort_index()
        colour = DATASET_COLOURS[k % len(DATASET_COLOURS)]
        top.plot(curve.index, curve["test_accuracy"], "o-", color=colour, markersize=3,
                 label=f"{d} (n={int(counts.get(d, 0))})")
        bottom.plot(curve.index, curve["sparsity"], "o-", color=colour, markersize=3)
    top.set_ylabel("mean test accuracy\n(no fine-tuning)")
    bottom.set_ylabel("mean sparsity")
    bottom.set_xlabel("threshold τ")
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=1e-3)  # τ runs from 0 to ~0.3 and 0 must show
        ax.axvline(tau, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    top.legend(fontsize=8, frameon=False)
    top.set_title(f"Accuracy and sparsity over τ (dashed: τ = {tau:g})", fontsize=10)
    save_figure(fig, path)
    return len(frames)


def plot_capacity(summary: Sequence[dict], path: str | os.PathLike, by: str = "channels") -> None:
    """Graph size at τ* against difficulty (test accuracy), one line per capacity, the paper's values marked.

    `summary` is `stats.capacity_summary`'s rows; the x-axis runs from the easiest task (highest
    accuracy) on the left to the hardest on the right. The paper's dataset means (60 nodes,
    C = 11, τ = 0.006) are written in each panel: a scale, not a target, since the sizes differ.
    """
    from .paper import PAPER_TABLES
    from .stats import CAPACITY_FEATURES

    titles = {"nodes": "nodes kept", "mean_degree": "mean degree", "sparsity": "sparsity",
              "parameters": "parameters"}
    paper = {**PAPER_TABLES["table1"], **PAPER_TABLES["table2"]}
    capacities = sorted({row[by] for row in summary})
    fig, axes = plt.subplots(1, len(CAPACITY_FEATURES), figsize=(4.2 * len(CAPACITY_FEATURES), 3.8))
    for ax, feature in zip(np.atleast_1d(axes), CAPACITY_FEATURES):
        for k, value in enumerate(capacities):
            rows = [r for r in summary if r[by] == value]
            colour = STAGE_COLOURS[k % len(STAGE_COLOURS)]
            ax.errorbar([r["accuracy"] for r in rows], [r[feature] for r in rows],
                        yerr=[0 if np.isnan(r[feature + "_std"]) else r[feature + "_std"] for r in rows],
                        fmt="o-", color=colour, capsize=3, label=f"C = {value}" if by == "channels" else f"{by} = {value}")
            for r in rows:
                ax.annotate(r["dataset"], (r["accuracy"], r[feature]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=colour)
        # Written, not drawn: the paper's 863k-parameter network would squash this one's scale.
        marks = [f"{d} {paper[feature][d][0]:.3g}" for d in ("cmnist", "cfashionmnist") if d in paper.get(feature, {})]
        if marks:
            ax.text(0.02, 0.02, "paper: " + ", ".join(marks), transform=ax.transAxes, fontsize=7, color="grey")
        ax.invert_xaxis()  # easiest task on the left
        ax.set_xlabel("test accuracy (harder →)")
        ax.set_title(titles.get(feature, feature))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8, frameon=False)
    fig.suptitle("learned graph at τ* against difficulty, per capacity (paper: 60 nodes, C = 11, τ = 0.006)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# Feature trajectories (trajectory.py): the graph at τ after every epoch, and when the ordering appears.
TRAJECTORY_TITLES = {"edges": "edges kept", "nodes": "nodes kept", "sparsity": "sparsity", "mean_degree": "mean degree",
                     "parameters": "parameters", "log_paths": "ln paths", "mean_path": "mean path length",
                     "max_path": "longest path", "edge_connectivity": "edge connectivity"}


def _mark_milestones(ax: Any, milestones: Sequence[int]) -> None:
    """Dotted vertical lines where the learning rate drops."""
    for k, step in enumerate(milestones):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1, label="lr drop" if k == 0 else None)


def plot_feature_trajectories(summary, milestones: Sequence[int], path: str | os.PathLike, tau: float,
                              features: Sequence[str] = ("edges", "nodes", "sparsity", "mean_degree")) -> None:
    """Per feature, each dataset's mean ± std over seeds against the training step; lr drops marked.

    `summary` is `trajectory.trajectory_summary`'s table (datasets easiest first).
    """
    fig, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 3.6))
    for ax, feature in zip(np.atleast_1d(axes), features):
        for k, (dataset, part) in enumerate(summary.groupby("dataset", sort=False)):
            colour = STAGE_COLOURS[k % len(STAGE_COLOURS)]
            mean, std = part[feature].to_numpy(float), np.nan_to_num(part[feature + "_std"].to_numpy(float))
            ax.plot(part["step"], mean, color=colour, linewidth=1.5, label=f"{dataset} ({part['runs'].max()} runs)")
            ax.fill_between(part["step"], mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        _mark_milestones(ax, milestones)
        ax.set_xlabel("SGD step")
        ax.set_title(TRAJECTORY_TITLES.get(feature, feature))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"the graph at τ = {tau:g} after dead-path removal, after every epoch (mean ± std over seeds)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_ordering_over_time(rows: Sequence[dict], milestones: Sequence[int], path: str | os.PathLike, tau: float,
                            alpha: float = 0.05) -> None:
    """Per feature, Kendall τ-b between difficulty rank and the feature against the step; Holm-significant steps filled.

    `rows` are `trajectory.ordering_over_time`'s. The paper's direction is drawn as the shaded
    half: τ-b > 0 for a feature that should grow with difficulty, < 0 for sparsity.
    """
    features = list(dict.fromkeys(r["feature"] for r in rows))
    columns = min(4, len(features))
    lines = math.ceil(len(features) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 2.9 * lines), sharex=True, sharey=True,
                             squeeze=False)
    for ax, feature in zip(axes.flat, features):
        mine = [r for r in rows if r["feature"] == feature]
        steps = np.array([r["step"] for r in mine])
        tau_b = np.array([r["tau_b"] for r in mine], dtype=float)
        significant = np.array([r["p_holm"] < alpha for r in mine])
        up = mine[0]["direction"] == "up"
        ax.axhspan(0, 1.05, color="#55A868", alpha=0.08) if up else ax.axhspan(-1.05, 0, color="#55A868", alpha=0.08)
        ax.plot(steps, tau_b, color="#4C72B0", linewidth=1.2)
        ax.scatter(steps[significant], tau_b[significant], color="#4C72B0", s=14, zorder=3,
                   label=f"Holm p < {alpha:g}")
        ax.axhline(0, color="black", linewidth=0.6)
        _mark_milestones(ax, milestones)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{TRAJECTORY_TITLES.get(feature, feature)} (paper: {'higher' if up else 'lower'})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(features):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("SGD step")
    for ax in axes[:, 0]:
        ax.set_ylabel("τ-b with difficulty")
    axes.flat[0].legend(fontsize=7, frameon=False, loc="lower left")
    fig.suptitle(f"when the ordering appears: Kendall τ-b of each feature (τ = {tau:g}) with the difficulty rank; "
                 "shaded: the paper's direction", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# The accuracy–resources front (front.py): one marker per family, the Pareto front as a step line.
FRONT_STYLES = {"complete": ("s", "#8C8C8C"), "thresholded": ("v", "#937860"), "learned": ("o", "#4C72B0"),
                "random": ("^", "#DD8452"), "width": ("D", "#55A868")}


def _cost_axis(ax, costs: Sequence[float]) -> None:
    """A cost axis readable at any span: logarithmic over a decade or more, linear below (where a log axis
    has no major tick and crowds its minor labels), ticks in engineering notation (59.3k, 15.3M).

    A linear axis gets at most 5 ticks: a span such as 13.5M-15.25M otherwise gets 8 labels as wide as
    "14.75M", which run into each other on a half-page panel.
    """
    from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

    finite = [c for c in costs if np.isfinite(c) and c > 0]
    if finite and max(finite) >= 10 * min(finite):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def _lam_anchors(points: Sequence[dict]) -> dict[float, dict]:
    """The point that carries each λ's label on the front: its learned graph, else its first point."""
    anchors: dict[float, dict] = {}
    for p in points:
        if p["lam"] not in anchors or (p["family"] == "learned" and anchors[p["lam"]]["family"] != "learned"):
            anchors[p["lam"]] = p
    return anchors


def plot_front(result: dict, path: str | os.PathLike) -> None:
    """Test accuracy against parameters and against FLOPs per image, a row per dataset (`front.front_result`).

    Each point is a family at one λ, mean ± std over runs. A λ is written once, beside its learned
    graph (else its first point), and thin lines join the learned graph to the families made from it at
    that λ (its thresholded graph, its controls): a label on every point crowds the clusters where
    several λ keep nearly every parameter. The dashed line joins the dataset's Pareto front (no other
    point as accurate for fewer resources).
    """
    blocks = result["datasets"]
    fig, axes = plt.subplots(len(blocks), 2, figsize=(10, 3.8 * len(blocks)), squeeze=False)
    for row, block in zip(axes, blocks):
        anchors = _lam_anchors(block["points"])
        for ax, (cost, key, name) in zip(row, (("parameters", "front_parameters", "parameters"),
                                               ("flops_per_image", "front_flops", "FLOPs per image"))):
            seen = set()
            for p in block["points"]:
                marker, colour = FRONT_STYLES[p["family"]]
                std = [0 if not np.isfinite(p[k]) else p[k] for k in (cost + "_std", "accuracy_std")]
                ax.errorbar(p[cost], p["accuracy"], xerr=std[0], yerr=std[1], fmt=marker, color=colour, capsize=3,
                            label=None if p["family"] in seen else p["label"])
                seen.add(p["family"])
                anchor = anchors[p["lam"]]
                if p is anchor:
                    ax.annotate(f"λ={p['lam']:g}", (p[cost], p["accuracy"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=colour)
                elif anchor["family"] == "learned" and p["family"] in ("thresholded", *CONTROLS):
                    ax.plot([anchor[cost], p[cost]], [anchor["accuracy"], p["accuracy"]], color=colour,
                            linewidth=0.6, alpha=0.5)
            ax.margins(x=0.08)  # room for the λ written right of the outermost point
            front = sorted((p[cost], p["accuracy"]) for p in block["points"] if p[key])
            if front:
                xs, ys = zip(*front)
                ax.step(xs, ys, where="post", linestyle="--", color="black", linewidth=0.8, label="Pareto front")
            _cost_axis(ax, [p[cost] for p in block["points"]])
            ax.set_xlabel(name)
            ax.set_ylabel("test accuracy")
            ax.set_title(f"{block['dataset']}: accuracy against {name}", fontsize=10)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)


def plot_claim(series: Sequence[tuple[str, "OrderingResult"]], path: str | os.PathLike) -> None:
    """The paper's claim, one panel per feature: each dataset's mean ± std against its test accuracy.

    `series` is (name, `stats.OrderingResult`) pairs, one line each (a sweep's features, or one
    capacity's). The x-axis runs from the easiest task (highest accuracy) on the left to the
    hardest on the right; the arrow in each panel points where the paper says the feature goes as
    the task gets harder. Filled markers and a green panel: reproduced (Holm-adjusted p < α).
    """
    features = list(dict.fromkeys(t.feature for _, result in series for t in result.tests))
    if not features:
        raise DagwireError("no feature was tested")
    columns = min(4, len(features))
    rows = -(-len(features) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(features):]:
        ax.set_axis_off()
    for ax, feature in zip(axes.flat, features):
        verdicts, direction = [], "up"
        for k, (name, result) in enumerate(series):
            test = next((t for t in result.tests if t.feature == feature), None)
            if test is None:
                continue
            direction = test.direction
            shown = [d for d in result.datasets if d in test.means]
            colour = STAGE_COLOURS[k % len(STAGE_COLOURS)]
            reproduced = test.verdict == "reproduced"
            ax.errorbar([result.accuracy[d] for d in shown], [test.means[d] for d in shown],
                        yerr=[0 if np.isnan(test.stds[d]) else test.stds[d] for d in shown], fmt="o-", color=colour,
                        markerfacecolor=colour if reproduced else "white", capsize=3, label=name)
            for d in shown:
                ax.annotate(d, (result.accuracy[d], test.means[d]), textcoords="offset points", xytext=(4, 4),
                            fontsize=6, color=colour)
            verdicts.append(reproduced)
        # The paper's direction: up (or down) as the task gets harder, i.e. to the right.
        start, end = ((0.62, 0.12), (0.95, 0.42)) if direction == "up" else ((0.62, 0.42), (0.95, 0.12))
        ax.annotate("", xy=end, xytext=start, xycoords="axes fraction",
                    arrowprops={"arrowstyle": "->", "color": "grey", "linestyle": "--"})
        ax.text(0.62, 0.02, "paper", transform=ax.transAxes, fontsize=7, color="grey")
        if any(verdicts):
            ax.set_facecolor("#eef7ee")
            for spine in ax.spines.values():
                spine.set_edgecolor("#55A868")
                spine.set_linewidth(2)
        ax.invert_xaxis()  # easiest task on the left
        state = "reproduced" if verdicts and all(verdicts) else "partly reproduced" if any(verdicts) else "not reproduced"
        ax.set_title(f"{feature}: {state}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("test accuracy (harder →)", fontsize=8)
    axes.flat[0].legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle("Does a harder task learn a denser, deeper graph? Dataset mean ± std against difficulty "
                 "(arrow: the paper's direction; filled, green: reproduced)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
