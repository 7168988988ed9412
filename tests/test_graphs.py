"""Threshold, dead paths and features (SPEC §4–5): known answers and properties on random DAGs."""

import json
import math
import time
from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

from dagwire import counts, graphs, spec as specs
from dagwire.cli import main
from dagwire.errors import SpecError

FEATURE_KEYS_3 = [
    "sparsity", "sparsity_stage_0", "sparsity_stage_1", "sparsity_stage_2", "nodes", "nodes_stage_0",
    "nodes_stage_1", "nodes_stage_2", "parameters", "log_paths", "mean_path", "max_path",
    "ln_communicability", "edge_connectivity", "mean_degree", "pca_elongation", "q1d",
]


def weighted(n, stages, edges, weight=1.0):
    g = specs.from_edge_list(n, stages, edges)
    return g.with_weights([weight] * g.num_edges)


def exact_ln_communicability(graph, u, v, terms=400):
    """ln Σ_k (A^k)_{uv} / k! with exact integer walk counts (slow, for checking only)."""
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    neighbours = [[index[m] for m in graph[n]] for n in nodes]
    walks = [0] * len(nodes)
    walks[index[u]] = 1
    total, factorial = Fraction(0), 1
    for k in range(terms):
        if k:
            factorial *= k
            walks = [sum(walks[m] for m in neighbours[i]) for i in range(len(nodes))]
        total += Fraction(walks[index[v]], factorial)
    return math.log(total.numerator) - math.log(total.denominator)


def test_complete_dag_sanity_values_in_milliseconds():
    g = specs.complete(60, 3).with_weights([0.5] * 1770)
    started = time.perf_counter()
    n_paths, mean_length, longest = graphs.path_statistics(g)
    assert time.perf_counter() - started < 0.05
    assert n_paths == 2**58 and mean_length == 30 and longest == 59
    f = graphs.features(g)
    assert list(f) == FEATURE_KEYS_3
    assert f["log_paths"] == pytest.approx(58 * math.log(2), rel=1e-14)
    assert f["mean_path"] == 30 and f["max_path"] == 59 and f["edge_connectivity"] == 59
    assert f["sparsity"] == 0 and all(f[f"sparsity_stage_{s}"] == 0 for s in range(3))
    assert f["nodes"] == 60 and [f[f"nodes_stage_{s}"] for s in range(3)] == [20, 20, 20]
    assert f["parameters"] == 863_300 and f["mean_degree"] == 59
    # A = J - I: eigenvalues 59 (once) and -1, so [expm A]_{0,59} = (e^59 - e^-1) / 60 ≈ e^59 / 60
    assert f["ln_communicability"] == pytest.approx(math.log((math.exp(59) - math.exp(-1)) / 60), rel=1e-12)
    assert abs(f["pca_elongation"]) < 0.05 and f["q1d"] is False
    json.dumps(f, allow_nan=False)  # plain Python values only


def test_feature_value_types():
    f = graphs.features(weighted(4, (2, 2), [(0, 1), (0, 2), (1, 3), (2, 3)]), channels=2)
    ints = {"nodes", "nodes_stage_0", "nodes_stage_1", "parameters", "max_path", "edge_connectivity"}
    for key, value in f.items():
        expected = bool if key == "q1d" else int if key in ints else float
        assert type(value) is expected, key


@pytest.mark.parametrize("k", [1, 2, 5, 30])
def test_chain(k):
    f = graphs.features(weighted(k + 1, (k + 1,), [(i, i + 1) for i in range(k)]), channels=2)
    assert f["log_paths"] == 0 and f["mean_path"] == k and f["max_path"] == k
    assert f["edge_connectivity"] == 1 and f["nodes"] == k + 1 and f["sparsity"] == 0
    assert f["mean_degree"] == pytest.approx(2 * k / (k + 1))
    if k >= 2:
        assert f["pca_elongation"] > 0.9 and f["q1d"] is False  # a line, but one edge cuts it


def test_long_chain_communicability_is_accurate():
    # [expm A]_{0,59} of the 60-node path graph is ≈ 1/59! ≈ e^-184.5, 1e-91 below e^λmax: the
    # eigendecomposition formula returns noise there; the non-negative scaling and squaring must not.
    g = nx.path_graph(60)
    expected = exact_ln_communicability(g, 0, 59)
    assert expected == pytest.approx(-184.5177107046086, rel=1e-12)
    assert graphs.ln_communicability(g, 0, 59) == pytest.approx(expected, rel=1e-12)


def test_communicability_matches_expm_and_exact_series():
    rng = np.random.default_rng(0)
    for seed in range(8):
        g = nx.gnp_random_graph(int(rng.integers(4, 25)), 0.3, seed=seed)
        a = nx.to_numpy_array(g, weight=None)
        u, v = 0, len(a) - 1
        reference = scipy.linalg.expm(a)[u, v]
        if reference > 1e-6 * np.abs(scipy.linalg.expm(a)).max():  # where expm itself is accurate
            assert graphs.ln_expm_entry(a, u, v) == pytest.approx(math.log(reference), rel=1e-9)
        if nx.has_path(g, u, v):
            assert graphs.ln_expm_entry(a, u, v) == pytest.approx(exact_ln_communicability(g, u, v), rel=1e-12)
        else:
            assert graphs.ln_expm_entry(a, u, v) == float("-inf")


def test_diamond():
    g = weighted(4, (2, 2), [(0, 1), (0, 2), (1, 3), (2, 3)])
    f = graphs.features(g, channels=2)
    assert f["log_paths"] == pytest.approx(math.log(2))
    assert f["mean_path"] == 2 and f["max_path"] == 2 and f["edge_connectivity"] == 2
    assert f["nodes_stage_0"] == 2 and f["nodes_stage_1"] == 2
    # undirected 4-cycle 0-1-3-2-0: [expm A]_{0,3} = (cosh 2 - 1) / 2
    assert f["ln_communicability"] == pytest.approx(math.log((math.cosh(2) - 1) / 2))
    assert f["parameters"] == counts.parameter_count(g, 2)
    assert f["mean_degree"] == 2.0


def test_mean_path_is_exact_over_unequal_paths():
    # paths 0→3 (1), 0→1→3 (2), 0→1→2→3 (3): mean 2, count 3
    g = weighted(4, (4,), [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3)])
    assert graphs.path_statistics(g) == (3, Fraction(2), 3)
    f = graphs.features(g, channels=2)
    assert f["mean_path"] == 2 and f["max_path"] == 3 and f["log_paths"] == pytest.approx(math.log(3))


def test_threshold_then_dead_paths():
    # 0→1→3 survives; 2 is fed only by a cut edge, 4 leads nowhere
    g = specs.from_edge_list(5, (5,), [(0, 1), (0, 2), (1, 3), (2, 3), (1, 4), (3, 4)]).with_weights(
        [0.5, 0.001, 0.5, 0.5, 0.5, 0.5])
    pruned = graphs.prune(g, 0.006)
    assert pruned.edges == ((0, 1), (1, 3), (1, 4), (3, 4))
    assert pruned.weights == (0.5, 0.5, 0.5, 0.5)
    h = specs.from_edge_list(5, (5,), [(0, 1), (1, 2), (0, 3), (3, 4)]).with_weights([1, 1, 1, 1])
    assert graphs.remove_dead_paths(h).edges == ((0, 3), (3, 4))
    f = graphs.features(g, channels=2)
    assert f["sparsity"] == pytest.approx(1 - 4 / 6) and f["nodes"] == 4
    assert graphs.edge_mask(g, pruned) == [True, False, True, True, False, True]  # (i, j) order


def test_dead_branch_leaves_features_and_parameters():
    # Output 5: 0→1→5 and 0→2→5 live; 1→3 is a dead end and 4→5 is unreachable from the input.
    g = weighted(6, (3, 3), [(0, 1), (0, 2), (1, 3), (1, 5), (2, 5), (4, 5)], 0.5)
    pruned = graphs.prune(g, 0.0)
    assert pruned.edges == ((0, 1), (0, 2), (1, 5), (2, 5))
    f = graphs.features(g, tau=0.0, channels=3)
    assert f["nodes"] == 4 and f["nodes_stage_0"] == 3 and f["nodes_stage_1"] == 1
    assert f["parameters"] == counts.parameter_count(pruned, 3) < counts.parameter_count(g, 3)
    assert f["sparsity"] == pytest.approx(1 - 4 / 6)
    assert f["sparsity_stage_0"] == 0.0 and f["sparsity_stage_1"] == 1.0  # (4, 5) was stage 1's only edge


def test_disconnected_graph_is_a_result():
    g = specs.from_edge_list(4, (2, 2), [(0, 1), (0, 2), (1, 3)]).with_weights([0.5, 0.5, 0.001])
    assert not graphs.is_connected(graphs.prune(g, 0.006))
    assert graphs.prune(g, 0.006).num_edges == 0
    f = graphs.features(g)
    # sparsity of the thresholded graph (2 of 3 edges left), not of the empty pruned one
    assert f == {"disconnected": True, "sparsity": pytest.approx(1 / 3), "sparsity_stage_0": 0.0,
                 "sparsity_stage_1": 0.0}


def test_no_edges_at_all_is_disconnected():
    g = specs.complete(6, 2).with_weights([0.001] * 15)
    assert graphs.threshold(g, 0.006).num_edges == 0 and not graphs.is_connected(g.with_edges([], []))
    assert graphs.features(g) == {"disconnected": True, "sparsity": 1.0, "sparsity_stage_0": 1.0,
                                  "sparsity_stage_1": 1.0}


def test_initial_edge_set_and_empty_stage_convention():
    # The trained graph lists only part of the initial edges; a one-node stage has no internal edges.
    initial = specs.from_edge_list(5, (2, 1, 2), [(i, j) for i in range(5) for j in range(i + 1, 5)])
    trained = weighted(5, (2, 1, 2), [(0, 1), (1, 2), (2, 3), (3, 4)], 0.5)
    f = graphs.features(trained, initial=initial, channels=2)
    assert f["sparsity"] == pytest.approx(1 - 4 / 10)
    assert f["sparsity_stage_0"] == 0.0 and f["sparsity_stage_2"] == 0.0
    assert f["sparsity_stage_1"] == 0.0  # stage 1 = node 2 alone: no internal initial edges, 0 by convention
    assert list(f)[:4] == ["sparsity", "sparsity_stage_0", "sparsity_stage_1", "sparsity_stage_2"]


def test_threshold_needs_weights_and_keeps_equal_weights():
    with pytest.raises(SpecError, match="weights"):
        graphs.threshold(specs.complete(6, 2), 0.006)
    with pytest.raises(SpecError):
        graphs.threshold(specs.complete(6, 2).with_weights([0.5] * 15), float("nan"))
    g = weighted(3, (3,), [(0, 1), (1, 2)], 0.006)
    assert graphs.threshold(g, 0.006).edges == g.edges  # "below τ" is strict


def test_features_many_matches_features():
    rng = np.random.default_rng(1)
    full = specs.complete(20, 2)
    batch = [full.with_weights(rng.uniform(0, 0.02, full.num_edges).tolist()) for _ in range(10)]
    expected = [graphs.features(g) for g in batch]
    assert graphs.features_many(batch, workers=1) == expected
    assert graphs.features_many(batch, workers=2) == expected


def test_features_cli(tmp_path, capsys):
    path = tmp_path / "g.json"
    specs.save(weighted(4, (2, 2), [(0, 1), (0, 2), (1, 3), (2, 3)], 0.3), path, channels=2)
    assert main(["features", str(path)]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["parameters"] == counts.parameter_count(specs.load(path), 2)  # the graph's own C
    assert main(["features", str(path), "--channels", "11", "--threshold", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "disconnected": True, "sparsity": 1.0, "sparsity_stage_0": 1.0, "sparsity_stage_1": 1.0}
    assert main(["features", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err


@st.composite
def random_dags(draw, max_nodes=14):
    n = draw(st.integers(2, max_nodes))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3))) if n > 2 else []
    bounds = [0, *cuts, n]
    stages = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    keep = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    weights = draw(st.lists(st.floats(0, 1), min_size=len(pairs), max_size=len(pairs)))
    edges = [p for p, k in zip(pairs, keep) if k]
    g = specs.from_edge_list(n, stages, edges)
    return g.with_weights([w for p, w, k in zip(pairs, weights, keep) if k])


@settings(max_examples=80, deadline=None)
@given(random_dags(), st.floats(0, 1))
def test_pruning_properties(g, tau):
    thresholded = graphs.threshold(g, tau)
    assert all(w >= tau for w in thresholded.weights)
    pruned = graphs.remove_dead_paths(thresholded)
    assert graphs.remove_dead_paths(pruned) == pruned  # idempotent
    assert graphs.prune(g, tau) == pruned
    assert set(pruned.edges) <= set(thresholded.edges)
    mask = graphs.edge_mask(g, pruned)
    assert [e for e, m in zip(g.edges, mask) if m] == list(pruned.edges)
    d = nx.DiGraph()
    d.add_nodes_from(range(g.num_nodes))
    d.add_edges_from(thresholded.edges)
    connected = nx.has_path(d, 0, g.output)
    assert graphs.is_connected(thresholded) == graphs.is_connected(pruned) == connected
    if not connected:
        assert pruned.num_edges == 0
    # every surviving node lies on an input→output path, and every such edge survives
    for node in pruned.active_nodes():
        if pruned.edges:
            assert nx.has_path(d, 0, node) and nx.has_path(d, node, g.output)
    for i, j in thresholded.edges:
        on_path = nx.has_path(d, 0, i) and nx.has_path(d, j, g.output)
        assert ((i, j) in set(pruned.edges)) == on_path
    assert graphs.threshold(g, 0).edges == g.edges


@settings(max_examples=50, deadline=None)
@given(random_dags(max_nodes=11))
def test_feature_properties(g):
    f = graphs.features(g, tau=0.0, channels=2)
    if f.get("disconnected"):
        d = nx.DiGraph()
        d.add_nodes_from(range(g.num_nodes))
        d.add_edges_from(g.edges)
        assert not nx.has_path(d, 0, g.output)
        assert list(f) == ["disconnected", "sparsity", *(f"sparsity_stage_{s}" for s in range(len(g.stages)))]
        return
    assert list(f)[0] == "sparsity" and list(f)[-1] == "q1d" and len(f) == 11 + 2 * len(g.stages)
    assert f["mean_path"] <= f["max_path"] + 1e-12
    pruned = graphs.prune(g, 0.0)
    out_of_input = sum(1 for i, _ in pruned.edges if i == 0)
    into_output = sum(1 for _, j in pruned.edges if j == g.output)
    assert 1 <= f["edge_connectivity"] <= min(out_of_input, into_output)
    d = nx.DiGraph(list(pruned.edges))
    lengths = [len(p) - 1 for p in nx.all_simple_paths(d, 0, g.output)]
    assert math.exp(f["log_paths"]) == pytest.approx(len(lengths))
    assert f["mean_path"] == pytest.approx(sum(lengths) / len(lengths)) and f["max_path"] == max(lengths)
    assert f["nodes"] == sum(f[f"nodes_stage_{s}"] for s in range(len(g.stages))) == d.number_of_nodes()
    assert -1e-9 <= f["pca_elongation"] <= 1.0 + 1e-9  # V1 of two components lies in [0.5, 1]
    assert 0.0 <= f["sparsity"] <= 1.0 and math.isfinite(f["ln_communicability"])
    assert f["parameters"] == counts.parameter_count(pruned, 2)


def test_complete_graph_thresholded_at_zero_is_kept():
    g = specs.complete(12, 3).with_weights([0.0] * 66)
    assert graphs.prune(g, 0).edges == g.edges
    assert graphs.features(g, tau=0.0)["sparsity"] == 0.0
