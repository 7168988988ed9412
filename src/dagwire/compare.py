"""Comparing learned networks across runs (SPEC §6, §7): similarity, UMAP, top-k graphs, edge dynamics.

Everything here works from a sweep's `runs.csv` (read with `load_runs`) and its run directories:
numbers only, no torch, no matplotlib. The figures of these numbers are drawn in `dagwire.draw`.

Conventions:
- Runs are ordered by dataset in the paper's order of difficulty (cmnist, ckmnist, cfashionmnist,
  cifar10, cifar10_t8), other datasets after them alphabetically, then by seed.
- A "connected" run is a done run whose pruned graph reaches the output; only those have features.
- Standard deviations are sample standard deviations (ddof=1), as in pandas.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import DEFAULT_TAU
from .errors import DagwireError
from .paper import PAPER_DATASETS
from .rundir import RunDir
from .tables import RUNS_CSV, RUNS_PARQUET, read_runs_table
from .spec import GraphSpec

# The paper's datasets in its order of difficulty (Tables 1-5 columns).

# Table 1 + Table 2 features except `parameters` (SPEC §6), for the paper's 3 stages; `feature_columns`
# expands the per-stage entries to the stages a sweep actually has.
FEATURES_FOR_SIMILARITY: tuple[str, ...] = (
    "sparsity", "sparsity_stage_0", "sparsity_stage_1", "sparsity_stage_2",
    "nodes", "nodes_stage_0", "nodes_stage_1", "nodes_stage_2",
    "log_paths", "mean_path", "max_path", "ln_communicability", "edge_connectivity",
    "mean_degree", "pca_elongation",
)
_GLOBAL_FEATURES = ("log_paths", "mean_path", "max_path", "ln_communicability", "edge_connectivity",
                    "mean_degree", "pca_elongation")

# Below this many networks UMAP's neighbour graph is meaningless; a PCA projection stands in.
UMAP_MIN_POINTS = 4

DATASET_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
                   "#8C8C8C", "#CCB974", "#64B5CD")


# --------------------------------------------------------------------------------------------
# runs.csv


def dataset_order(names: Sequence[str]) -> list[str]:
    """Distinct dataset names, the paper's five first in its order, then the rest alphabetically."""
    distinct = list(dict.fromkeys(str(n) for n in names))
    known = [d for d in PAPER_DATASETS if d in distinct]
    return known + sorted(d for d in distinct if d not in PAPER_DATASETS)


def as_bool(values) -> np.ndarray:
    """A CSV column of booleans (True/False, 1/0, strings, blanks) as a numpy bool array."""
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(False)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out.append(bool(v))
        else:
            out.append(str(v).strip().lower() in ("true", "1", "yes"))
    return np.array(out, dtype=bool)


def load_runs(sweep_dir: str | os.PathLike):
    """runs.csv of a sweep as a DataFrame, sorted by dataset then seed, run_dir made absolute."""

    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise DagwireError(f"sweep directory not found: {sweep}")
    if not (sweep / RUNS_CSV).is_file() and not (sweep / RUNS_PARQUET).is_file():
        raise DagwireError(f"{sweep / RUNS_CSV} not found: run `dagwire sweep` first (it writes {RUNS_CSV})")
    df = with_flags(read_runs_table(sweep))
    df["run_dir"] = [_resolve_run_dir(sweep, v) for v in df["run_dir"]]
    order = {d: k for k, d in enumerate(dataset_order(df["dataset"]))}
    df = df.assign(_order=df["dataset"].map(order)).sort_values(["_order", "seed"], kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


def with_flags(df):
    """A copy of a runs table with boolean columns done, disconnected and connected (features exist)."""
    import pandas as pd

    df = df.copy()
    df["dataset"] = df["dataset"].astype(str)
    df["status"] = df["status"].astype(str).str.strip() if "status" in df.columns else "done"
    df["done"] = df["status"].eq("done")
    df["disconnected"] = as_bool(df["disconnected"]) if "disconnected" in df.columns else False
    # A done run without graph features (a disconnected graph has none) cannot be compared.
    if "nodes" in df.columns:
        df["disconnected"] = df["disconnected"] | pd.to_numeric(df["nodes"], errors="coerce").isna()
    df["connected"] = df["done"] & ~df["disconnected"]
    if "run_dir" not in df.columns:
        df["run_dir"] = ""
    df["run_dir"] = _text(df["run_dir"])
    df["error"] = _text(df["error"]) if "error" in df.columns else ""
    return df


def _text(column) -> list[str]:
    """A CSV column as strings, blanks (read as NaN) as ""."""
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in column]


def _resolve_run_dir(sweep: Path, value: Any) -> str:
    """A run_dir cell as an absolute path: as written, else relative to the sweep directory."""
    if not isinstance(value, str) or not value.strip():
        return ""
    path = Path(value)
    if path.is_absolute():
        return str(path)
    # The sweep may store paths relative to where it was started or to the sweep itself.
    for candidate in (sweep / path, path):
        if candidate.exists():
            return str(candidate.resolve())
    return str((sweep / path).resolve())


def feature_columns(df) -> list[str]:
    """FEATURES_FOR_SIMILARITY for the stages present in `df` (sparsity_stage_s, nodes_stage_s)."""
    stages = sorted({int(c.rsplit("_", 1)[1]) for c in df.columns
                     if c.startswith("sparsity_stage_") and c.rsplit("_", 1)[1].isdigit()})
    return (["sparsity"] + [f"sparsity_stage_{s}" for s in stages]
            + ["nodes"] + [f"nodes_stage_{s}" for s in stages if f"nodes_stage_{s}" in df.columns]
            + list(_GLOBAL_FEATURES))


def standardise(X: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance (sklearn StandardScaler); a constant column becomes 0."""
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=float)
    if X.shape[0] == 0:
        return X.copy()
    # StandardScaler leaves a zero-variance column's scale at 1, so it centres to exactly 0.
    return StandardScaler().fit_transform(X)


def feature_matrix(df) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Standardised feature vectors of the connected done runs (by dataset, seed) and their (dataset, seed)."""
    rows = connected_runs(df)
    columns = feature_columns(df)
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise DagwireError(f"runs.csv lacks the feature column(s) {', '.join(missing)}")
    X = rows[columns].apply(numeric_values).to_numpy(dtype=float)
    finite = np.isfinite(X).all(axis=1)
    rows, X = rows[finite], X[finite]
    labels = [(str(d), int(s)) for d, s in zip(rows["dataset"], rows["seed"])]
    return standardise(X), labels


def pooled_feature_matrix(df, taus: Sequence[float]) -> tuple[np.ndarray, list[tuple[str, int, float]]]:
    """Standardised feature vectors of every connected done run's graph.json at each τ of `taus`.

    The paper's Fig. 8 embeds the networks "for thresholds equal or smaller than 0.006": one point
    per (run, τ) whose pruned graph is connected, labelled (dataset, seed, τ).
    """
    from . import graphs

    columns = feature_columns(df)
    vectors, labels = [], []
    for _, row in connected_runs(df).iterrows():
        spec = load_graph(row["run_dir"])
        if spec is None or spec.weights is None:
            continue
        for tau in taus:
            found = graphs.recorded_features(spec, tau)
            vector = [float(found.get(c, float("nan"))) for c in columns]
            if found.get("disconnected") or not np.isfinite(vector).all():
                continue
            vectors.append(vector)
            labels.append((str(row["dataset"]), int(row["seed"]), float(tau)))
    if not vectors:
        return np.zeros((0, len(columns))), []
    return standardise(np.asarray(vectors, dtype=float)), labels


def numeric_values(column):
    import pandas as pd

    return pd.to_numeric(column, errors="coerce")


def connected_runs(df):
    """The connected done runs, sorted by dataset (paper order) then seed."""
    if "connected" not in df.columns:
        df = with_flags(df)
    rows = df[df["connected"]]
    order = {d: k for k, d in enumerate(dataset_order(rows["dataset"]))}
    return rows.assign(_o=rows["dataset"].map(order)).sort_values(["_o", "seed"], kind="stable").drop(columns="_o")


# --------------------------------------------------------------------------------------------
# Similarity (Fig. 4) and UMAP (Fig. 8)


def similarity_matrix(X: np.ndarray, gamma: float | None = None) -> np.ndarray:
    """RBF kernel exp(-γ‖x−y‖²) between rows; γ defaults to sklearn's 1 / n_features."""
    from sklearn.metrics.pairwise import rbf_kernel

    X = np.asarray(X, dtype=float)
    if X.shape[0] == 0:
        return np.zeros((0, 0))
    return rbf_kernel(X, gamma=gamma)


def dataset_of(label) -> str:
    return str(label[0]) if isinstance(label, (tuple, list)) else str(label)


def dataset_blocks(labels: Sequence) -> list[tuple[str, int, int]]:
    """(dataset, start, stop) of consecutive runs of the same dataset."""
    out: list[tuple[str, int, int]] = []
    for k, label in enumerate(labels):
        d = dataset_of(label)
        if out and out[-1][0] == d:
            out[-1] = (d, out[-1][1], k + 1)
        else:
            out.append((d, k, k + 1))
    return out


def _pca_2d(X: np.ndarray) -> np.ndarray:
    """First two principal-component scores (zero-padded), signs fixed for determinism."""
    X = np.asarray(X, dtype=float)
    out = np.zeros((X.shape[0], 2))
    if X.shape[0] < 2:
        return out
    centred = X - X.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    for k in range(min(2, len(s))):
        if s[k] <= 1e-12:
            break
        v = vt[k] * (1.0 if vt[k][np.argmax(np.abs(vt[k]))] >= 0 else -1.0)
        out[:, k] = centred @ v
    return out


def umap_embedding(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the rows (n_neighbors = min(15, n−1)); below UMAP_MIN_POINTS rows, a PCA projection."""
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    if n < UMAP_MIN_POINTS:
        return _pca_2d(X)
    import umap

    with warnings.catch_warnings():
        # umap warns that a fixed random_state forces one thread, and about tiny spectral inits.
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
        return np.asarray(reducer.fit_transform(X), dtype=float)


# --------------------------------------------------------------------------------------------
# Drawings (Fig. 3, 9)


def load_graph(run_dir: str) -> GraphSpec | None:
    from . import spec as specs

    path = RunDir(run_dir).graph if run_dir else None
    if path is None or not path.is_file():
        return None
    return specs.load(path)


# --------------------------------------------------------------------------------------------
# Edge dynamics (Fig. 6, 7)


def load_history(run_dir: str) -> np.ndarray | None:
    """edge_history.npy of a run (epochs × edges), or None when it is missing."""
    path = RunDir(run_dir).edge_history if run_dir else None
    if path is None or not path.is_file():
        return None
    history = np.load(path, allow_pickle=False)
    return np.atleast_2d(np.asarray(history, dtype=float))


def mean_std(values: np.ndarray) -> tuple[float, float, int]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), 0
    std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return float(values.mean()), std, int(values.size)


def topk_graph(spec: GraphSpec, first_epoch: np.ndarray, target_edges: int) -> GraphSpec:
    """The top-k graph of App. D: the k largest epoch-1 edges, k the smallest ≥ target_edges that connects.

    Edges of `spec` (every edge of the initial graph, in graph.json order) are ranked by their
    |tanh w| after epoch 1, largest first; ties keep the graph.json (i, j) order. k is the smallest
    number, at least `target_edges` (clamped to [1, |E|]), such that the graph formed by the top-k
    edges (its nodes: the endpoints of those edges) contains the input node 0 and the output node
    N−1 and is weakly connected. Returns that graph with the epoch-1 values as weights. Weak
    connectivity does not guarantee a directed input→output path; `topk_similarity` checks that.
    """
    import networkx as nx

    first_epoch = np.asarray(first_epoch, dtype=float).ravel()
    if first_epoch.size != spec.num_edges:
        raise ValueError(f"{first_epoch.size} epoch-1 values for {spec.num_edges} edges")
    if spec.num_edges == 0:
        raise DagwireError("the graph has no edges: no top-k graph exists")
    order = np.argsort(-first_epoch, kind="stable")
    target = min(max(int(target_edges), 1), spec.num_edges)
    # Adding edges in rank order with a union-find gives every prefix's weak components in one pass.
    components = nx.utils.UnionFind()
    touched: set[int] = set()
    parts = 0
    for k, e in enumerate(order, start=1):
        i, j = spec.edges[e]
        for node in (i, j):
            if node not in touched:
                touched.add(node)
                parts += 1
        if components[i] != components[j]:
            components.union(i, j)
            parts -= 1
        if k >= target and parts == 1 and 0 in touched and spec.output in touched:
            chosen = sorted(order[:k].tolist())
            return spec.with_edges([spec.edges[c] for c in chosen], [float(first_epoch[c]) for c in chosen])
    raise DagwireError("the initial graph's edges do not form a weakly connected graph holding input and output")


@dataclass
class TopKResult:
    """Fig. 7 data: per-run similarities and the pruned × top-k matrices (runs ordered by dataset, seed)."""

    table: Any  # DataFrame: dataset, seed, target_edges, k, rbf, dsc (own pruned graph vs own top-k)
    labels: list[tuple[str, int]] = field(default_factory=list)
    rbf: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [pruned i, top-k j]
    dsc: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    skipped: list[str] = field(default_factory=list)  # "dataset seed: why"


def topk_similarity(df, tau: float = DEFAULT_TAU, gamma: float | None = None) -> TopKResult:
    """Fig. 7: RBF (features standardised jointly over pruned and top-k graphs) and edge DSC, per run.

    For each dataset the target size is round((1 − mean sparsity) · |E_initial|), the mean over its
    connected runs; each run's top-k graph is `topk_graph` on its own epoch-1 edge weights. Its
    features are `graphs.features` at τ = 0 (dead paths removed, as for pruned graphs); the pruned
    graph's are the run's own from runs.csv. DSC compares the pruned edge set with the whole top-k
    edge set. Runs whose top-k graph has no directed input→output path (weak connectivity does not
    promise one), or that lack files, are skipped and named in `skipped`.
    """
    import pandas as pd

    from . import graphs
    from .dynamics import dice

    rows = connected_runs(df)
    columns = feature_columns(df)
    records, pruned_vectors, topk_vectors, edge_sets, skipped = [], [], [], [], []
    for d in dataset_order(rows["dataset"]):
        group = rows[rows["dataset"] == d]
        sparsity = numeric_values(group["sparsity"]).mean()
        for _, row in group.iterrows():
            name = f"{d} seed {int(row['seed'])}"
            spec, history = load_graph(row["run_dir"]), load_history(row["run_dir"])
            if spec is None or spec.weights is None or history is None:
                skipped.append(f"{name}: graph.json or edge_history.npy missing")
                continue
            if history.shape[1] != spec.num_edges:
                skipped.append(f"{name}: edge_history.npy has {history.shape[1]} columns for {spec.num_edges} edges")
                continue
            target = int(round((1.0 - float(sparsity)) * spec.num_edges))
            channels = int(spec.meta.get("channels", 11))
            pruned = graphs.prune(spec, tau)
            topk = topk_graph(spec, history[0], target)
            f_topk = graphs.features(topk, 0.0, channels, initial=spec)
            if f_topk.get("disconnected"):
                skipped.append(f"{name}: top-k graph (k={topk.num_edges}) has no directed input→output path")
                continue
            # The pruned graph's features are the run's own (runs.csv), the ones Tables 1-2 show.
            own = [float(pd.to_numeric(row.get(c), errors="coerce")) for c in columns]
            if not np.all(np.isfinite(own)):
                skipped.append(f"{name}: runs.csv lacks some of its graph features")
                continue
            pruned_vectors.append(own)
            topk_vectors.append([float(f_topk[c]) for c in columns])
            edge_sets.append((set(pruned.edges), set(topk.edges)))
            records.append({"dataset": d, "seed": int(row["seed"]), "target_edges": target,
                            "k": topk.num_edges, "pruned_edges": pruned.num_edges})
    n = len(records)
    if n == 0:
        return TopKResult(pd.DataFrame(columns=["dataset", "seed", "target_edges", "k", "pruned_edges", "rbf", "dsc"]),
                          skipped=skipped)
    # One scaler over both families, so the two sets of vectors live in the same units.
    Z = standardise(np.array(pruned_vectors + topk_vectors, dtype=float))
    rbf = similarity_matrix(Z, gamma)[:n, n:]
    dsc = np.array([[dice(edge_sets[i][0], edge_sets[j][1]) for j in range(n)] for i in range(n)])
    table = pd.DataFrame(records)
    table["rbf"] = np.diag(rbf)
    table["dsc"] = np.diag(dsc)
    labels = [(r["dataset"], r["seed"]) for r in records]
    return TopKResult(table, labels, rbf, dsc, skipped)


def retained_mask(spec: GraphSpec, tau: float) -> np.ndarray:
    """Boolean mask over `spec.edges`: the edges that survive pruning at τ."""
    from . import graphs

    return np.array(graphs.edge_mask(spec, graphs.prune(spec, tau)), dtype=bool)
