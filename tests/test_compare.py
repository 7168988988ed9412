"""Comparing networks (SPEC §6, §7): similarity, standardising, top-k graphs, UMAP and the figures.

`make_fake_sweep` builds a small sweep directory (runs.csv + run directories) from random weighted
graphs, with features and dynamics computed by dagwire itself: no training. test_report.py uses it too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dagwire import compare, draw, graphs, tables
from dagwire import spec as specs
from dagwire.dynamics import dice, edge_dynamics

TAU = 0.006
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Fraction of edges each fake dataset keeps: easier "datasets" prune harder, as in the paper.
KEEP = {"cmnist": 0.25, "ckmnist": 0.3, "cfashionmnist": 0.55, "cifar10": 0.7, "cfashionmnist_t8": 0.7}
GRID = (0.0, 0.001, 0.006, 0.03, 0.1, 0.3)


def _fake_run(run_dir: Path, dataset: str, seed: int, epochs: int, nodes: int, disconnected: bool,
              retrain: bool) -> dict:
    """One finished run directory with graph.json, edge_history.npy, metrics, thresholds, retrains."""
    rng = np.random.default_rng([seed, sum(map(ord, dataset))])
    spec = specs.complete(nodes, 3)
    kept = rng.random(spec.num_edges) < KEEP[dataset]
    for k, (i, j) in enumerate(spec.edges):
        if j == i + 1:
            kept[k] = True  # a chain through every node keeps the graph connected
        if disconnected and j == spec.output:
            kept[k] = False
    final = np.where(kept, rng.uniform(0.02, 0.6, spec.num_edges), rng.uniform(0.0, 0.005, spec.num_edges))
    t = np.linspace(0.0, 1.0, epochs)[:, None]
    history = np.abs(0.5 + (final - 0.5) * t + 0.05 * rng.normal(size=(epochs, spec.num_edges)) * (1 - t))
    history[-1] = final
    graph = spec.with_weights(final.tolist())
    run_dir.mkdir(parents=True)
    specs.save(spec, run_dir / "initial_graph.json")
    (run_dir / "config.yaml").write_text(f"dataset: {dataset}\nseed: {seed}\nnodes: {nodes}\nstages: 3\nchannels: 4\n"
                                         f"limit_train: 256\nbatch_size: 128\nepochs: {epochs}\n")
    accuracy = 0.9 - 0.1 * KEEP[dataset] + 0.01 * seed
    specs.save(graph, run_dir / "graph.json", dataset=dataset, seed=seed, channels=4, test_accuracy=accuracy)
    np.save(run_dir / "edge_history.npy", history)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e in range(epochs):
            f.write(json.dumps({"epoch": e + 1, "test_accuracy": accuracy, "seconds": 10.0 + e}) + "\n")
    with open(run_dir / "thresholds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["threshold", "test_accuracy", "sparsity", "nodes", "edges", "disconnected"])
        for tau in GRID:
            pruned = graphs.prune(graph, tau)
            ok = graphs.is_connected(pruned)
            w.writerow([tau, accuracy if ok else 0.1, 1 - pruned.num_edges / spec.num_edges,
                        len(pruned.active_nodes()) if ok else 0, pruned.num_edges, not ok])
    features = graphs.features(graph, TAU, 4)
    pruned = graphs.prune(graph, TAU)
    dynamics = edge_dynamics(history, np.array(graphs.edge_mask(graph, pruned)), TAU)
    (run_dir / "features.json").write_text(json.dumps(features))
    (run_dir / "dynamics.json").write_text(json.dumps(dynamics))
    row = {"dataset": dataset, "seed": seed, "status": "done", "error": "", "run_dir": str(run_dir.name),
           "test_accuracy": accuracy, "thresholded_accuracy": accuracy - 0.001,
           "mean_epoch_seconds": 10.0 + (epochs - 1) / 2}
    if retrain and not features.get("disconnected"):  # what `dagwire sweep --retrain` records
        row.update(retrained_accuracy=accuracy + 0.01, retrained_fit_accuracy=accuracy + 0.02, retrained_fit_channels=5,
                   retrain_mean_epoch_seconds=3.5, retrain_fit_mean_epoch_seconds=5.5)
    row.update({k: v for k, v in features.items()})
    row["disconnected"] = bool(features.get("disconnected", False))
    row.update({f"dyn_{k}": v for k, v in dynamics.items()})
    return row


def make_fake_sweep(root: Path, datasets: dict[str, int] | None = None, failed: int = 1,
                    disconnected: bool = True, epochs: int = 6, nodes: int = 12, retrain: bool = True) -> Path:
    """A sweep directory: runs.csv and run directories under root/runs/, plus sweep.yaml."""
    datasets = datasets or {"cmnist": 3, "cfashionmnist": 3, "cfashionmnist_t8": 2}
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset, seeds in datasets.items():
        for seed in range(seeds):
            rows.append(_fake_run(root / "runs" / f"{dataset}-s{seed}", dataset, seed, epochs, nodes,
                                  disconnected=False, retrain=retrain))
    if disconnected:
        first = next(iter(datasets))
        rows.append(_fake_run(root / "runs" / f"{first}-s{datasets[first]}", first, datasets[first], epochs,
                              nodes, disconnected=True, retrain=retrain))
    for k in range(failed):
        first = next(iter(datasets))
        seed = datasets[first] + 1 + k
        (root / "runs" / f"{first}-s{seed}").mkdir(parents=True)
        rows.append({"dataset": first, "seed": seed, "status": "failed",
                     "error": "RuntimeError: CUDA out of memory | tried to allocate 2 GiB",
                     "run_dir": f"runs/{first}-s{seed}"})
    for row in rows:
        if row["status"] == "done":
            row["run_dir"] = f"runs/{row['run_dir']}"
    fields = [*tables.BASE_COLUMNS, *tables.feature_columns(3), *[f"dyn_{k}" for k in tables.DYNAMICS_KEYS]]
    with open(root / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (root / "sweep.yaml").write_text("datasets: [" + ", ".join(datasets) + "]\nseeds: 3\nepochs: 6\n")
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return make_fake_sweep(tmp_path_factory.mktemp("sweep"))


def _is_png(path: Path) -> bool:
    import matplotlib.image

    data = Path(path).read_bytes()
    return data[:8] == PNG_MAGIC and matplotlib.image.imread(path).ndim == 3


def test_similarity_identical_vectors_symmetric_unit_diagonal():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 5))
    X[3] = X[1]
    S = compare.similarity_matrix(X)
    assert S.shape == (6, 6)
    assert S[1, 3] == pytest.approx(1.0) and S[3, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(S, S.T)
    np.testing.assert_allclose(np.diag(S), 1.0)
    assert np.all((S > 0) & (S <= 1 + 1e-12))
    # γ default is 1 / n_features: exp(-‖x − y‖² / 5)
    assert S[0, 2] == pytest.approx(np.exp(-np.sum((X[0] - X[2]) ** 2) / 5))


def test_standardising_a_constant_column_gives_zero():
    X = np.array([[1.0, 7.0, 2.0], [2.0, 7.0, 4.0], [3.0, 7.0, 9.0]])
    Z = compare.standardise(X)
    assert np.all(np.isfinite(Z))
    np.testing.assert_array_equal(Z[:, 1], 0.0)
    np.testing.assert_allclose(Z[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])


def test_feature_matrix_keeps_connected_done_runs_in_order(sweep):
    df = compare.load_runs(sweep)
    X, labels = compare.feature_matrix(df)
    # cmnist 0-2, cfashionmnist 0-2, then the non-paper dataset; the disconnected and failed cmnist runs are out
    assert labels == [("cmnist", 0), ("cmnist", 1), ("cmnist", 2), ("cfashionmnist", 0), ("cfashionmnist", 1),
                      ("cfashionmnist", 2), ("cfashionmnist_t8", 0), ("cfashionmnist_t8", 1)]
    assert X.shape == (8, len(compare.FEATURES_FOR_SIMILARITY))
    assert compare.feature_columns(df) == list(compare.FEATURES_FOR_SIMILARITY)
    assert "parameters" not in compare.FEATURES_FOR_SIMILARITY
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
    # every fake graph keeps all 12 nodes: a constant column standardises to 0, not NaN
    assert np.all(np.isfinite(X)) and np.all(X[:, compare.FEATURES_FOR_SIMILARITY.index("nodes")] == 0)


def test_topk_graph_hand_made():
    # 5 nodes, one stage; epoch-1 ranking: (0,1) .9, (2,3) .8, (3,4) .7, (1,3) .6, then the rest
    spec = specs.complete(5, 1)
    values = {(0, 1): 0.9, (2, 3): 0.8, (3, 4): 0.7, (1, 3): 0.6, (0, 2): 0.5, (0, 3): 0.4,
              (0, 4): 0.3, (1, 2): 0.2, (1, 4): 0.1, (2, 4): 0.05}
    first = np.array([values[e] for e in spec.edges])
    # top 2: {0,1} and {2,3} apart, no output; top 3: still two pieces; top 4: one piece with 0 and 4
    g = compare.topk_graph(spec, first, 2)
    assert g.edges == ((0, 1), (1, 3), (2, 3), (3, 4))
    assert g.weights == (0.9, 0.6, 0.8, 0.7)
    assert compare.topk_graph(spec, first, 4).num_edges == 4
    assert compare.topk_graph(spec, first, 5).edges == ((0, 1), (0, 2), (1, 3), (2, 3), (3, 4))
    assert compare.topk_graph(spec, first, 100).num_edges == spec.num_edges
    # weakly connected but without the output is not enough: k grows until node 4 joins
    chain_first = np.array([{(0, 1): 0.9, (1, 2): 0.8, (0, 2): 0.7}.get(e, 0.1) for e in spec.edges])
    g = compare.topk_graph(spec, chain_first, 2)
    assert g.num_edges == 5 and spec.output in g.active_nodes()  # + (0,3), then (0,4)
    # ties keep the (i, j) order of graph.json: (0,1) before (0,4)
    assert compare.topk_graph(spec, np.ones(spec.num_edges), 1).edges == ((0, 1), (0, 2), (0, 3), (0, 4))


@pytest.mark.slow
def test_umap_is_finite_and_deterministic():
    X = np.random.default_rng(1).normal(size=(9, 6))
    E1 = compare.umap_embedding(X, seed=3)
    E2 = compare.umap_embedding(X, seed=3)
    assert E1.shape == (9, 2) and np.all(np.isfinite(E1))
    np.testing.assert_array_equal(E1, E2)
    small = compare.umap_embedding(X[:3])  # below UMAP_MIN_POINTS: PCA
    assert small.shape == (3, 2) and np.all(np.isfinite(small))
    assert compare.umap_embedding(X[:1]).shape == (1, 2)


def test_plots_write_pngs(sweep, tmp_path):
    df = compare.load_runs(sweep)
    X, labels = compare.feature_matrix(df)
    draw.plot_similarity(compare.similarity_matrix(X), labels, tmp_path / "sim.png")
    draw.plot_umap(compare.umap_embedding(X), labels, tmp_path / "umap.png")
    draw.plot_umap(compare.umap_embedding(X[:2]), labels[:2], tmp_path / "pca.png")
    draw.plot_graph_grid(df, tmp_path / "grid.png", TAU)
    draw.plot_dsc(df, tmp_path / "dsc.png")
    row = df[df["connected"]].iloc[0]
    spec = specs.load(Path(row["run_dir"]) / "graph.json")
    history = compare.load_history(row["run_dir"])
    draw.plot_edge_trajectories(history, compare.retained_mask(spec, TAU), TAU, tmp_path / "traj.png")
    result = compare.topk_similarity(df, TAU)
    draw.plot_topk(result, tmp_path / "topk.png")
    for name in ("sim", "umap", "pca", "grid", "dsc", "traj", "topk"):
        assert _is_png(tmp_path / f"{name}.png"), name
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_topk_similarity_values(sweep):
    df = compare.load_runs(sweep)
    result = compare.topk_similarity(df, TAU)
    table = result.table
    assert list(zip(table["dataset"], table["seed"])) == result.labels
    assert len(table) + len(result.skipped) == int(df["connected"].sum())
    assert result.rbf.shape == result.dsc.shape == (len(table), len(table))
    assert np.all((result.rbf >= 0) & (result.rbf <= 1 + 1e-12)) and np.all((result.dsc >= 0) & (result.dsc <= 1))
    np.testing.assert_allclose(table["rbf"], np.diag(result.rbf))
    assert np.all(table["k"] >= table["target_edges"])
    # the DSC column is the Dice score of the run's pruned edges and its top-k edges
    r = table.iloc[0]
    run = df[(df["dataset"] == r["dataset"]) & (df["seed"] == r["seed"])].iloc[0]
    spec = specs.load(Path(run["run_dir"]) / "graph.json")
    top = compare.topk_graph(spec, compare.load_history(run["run_dir"])[0], int(r["target_edges"]))
    assert r["dsc"] == pytest.approx(dice(set(graphs.prune(spec, TAU).edges), set(top.edges)))
    # the target is the dataset's mean pruned edge count (1 − mean sparsity)·|E|
    group = df[(df["dataset"] == r["dataset"]) & df["connected"]]
    assert r["target_edges"] == round((1 - group["sparsity"].mean()) * spec.num_edges)


def test_load_runs_errors(tmp_path):
    from dagwire.errors import DagwireError

    with pytest.raises(DagwireError, match="not found"):
        compare.load_runs(tmp_path / "nope")
    with pytest.raises(DagwireError, match="runs.csv"):
        compare.load_runs(tmp_path)
    (tmp_path / "runs.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DagwireError, match="lacks the column"):
        compare.load_runs(tmp_path)


def test_pooled_features_at_the_sweep_threshold_equal_the_runs_table(sweep):
    df = compare.load_runs(sweep)
    X, labels = compare.feature_matrix(df)
    pooled, pooled_labels = compare.pooled_feature_matrix(df, [TAU])
    assert [label[:2] for label in pooled_labels] == labels and all(label[2] == TAU for label in pooled_labels)
    assert np.allclose(pooled, X)
    # Pooling smaller thresholds adds one point per (run, τ) whose pruned graph is connected.
    more, more_labels = compare.pooled_feature_matrix(df, [0.001, TAU])
    assert len(more_labels) == len(more) and len(labels) < len(more_labels) <= 2 * len(labels)
    assert {label[2] for label in more_labels} == {0.001, TAU}
