"""The sections of the sweep report (SPEC §9): Tables 1-5 and the ordering test as mean ± std beside the
paper's numbers, and every figure, drawn into SWEEP_DIR/report_files/. `report.py` assembles them into pages.
Module-level imports stay light: pandas, yaml, compare and draw are imported where they are used.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .config import DEFAULT_TAU, TAU_GRID
from .errors import DagwireError
from .paper import PAPER_DATASETS, PAPER_LABEL, PAPER_TABLE5, PAPER_TABLE5_DATASET, PAPER_TABLES
from .render import Table, fmt_k, fmt_mean_std
from .sweep.plan import SWEEP_FILE

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np

    from .stats import InteractionTest, OrderingResult

#: The folder beside report.md that holds the figures.
FILES_DIR = "report_files"


# --------------------------------------------------------------------------------------------
# Numbers


def stats_by_dataset(df, columns: Sequence[str]):
    """Mean, std (ddof=1) and count of each column per dataset: a DataFrame with (column, stat) columns."""
    import pandas as pd

    from .compare import dataset_order

    order = dataset_order(df["dataset"])
    present = [c for c in columns if c in df.columns]
    values = df[["dataset"]].join(df[present].apply(pd.to_numeric, errors="coerce").astype("float64"))
    for c in columns:
        if c not in present:
            values[c] = float("nan")
    out = values.groupby("dataset", sort=False)[list(columns)].agg(["mean", "std", "count"])
    return out.reindex(order)


def comparison_table(title: str, df, rows: Sequence[tuple[str, str, Callable[[float, float], str]]],
                     paper: dict[str, dict[str, tuple[float, float]]] | None, note: str = "",
                     group_label: str = "connected runs") -> Table:
    """Rows = quantities, columns = per dataset 'ours (n=k)' and, where the paper has it, 'paper'."""
    keys = [key for key, _, _ in rows]
    stats = stats_by_dataset(df, keys)
    sizes = df.groupby("dataset", sort=False).size()
    header, paper_cols = ["quantity"], set()
    datasets = list(stats.index)
    for d in datasets:
        header.append(f"{d} ours (n={int(sizes.get(d, 0))})")
        if paper is not None and d in PAPER_DATASETS:
            header.append(f"{d} paper")
            paper_cols.add(len(header) - 1)
    body = []
    for key, label, fmt in rows:
        line = [label]
        for d in datasets:
            mean, std, count = (float(stats.loc[d, (key, s)]) for s in ("mean", "std", "count"))
            cell = fmt(mean, std)
            if count and count != int(sizes.get(d, 0)):
                cell += f" (n={int(count)})"  # some runs lack this value
            line.append(cell)
            if paper is not None and d in PAPER_DATASETS:
                published = paper.get(key, {}).get(d)
                line.append(fmt(*published) if published else "–")
        body.append(line)
    full_note = f"Mean ± std (ddof=1) over {group_label} per dataset; n = runs in the group."
    if paper is not None:
        full_note += f" Columns 'paper': {PAPER_LABEL}."
    if note:
        full_note += " " + note
    return Table(title, header, body, full_note, paper_cols)


def _stage_rows(df, prefix: str, label: str, fmt) -> list[tuple[str, str, Callable]]:
    stages = sorted(int(c.rsplit("_", 1)[1]) for c in df.columns
                    if c.startswith(prefix + "_stage_") and c.rsplit("_", 1)[1].isdigit())
    return [(f"{prefix}_stage_{s}", f"{label} – stage {s}", fmt) for s in stages]


def table1(df) -> Table:
    """Table 1: sparsity and nodes (all and per stage) and parameters of the pruned graphs."""
    f3, f1 = fmt_mean_std(3), fmt_mean_std(1)
    rows = ([("sparsity", "sparsity (all)", f3)] + _stage_rows(df, "sparsity", "sparsity", f3)
            + [("nodes", "nodes (all)", f1)] + _stage_rows(df, "nodes", "nodes", f1)
            + [("parameters", "parameters", fmt_k)])
    return comparison_table("Table 1: structural characteristics of the pruned networks", _connected(df), rows,
                            PAPER_TABLES["table1"])


def table2(df) -> Table:
    """Table 2: path, communicability, connectivity, degree and elongation features."""
    f2 = fmt_mean_std(2)
    rows = [(k, k, f2) for k in ("log_paths", "mean_path", "max_path", "ln_communicability",
                                 "edge_connectivity", "mean_degree", "pca_elongation")]
    q1d = _connected(df)
    note = ""
    if "q1d" in q1d.columns:
        from .compare import as_bool

        share = float(as_bool(q1d["q1d"]).mean()) if len(q1d) else float("nan")
        note = f"Q1D (pca_elongation > 0.25 and edge_connectivity > 1) holds for {100 * share:.0f} % of them."
    return comparison_table("Table 2: graph characteristics of the pruned networks", q1d, rows,
                            PAPER_TABLES["table2"], note)


def ordering_table(df, suffix: str = "", label: str = "") -> Table | None:
    """The test of the paper's claim (`stats.ordering_test`) as a table; None with fewer than 2 datasets.

    Difficulty is measured, not assumed: datasets are ranked by their mean test accuracy, easiest
    first. `suffix` picks the features at τ* (stats.TAU_STAR_SUFFIX) instead of the sweep's τ.
    """
    from .stats import ordering_test

    return verdict_table(ordering_test(df, suffix, label=label))


def _feature_format(feature: str) -> Callable[[float, float], str]:
    return fmt_k if feature == "parameters" else fmt_mean_std(3 if feature == "sparsity" else 2)


def verdict_table(result: OrderingResult | None, where: str = "") -> Table | None:
    """An `OrderingResult` as its verdict table: per feature the datasets' mean ± std, τ-b, p, Holm's p, verdict."""
    if result is None or not result.tests:
        return None
    ranked = result.datasets
    header = ["feature", "paper: harder task →", *[f"{d} (acc {100 * result.accuracy[d]:.1f} %)" for d in ranked],
              "Kendall τ-b", "p (one-sided)", "p (Holm)", "verdict"]
    rows = []
    for t in result.tests:
        fmt = _feature_format(t.feature)
        rows.append([t.feature, "higher" if t.direction == "up" else "lower",
                     *[fmt(t.means[d], t.stds[d]) if d in t.means else "–" for d in ranked],
                     f"{t.tau_b:+.3f}", f"{t.p:.4f}", f"{t.p_holm:.4f}", t.verdict])
    reproduced = sum(t.verdict == "reproduced" for t in result.tests)
    note = (f"Features at {result.columns}, over {result.runs} connected runs. Datasets ranked by mean test accuracy, "
            f"easiest first (difficulty measured here, not assumed). Per feature: Kendall's τ-b between the "
            f"difficulty rank and the feature over all runs; p: one-sided permutation test in the paper's "
            f"direction ({result.permutations} shufflings of the dataset labels); Holm-adjusted across the "
            f"{len(result.tests)} features; 'reproduced' when the adjusted p < {result.alpha}. {reproduced} of "
            f"{len(result.tests)} features are reproduced. Sparsity is a fraction of the initial N(N−1)/2 edges and "
            f"grows with the network; mean degree (2 × edges per node), nodes kept and path lengths compare across "
            f"scales. The differences between adjacent datasets are in the next table.")
    if result.collapsed:
        note += (f" Left out: {len(result.collapsed)} run(s) that collapsed in their first lr phase "
                 f"({', '.join(result.collapsed)}; listed below).")
    return Table(f"Does a harder task learn a denser, deeper graph? ({where}features at {result.columns})",
                 header, rows, note, text_columns=2)


def pairs_table(result: OrderingResult | None, where: str = "") -> Table | None:
    """An `OrderingResult`'s differences of means between adjacent datasets, one row per feature and pair."""
    if result is None or not any(t.pairs for t in result.tests):
        return None
    rows = [[t.feature, pair.text()] for t in result.tests for pair in t.pairs]
    return Table(f"Harder − easier dataset, per feature ({where}features at {result.columns})",
                 ["feature", "harder − easier: difference of means [bootstrap 95 % interval]"], rows,
                 "Adjacent datasets in the order of difficulty above; runs resampled within each dataset "
                 f"({result.permutations} resamples, percentile interval).", text_columns=2)


def answer_lines(orderings: Sequence[tuple[str, OrderingResult | None]],
                 interaction: Sequence[InteractionTest] | None = None,
                 capacities: tuple[int, int] | None = None) -> list[str]:
    """One sentence per test: how many features are reproduced, at which τ, and what the pooled test says."""
    lines = []
    for where, result in orderings:
        if result is None or not result.tests:
            continue
        kept = [t.feature for t in result.tests if t.verdict == "reproduced"]
        line = (f"{where}features at {result.columns}, {result.runs} runs: {len(kept)} of {len(result.tests)} "
                f"features follow the paper's ordering after Holm's correction" + (f" ({', '.join(kept)})." if kept else "."))
        lines.append(line[0].upper() + line[1:])
    if interaction and capacities:
        grown = [t.feature for t in interaction if t.verdict == "grows"]
        lines.append(f"Pooled test, C = {capacities[0]} → {capacities[1]}: the difficulty effect grows for "
                     f"{len(grown)} of {len(interaction)} features" + (f" ({', '.join(grown)})" if grown else "")
                     + f" (smallest Holm-adjusted p = {min(t.p_holm for t in interaction):.4f}).")
    return lines


def interaction_table(small, large, suffix: str = "", tests: Sequence[InteractionTest] | None = None) -> Table | None:
    """Whether the difficulty effect grows from the smaller capacity's runs to the larger's (`stats.interaction_test`,
    or its `tests` when given)."""
    from .stats import interaction_test

    tests = interaction_test(small, large, suffix) if tests is None else tests
    if not tests:
        return None
    c_small, c_large = int(small["channels"].dropna().iloc[0]), int(large["channels"].dropna().iloc[0])
    rows = [[t.feature, "higher" if t.direction == "up" else "lower", f"{t.tau_b_small:+.3f}", f"{t.tau_b_large:+.3f}",
             f"{t.delta:+.3f} [{t.low:+.3f}, {t.high:+.3f}]", f"{t.p:.4f}", f"{t.p_holm:.4f}", t.verdict]
            for t in tests]
    note = (f"Δ = τ-b at C = {c_large} minus τ-b at C = {c_small}, each over that capacity's runs with datasets "
            f"ranked by that capacity's accuracy; 95 % bootstrap interval, runs resampled within each dataset × "
            f"capacity cell; p: one-sided, capacity labels permuted within each dataset on within-capacity ranks; "
            f"Holm across the {len(tests)} features; 'grows' when the adjusted p < 0.05.")
    return Table(f"Does the difficulty effect grow with capacity? (C = {c_small} → {c_large})",
                 ["feature", "paper: harder task →", f"τ-b, C = {c_small}", f"τ-b, C = {c_large}",
                  "Δ [95 % CI]", "p (one-sided)", "p (Holm)", "verdict"], rows, note, text_columns=2)


def with_retrain_columns(df, tau: float = DEFAULT_TAU):
    """A copy of the runs with the columns of Tables 3 and 5 (seconds, accuracies in %), from the runs table.

    `tau` is kept for callers; the table's retrained columns are those of the sweep's own τ.
    """
    import pandas as pd

    df = df.copy()

    def column(name: str):
        return pd.to_numeric(df[name], errors="coerce") if name in df.columns else pd.Series(float("nan"), index=df.index)

    df["seconds_full"] = column("mean_epoch_seconds")
    df["seconds_retrain"] = column("retrain_mean_epoch_seconds")
    df["seconds_retrain_fitc"] = column("retrain_fit_mean_epoch_seconds")
    # Accuracies are stored as fractions; the paper's Table 5 prints percent.
    for name, source in (("acc_standard", "test_accuracy"), ("acc_thresholded", "thresholded_accuracy"),
                         ("acc_retrained", "retrained_accuracy"), ("acc_retrained_fitc", "retrained_fit_accuracy")):
        df[name] = 100.0 * column(source)
    return df


def table3(df, tau: float = DEFAULT_TAU) -> Table:
    """Table 3: mean epoch time of the full DAG and of its retrained pruned networks (same C, fitted C)."""
    f2 = fmt_mean_std(2)
    rows = [("seconds_full", "full DAG", f2), ("seconds_retrain", "rerun", f2),
            ("seconds_retrain_fitc", "rerun (fit C)", f2)]
    done = with_retrain_columns(df[df["done"]], tau)
    return comparison_table(
        "Table 3: mean epoch time (seconds)", done, rows, PAPER_TABLES["table3"],
        f"Ours: this sweep's device and scale; paper: GeForce RTX 2080 Ti. Reruns: the runs table's retrained "
        f"columns (`dagwire sweep --retrain`, RUN/retrain-{tau:g}[-fitC]/; '–': none).",
        group_label="done runs")


def table4(df) -> Table:
    """Table 4: edge dynamics (A)-(D) and number of edges of the pruned networks, plus the Fig. 6b DSC."""
    f2 = fmt_mean_std(2)
    rows = [("dyn_A", "(A) % retained ever below τ", f2), ("dyn_B", "(B) epochs a retained edge was below τ", f2),
            ("dyn_C", "(C) % eliminated later above 10τ", f2), ("dyn_D", "(D) epochs an eliminated edge was above τ", f2),
            ("dyn_edges", "number of edges", f2),
            ("dyn_dsc_largest", "DSC with largest epoch-1 edges (Fig. 6b)", fmt_mean_std(3)),
            ("dyn_dsc_smallest", "DSC with smallest epoch-1 edges (Fig. 6b)", fmt_mean_std(3))]
    return comparison_table("Table 4: edge dynamics during training", _connected(df), rows, PAPER_TABLES["table4"],
                            "The paper gives the DSC rows as a figure only.")


def local_label(local_dir: str | os.PathLike | None) -> str:
    """How Table 5 names the local initial graph: its window from the local sweep's sweep.yaml."""
    import yaml

    try:
        window = yaml.safe_load((Path(local_dir) / SWEEP_FILE).read_text())["config"]["local_window"]
        return f"local (|i − j| ≤ {int(window)})"
    except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
        return "local initial graph"


def table5(df, local_df=None, tau: float = DEFAULT_TAU, local_name: str = "local initial graph") -> Table:
    """Table 5: test accuracy (%) standard / thresholded / retrained, full DAG vs local initial graph."""
    import pandas as pd

    from .compare import dataset_order

    keys = ["acc_standard", "acc_thresholded", "acc_retrained", "acc_retrained_fitc"]
    header = ["dataset", "initial graph", "source", "standard", "thresholded", "retrained", "retrained (fit C)"]
    sources = [("full", "full DAG", df)]
    if local_df is not None:
        sources.append(("local", local_name, local_df))
    tables = {}
    for name, _, frame in sources:
        done = with_retrain_columns(frame[frame["done"]], tau)
        tables[name] = (stats_by_dataset(done, keys), done.groupby("dataset", sort=False).size())
    datasets = dataset_order(pd.concat([frame["dataset"] for _, _, frame in sources]))
    body, paper_rows = [], set()
    f3 = fmt_mean_std(3)
    for d in datasets:
        for name, label, _ in sources:
            stats, sizes = tables[name]
            if d not in stats.index:
                continue
            n = int(sizes.get(d, 0))
            line = [d, label, f"ours (n={n})"]
            for key in keys:
                mean, std, count = (float(stats.loc[d, (key, s)]) for s in ("mean", "std", "count"))
                line.append(f3(mean, std) + (f" (n={int(count)})" if count and count != n else ""))
            body.append(line)
            if d == PAPER_TABLE5_DATASET:
                published = PAPER_TABLE5[name]
                body.append([d, label, "paper"] + [f3(*published[k]) if k in published else "–"
                                                    for k in ("standard", "thresholded", "retrained", "retrained_fitc")])
                paper_rows.add(len(body) - 1)
    note = (f"Test accuracy in %, mean ± std (ddof=1) over done runs. Thresholded: pruned at τ = {tau:g}, "
            f"no fine-tuning; retrained: RUN/retrain-{tau:g}[-fitC]/. Rows 'paper': {PAPER_LABEL}; "
            f"the paper does not name Table 5's dataset, its ~92.8 % is CIFAR10's level, so it stands beside "
            f"cifar10 only.")
    if local_df is None:
        note += " No local-graph sweep was given (--local DIR), so only full-DAG rows are ours."
    table = Table("Table 5: test accuracy, full DAG vs local initial graph", header, body, note,
                  paper_rows=paper_rows, text_columns=3)
    return table


def _connected(df):
    return df[df["connected"]]


# --------------------------------------------------------------------------------------------
# Figures


@dataclass
class Figure:
    """A figure in the report: its PNG under report_files/ (None when it could not be drawn)."""

    title: str
    caption: str
    file: str | None
    error: str = ""


def _pooled_taus(tau: float) -> list[float]:
    """The τ of Fig. 8's pooled graphs: every grid τ up to the sweep's, as the paper's Fig. 8 pools τ ≤ 0.006."""
    return sorted({t for t in TAU_GRID if 0 < t <= tau} | {tau})


def pooled_embedding(df, tau: float) -> tuple[np.ndarray, list]:
    """Fig. 8's numbers: the 2-D embedding of every connected run's features at each pooled τ, and its labels."""
    from . import compare

    pooled, labels = compare.pooled_feature_matrix(df, _pooled_taus(tau))
    if not labels:
        raise DagwireError("no connected runs")
    return compare.umap_embedding(pooled, seed=0), labels


def start_embedding(df, tau: float) -> Future | None:
    """`pooled_embedding` started in another process (a Future), None where none can start.

    UMAP compiles its numba code in every process, the longest step of a report: in a process of
    its own it runs while this one makes the tests, the tables and the other figures. A forked
    process, so that a caller's script is not run again in it (as a spawned one would import it
    anew); where fork is not offered, None.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    try:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        future = pool.submit(pooled_embedding, df, tau)
        pool.shutdown(wait=False)  # the worker ends once its one task is done
        return future
    except (OSError, RuntimeError, ImportError):
        return None


def _embedding_result(embedding: Future | None, df, tau: float) -> tuple[np.ndarray, list]:
    """The other process's embedding, or this process's own where there is none or that process died: a fork
    of a process whose native libraries hold threads can die in the child (seen after a suite had run Ray and
    torch in the same process), and the embedding is the same either way."""
    from concurrent.futures.process import BrokenProcessPool

    if embedding is not None:
        try:
            return embedding.result()
        except (BrokenProcessPool, OSError):
            pass
    return pooled_embedding(df, tau)


def draw_figures(df, sweep: Path, tau: float, embedding: Future | None = None) -> tuple[list[Figure], list[Table]]:
    """Draw every figure into SWEEP/report_files; a figure that cannot be drawn says why instead.

    `embedding`: a Future of `pooled_embedding(df, tau)` (`start_embedding`), else computed here.
    """
    from . import compare
    from . import draw as drawing

    out = sweep / FILES_DIR
    figures: list[Figure] = []
    extra_tables: list[Table] = []

    def attempt(title: str, caption: str, name: str, draw: Callable[[Path], None]) -> None:
        try:
            draw(out / name)
            figures.append(Figure(title, caption, name))
        except Exception as exc:  # one figure must not sink the whole report: say why instead
            figures.append(Figure(title, caption, None, f"{type(exc).__name__}: {exc}"))

    attempt("Fig. 2: threshold curves",
            "Mean test accuracy (no fine-tuning) and mean sparsity over τ per dataset, from every done run's "
            "thresholds.csv.", "fig2_thresholds.png", lambda p: drawing.plot_threshold_curves(df, p, tau))

    X, labels = compare.feature_matrix(df)

    def similarity(p: Path) -> None:
        if not labels:
            raise DagwireError("no connected runs")
        drawing.plot_similarity(compare.similarity_matrix(X), labels, p)

    attempt("Fig. 4: network similarity",
            "RBF kernel (γ = 1 / number of features) between standardised feature vectors (Tables 1–2 without "
            "parameters) of every connected run, ordered by dataset then seed.", "fig4_similarity.png", similarity)


    pooled_taus = _pooled_taus(tau)

    def embedded(p: Path) -> None:
        drawing.plot_umap(*_embedding_result(embedding, df, tau), p)

    fig8_at = len(figures)  # drawn last, when the other process has had the most time; shown here

    def fig8() -> None:
        attempt("Fig. 8: UMAP embedding",
                f"UMAP (n_neighbors = min(15, n − 1), seed 0) of the standardised features (Tables 1–2 without "
                f"parameters) of every connected run's graph at each τ in "
                f"{{{', '.join(f'{t:g}' for t in pooled_taus)}}} (as the paper's Fig. 8 pools τ ≤ {DEFAULT_TAU}): "
                f"one point per (run, τ) with a connected graph; PCA below {compare.UMAP_MIN_POINTS} points.",
                "fig8_umap.png", embedded)
        figures.insert(fig8_at, figures.pop())

    attempt("Fig. 9: pruned graphs", f"Pruned graphs (τ = {tau:g}) per dataset (rows) and seed (columns).",
            "fig9_graphs.png", lambda p: drawing.plot_graph_grid(df, p, tau))
    for d in compare.dataset_order(df["dataset"]):
        example = _example_run(df[df["dataset"] == d], tau)
        if example is None:
            figures.append(Figure(f"Fig. 6a: edge trajectories, {d}", "", None,
                                  "no connected run with graph.json and a matching edge_history.npy"))
            continue
        seed, spec, history = example
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in d)
        attempt(f"Fig. 6a: edge trajectories, {d}",
                f"{d} seed {seed}: |tanh w| after each epoch for a sample of retained (left) and eliminated (right) "
                f"edges; dashed line τ = {tau:g}.", f"fig6a_{safe}.png",
                lambda p, s=spec, h=history, sd=seed: drawing.plot_edge_trajectories(
                    h, compare.retained_mask(s, tau), tau, p, title=f"{d} seed {sd}"))
    attempt("Fig. 6b: DSC with epoch-1 edges",
            "Mean ± std DSC between each pruned edge set and the same number of largest / smallest edges after "
            "epoch 1.", "fig6b_dsc.png", lambda p: drawing.plot_dsc(df, p))

    trajectory_figures(df, out, tau, attempt)

    topk_holder: list = []

    def topk(p: Path) -> None:
        result = compare.topk_similarity(df, tau)
        topk_holder.append(result)
        drawing.plot_topk(result, p)

    attempt("Fig. 7: pruned vs top-k graphs",
            "(a) RBF similarity (features standardised jointly over pruned and top-k graphs) and (b) edge DSC "
            "between pruned graphs (rows) and top-k graphs of the largest epoch-1 edges (columns); k is the "
            "smallest number ≥ (1 − mean sparsity of the dataset)·|E| whose top-k edges form a weakly connected "
            "graph holding input and output.", "fig7_topk.png", topk)
    if topk_holder and len(topk_holder[0].table):
        result = topk_holder[0]
        rows = [("rbf", "RBF similarity, own top-k graph", fmt_mean_std(3)), ("dsc", "edge DSC, own top-k graph", fmt_mean_std(3)),
                ("k", "k (edges of the top-k graph)", fmt_mean_std(1)), ("target_edges", "target size", fmt_mean_std(1))]
        note = "The paper gives these as a figure only."
        if result.skipped:
            note += " Skipped: " + "; ".join(result.skipped) + "."
        extra_tables.append(comparison_table("Fig. 7 in numbers: each pruned graph vs its own top-k graph",
                                             result.table, rows, None, note, group_label="runs"))
    fig8()
    return figures, extra_tables


# The report measures at most this many epochs of each run: enough for a trajectory's shape, and it keeps
# the committed capacity report within its 20 s (every epoch of its 46 doubled the trajectory's cost).
REPORT_TRAJECTORY_POINTS = 24


def trajectory_figures(df, out: Path, tau: float, attempt: Callable[[str, str, str, Callable[[Path], None]], None]) -> None:
    """The feature trajectories of every done run (trajectory.py), and when the ordering appears."""
    from . import draw as drawing
    from . import trajectory

    held: dict = {}

    def computed():
        if not held:
            done = df[df["done"]]
            if not len(done):
                raise DagwireError("no finished runs")
            schedule = trajectory.schedule_of(done["run_dir"].iloc[0])
            every = max(1, math.ceil(schedule.epochs / REPORT_TRAJECTORY_POINTS))
            table = trajectory.sweep_trajectories(df, tau, every, progress=False)
            held.update(schedule=schedule, every=every, table=table,
                        ordering=trajectory.ordering_over_time(table, progress=False)
                        if table["dataset"].nunique() >= 2 else [])
        return held

    def features(p: Path) -> None:
        t = computed()
        drawing.plot_feature_trajectories(trajectory.trajectory_summary(t["table"]), t["schedule"].milestones, p, tau)

    def ordering(p: Path) -> None:
        t = computed()
        if not t["ordering"]:
            raise DagwireError("the ordering needs finished runs of at least two datasets")
        drawing.plot_ordering_over_time(t["ordering"], t["schedule"].milestones, p, tau)

    attempt("Feature trajectories",
            f"The graph each run would have left at up to {REPORT_TRAJECTORY_POINTS} evenly spaced epochs and the "
            f"last (from edge_history.npy): thresholded at τ = {tau:g}, dead paths removed; mean ± std over seeds per "
            "dataset against the SGD step, lr drops dotted (`dagwire trajectory`).", "trajectory_features.png", features)
    attempt("When the ordering appears",
            "Kendall τ-b between each feature at that epoch and the difficulty rank (datasets ranked by final test "
            "accuracy), 1,999 permutations, Holm across features at each epoch; filled points: Holm p < 0.05; "
            "shaded: the paper's direction; gaps: the feature does not vary.", "trajectory_ordering.png", ordering)


def _example_run(rows, tau: float):
    """(seed, spec, history) of the first connected run of a dataset with usable files, or None."""
    from .compare import load_graph, load_history

    for _, row in rows[rows["connected"]].iterrows():
        try:
            spec, history = load_graph(row["run_dir"]), load_history(row["run_dir"])
        except (DagwireError, OSError, ValueError):
            continue
        if spec is not None and spec.weights is not None and history is not None and history.shape[1] == spec.num_edges:
            return int(row["seed"]), spec, history
    return None
