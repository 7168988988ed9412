"""Threshold, dead paths and features (SPEC §4–5): known answers and properties on random DAGs."""

import json
import math
import time

import networkx as nx
import pytest
from hypothesis import given, settings, strategies as st

from dagwire import counts, graphs, spec as specs
from dagwire.cli import main

FEATURE_KEYS_3 = [
    "sparsity", "sparsity_stage_0", "sparsity_stage_1", "sparsity_stage_2", "nodes", "nodes_stage_0",
    "nodes_stage_1", "nodes_stage_2", "parameters", "log_paths", "mean_path", "max_path",
    "ln_communicability", "edge_connectivity", "mean_degree", "pca_elongation", "q1d",
]


def weighted(n, stages, edges, weight=1.0):
    g = specs.from_edge_list(n, stages, edges)
    return g.with_weights([weight] * g.num_edges)


def test_complete_dag_sanity_values_in_milliseconds():
    g = specs.complete(60, 3).with_weights([0.5] * 1770)
    started = time.perf_counter()
    n_paths, mean_length, longest = graphs.path_statistics(g)
    assert time.perf_counter() - started < 0.05
    assert n_paths == 2**58 and mean_length == 30 and longest == 59
    f = graphs.features(g)
    assert list(f) == FEATURE_KEYS_3
    assert f["log_paths"] == pytest.approx(58 * math.log(2))
    assert f["mean_path"] == 30 and f["max_path"] == 59 and f["edge_connectivity"] == 59
    assert f["sparsity"] == 0 and f["nodes"] == 60 and f["parameters"] == 863_300
    assert f["mean_degree"] == 59
    # A = J - I: eigenvalues 59 (once) and -1, so [expm A]_{0,59} = (e^59 - e^-1) / 60
    assert f["ln_communicability"] == pytest.approx(math.log((math.exp(59) - math.exp(-1)) / 60))
    assert abs(f["pca_elongation"]) < 0.05 and f["q1d"] is False


@pytest.mark.parametrize("k", [1, 2, 5])
def test_chain(k):
    f = graphs.features(weighted(k + 1, (k + 1,), [(i, i + 1) for i in range(k)]), channels=2)
    assert f["log_paths"] == 0 and f["mean_path"] == k and f["max_path"] == k
    assert f["edge_connectivity"] == 1 and f["nodes"] == k + 1
    assert f["mean_degree"] == pytest.approx(2 * k / (k + 1))


def test_diamond():
    g = weighted(4, (2, 2), [(0, 1), (0, 2), (1, 3), (2, 3)])
    f = graphs.features(g, channels=2)
    assert f["log_paths"] == pytest.approx(math.log(2))
    assert f["mean_path"] == 2 and f["max_path"] == 2 and f["edge_connectivity"] == 2
    assert f["nodes_stage_0"] == 2 and f["nodes_stage_1"] == 2
    # undirected 4-cycle 0-1-3-2-0: [expm A]_{0,3} = (cosh 2 - 1) / 2
    assert f["ln_communicability"] == pytest.approx(math.log((math.cosh(2) - 1) / 2))
    assert f["parameters"] == counts.parameter_count(g, 2)


def test_threshold_then_dead_paths():
    # 0→1→3 survives; 2 is fed only by a cut edge, 4 leads nowhere
    g = specs.from_edge_list(5, (5,), [(0, 1), (0, 2), (1, 3), (2, 3), (1, 4), (3, 4)]).with_weights(
        [0.5, 0.001, 0.5, 0.5, 0.5, 0.5])
    pruned = graphs.prune(g, 0.006)
    assert pruned.edges == ((0, 1), (1, 3), (1, 4), (3, 4))
    h = specs.from_edge_list(5, (5,), [(0, 1), (1, 2), (0, 3), (3, 4)]).with_weights([1, 1, 1, 1])
    assert graphs.remove_dead_paths(h).edges == ((0, 3), (3, 4))
    f = graphs.features(g, channels=2)
    assert f["sparsity"] == pytest.approx(1 - 4 / 6) and f["nodes"] == 4
    assert graphs.edge_mask(g, pruned) == [True, False, True, True, False, True]  # (i, j) order


def test_disconnected_graph_is_a_result():
    g = specs.from_edge_list(4, (2, 2), [(0, 1), (0, 2), (1, 3)]).with_weights([0.5, 0.5, 0.001])
    assert not graphs.is_connected(graphs.prune(g, 0.006))
    assert graphs.prune(g, 0.006).num_edges == 0
    f = graphs.features(g)
    assert f == {"disconnected": True, "sparsity": pytest.approx(1 / 3), "sparsity_stage_0": 0.0,
                 "sparsity_stage_1": 0.0}


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
def random_dags(draw):
    n = draw(st.integers(2, 14))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    keep = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    weights = draw(st.lists(st.floats(0, 1), min_size=len(pairs), max_size=len(pairs)))
    edges = [p for p, k in zip(pairs, keep) if k]
    g = specs.from_edge_list(n, (n,), edges)
    return g.with_weights([w for p, w, k in zip(pairs, weights, keep) if k])


@settings(max_examples=60, deadline=None)
@given(random_dags(), st.floats(0, 1))
def test_pruning_properties(g, tau):
    thresholded = graphs.threshold(g, tau)
    pruned = graphs.remove_dead_paths(thresholded)
    assert graphs.remove_dead_paths(pruned) == pruned
    assert set(pruned.edges) <= set(thresholded.edges)
    d = nx.DiGraph(list(pruned.edges))
    for node in pruned.active_nodes():
        if pruned.edges:
            assert nx.has_path(d, 0, node) and nx.has_path(d, node, g.output)
    assert graphs.threshold(g, 0).edges == g.edges


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_feature_properties(g):
    f = graphs.features(g, tau=0.0, channels=2)
    if f.get("disconnected"):
        d = nx.DiGraph()
        d.add_nodes_from(range(g.num_nodes))
        d.add_edges_from(g.edges)
        assert not nx.has_path(d, 0, g.output)
        return
    assert f["mean_path"] <= f["max_path"] + 1e-12
    pruned = graphs.prune(g, 0.0)
    out_of_input = sum(1 for i, _ in pruned.edges if i == 0)
    into_output = sum(1 for _, j in pruned.edges if j == g.output)
    assert 1 <= f["edge_connectivity"] <= min(out_of_input, into_output)
    d = nx.DiGraph(list(pruned.edges))
    assert math.exp(f["log_paths"]) == pytest.approx(sum(1 for _ in nx.all_simple_paths(d, 0, g.output)))


def test_complete_graph_thresholded_at_zero_is_kept():
    g = specs.complete(12, 3).with_weights([0.0] * 66)
    assert graphs.prune(g, 0).edges == g.edges
