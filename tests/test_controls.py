"""Control graphs (torch-free): the random control's sampler is uniform on its family; the width control's C."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from dagwire import counts, graphs
from dagwire import spec as specs
from dagwire.controls import RandomControl, _in_degree_counts, random_controls, stage_edge_counts, width_channels
from dagwire.errors import DagwireError


def _family_by_enumeration(family: RandomControl) -> set:
    """Every edge set with the family's edges per stage in which every live node is on an input→output path."""
    per_stage = [itertools.combinations(family.candidates(s), m) for s, m in enumerate(family.per_stage)]
    found = set()
    for choice in itertools.product(*per_stage):
        edges = tuple(sorted(e for part in choice for e in part))
        graph = family.template.with_edges(edges, None)  # live by graphs.py, not by the sampler's own test
        if graphs.is_connected(graph) and graphs.remove_dead_paths(graph).active_nodes() == list(family.nodes):
            found.add(edges)
    return found


def test_sampler_is_uniform_on_a_family_small_enough_to_enumerate():
    # Nodes 0-5 in stages of 2 with 1, 3 and 4 edges into them: 222 graphs have every node live.
    learned = specs.from_edge_list(6, (2, 2, 2), [(0, 1), (0, 2), (1, 3), (2, 3), (1, 4), (3, 4), (4, 5), (0, 5)])
    family = RandomControl.of(learned)
    assert family.per_stage == (1, 3, 4)
    support = _family_by_enumeration(family)
    assert len(support) == 222
    rng = np.random.default_rng(0)
    draws = Counter(family.draw(rng).edges for _ in range(222 * 25))
    assert set(draws) == support  # every graph of the family, nothing outside it
    observed = [draws[g] for g in sorted(support)]
    assert chisquare(observed).pvalue > 0.01


def test_in_degree_counts_match_brute_force():
    sizes = [1, 3, 4, 2]
    ways = _in_degree_counts(sizes, 7)
    for m in range(8):
        brute = sum(math.prod(math.comb(s, k) for s, k in zip(sizes, ks))
                    for ks in itertools.product(*[range(1, s + 1) for s in sizes]) if sum(ks) == m)
        assert ways[len(sizes)][m] == brute


def test_random_controls_keep_nodes_and_edges_per_stage():
    rng = np.random.default_rng(3)
    full = specs.complete(15, 3).with_weights(rng.uniform(0, 1, 105))
    pruned = graphs.prune(full, 0.55)
    controls = random_controls(pruned, 3, seed=7)
    for control in controls:
        assert control.active_nodes() == pruned.active_nodes()
        assert stage_edge_counts(control) == stage_edge_counts(pruned)
        assert graphs.remove_dead_paths(control).edges == control.edges  # every node on an input→output path
    assert len({c.edges for c in controls}) == 3
    assert [c.edges for c in random_controls(pruned, 3, seed=7)] == [c.edges for c in controls]  # seeded


def test_the_family_lives_on_the_learned_graphs_live_nodes():
    learned = specs.from_edge_list(6, (2, 2, 2), [(0, 1), (0, 2), (1, 2), (1, 4), (2, 4), (4, 5)])  # node 3 dead
    family = RandomControl.of(learned)
    assert family.nodes == (0, 1, 2, 4, 5) and family.per_stage == (1, 2, 3)
    support = _family_by_enumeration(family)
    draws = {family.draw(np.random.default_rng(k)).edges for k in range(200)}
    assert draws == support and len(support) == 7


def test_a_family_with_one_member_and_a_graph_not_pruned():
    # Two nodes of stage 1 and one edge into each: the chain is the only graph with every node live.
    chain = specs.from_edge_list(6, (3, 3), [(0, 3), (3, 4), (4, 5)])
    family = RandomControl.of(chain)
    assert [family.draw(np.random.default_rng(k)).edges for k in range(3)] == [chain.edges] * 3
    with pytest.raises(DagwireError, match="pruned learned graph"):
        RandomControl.of(specs.from_edge_list(6, (3, 3), [(0, 3), (0, 4), (3, 5)]))  # node 4 leads nowhere


def test_width_control_is_the_complete_dag_nearest_in_parameters():
    initial = specs.complete(9, 3)
    rng = np.random.default_rng(1)
    pruned = graphs.prune(initial.with_weights(rng.uniform(0, 1, initial.num_edges)), 0.7)
    target = counts.parameter_count(pruned, 8, 3, 10)
    width, residual = width_channels(initial, pruned, 8)
    best = min(range(1, 40), key=lambda c: abs(counts.parameter_count(initial, c, 3, 10) - target))
    assert width == best < 8 and residual == counts.parameter_count(initial, width, 3, 10) - target
