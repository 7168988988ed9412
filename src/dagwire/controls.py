"""Control graphs for a learned architecture, torch-free: random DAGs of the same size, a narrower complete DAG.

A learned graph is worth learning only if it beats graphs that merely have its size. The random
control keeps the learned graph's live nodes and its number of edges entering each stage (an edge
belongs to the stage of the node it enters) and draws the edges uniformly among all such graphs in
which every node lies on an input→output path. The width control is the complete initial DAG at
the C whose parameter count is nearest the learned graph's.

The draw is exact rejection sampling. In a DAG every node lies on an input→output path exactly
when every node but the input has an edge in and every node but the output an edge out (following
in-edges back from any node must end at a node with none, which can only be the input; likewise
forward). The proposal already meets the first half: per stage it draws uniformly among the edge
sets of the right size in which every node of the stage has an edge in, by counting them exactly
(`_in_degree_counts`); a proposal in which some node has no edge out is rejected. Uniform proposal
conditioned on acceptance is uniform on the accepted set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from math import comb
from typing import Sequence

import numpy as np

from . import counts, graphs
from .errors import DagwireError
from .spec import GraphSpec

MAX_ATTEMPTS = 200_000  # proposals per graph before giving up (a graph with almost no freedom)


def stage_edge_counts(spec: GraphSpec) -> list[int]:
    """Edges entering each stage's nodes, per stage (an edge belongs to the stage of the node it enters)."""
    out = [0] * len(spec.stages)
    for _, j in spec.edges:
        out[spec.stage_of(j)] += 1
    return out


def _in_degree_counts(sizes: Sequence[int], edges: int) -> list[list[int]]:
    """ways[t][m]: edge sets of m edges among the first t nodes, node t' choosing from sizes[t'] edges, each node ≥ 1."""
    ways = [[1] + [0] * edges]
    for size in sizes:
        previous, row = ways[-1], [0] * (edges + 1)
        for m in range(edges + 1):
            row[m] = sum(previous[m - k] * comb(size, k) for k in range(1, min(size, m) + 1))
        ways.append(row)
    return ways


def _draw_in_degrees(sizes: Sequence[int], edges: int, ways: list[list[int]], rng: random.Random) -> list[int]:
    """In-degrees (each ≥ 1, summing to `edges`) with probability ∝ the number of edge sets that have them."""
    degrees = [0] * len(sizes)
    left = edges
    for t in range(len(sizes), 0, -1):
        size = sizes[t - 1]
        weights = [ways[t - 1][left - k] * comb(size, k) if k <= left else 0 for k in range(1, size + 1)]
        total = sum(weights)
        pick = rng.randrange(total)  # exact for counts beyond float range
        for k, w in enumerate(weights, start=1):
            if pick < w:
                degrees[t - 1] = k
                break
            pick -= w
        left -= degrees[t - 1]
    return degrees


@dataclass(frozen=True)
class RandomControl:
    """The learned graph's size, as a random control keeps it: live nodes, stages and edges per stage."""

    template: GraphSpec  # the learned graph pruned at τ (its nodes and stages; its edges are not reused)
    nodes: tuple[int, ...]
    per_stage: tuple[int, ...]

    @classmethod
    def of(cls, pruned: GraphSpec) -> "RandomControl":
        """The control family of a pruned, connected learned graph."""
        if not graphs.is_connected(pruned) or graphs.remove_dead_paths(pruned).edges != pruned.edges:
            raise DagwireError("a random control needs a pruned learned graph: connected, every node on an "
                               "input→output path (graphs.prune)")
        return cls(replace(pruned.with_edges([], None), meta={}), tuple(pruned.active_nodes()),
                   tuple(stage_edge_counts(pruned)))

    def _receivers(self, stage: int) -> list[int]:
        return [n for n in self.nodes if n != 0 and self.template.stage_of(n) == stage]

    def _in_sizes(self, stage: int) -> list[int]:
        return [sum(1 for i in self.nodes if i < j) for j in self._receivers(stage)]

    def candidates(self, stage: int) -> list[tuple[int, int]]:
        """Every edge a control may have into `stage`: from any earlier live node to a live node of the stage."""
        return [(i, j) for j in self._receivers(stage) for i in self.nodes if i < j]

    def draw(self, generator: np.random.Generator) -> GraphSpec:
        """One graph drawn uniformly from the family (DagwireError after MAX_ATTEMPTS rejected proposals)."""
        stages = range(len(self.per_stage))
        plans = [(self._receivers(s), self._in_sizes(s)) for s in stages]
        ways = [_in_degree_counts(sizes, m) for (_, sizes), m in zip(plans, self.per_stage)]
        rng = random.Random(int(generator.integers(2**63)))  # Python's sampler: exact big-int draws, no numpy per call
        for _ in range(MAX_ATTEMPTS):
            edges = []
            for (receivers, sizes), m, table in zip(plans, self.per_stage, ways):
                for j, k in zip(receivers, _draw_in_degrees(sizes, m, table, rng)):
                    earlier = [i for i in self.nodes if i < j]
                    edges += [(i, j) for i in rng.sample(earlier, k)]
            sources = {i for i, _ in edges}  # every node already has an edge in: check only the edges out
            if all(n in sources for n in self.nodes if n != self.template.output):
                return self.template.with_edges(edges, None)
        raise DagwireError(f"no random control accepted in {MAX_ATTEMPTS} proposals: the learned graph's "
                           f"{sum(self.per_stage)} edges on {len(self.nodes)} nodes leave almost no other graph")


def random_controls(pruned: GraphSpec, count: int, seed: int) -> list[GraphSpec]:
    """`count` random controls of a pruned learned graph, the k-th drawn from the generator seeded with [seed, k]."""
    family = RandomControl.of(pruned)
    return [family.draw(np.random.default_rng([seed, k])) for k in range(count)]


def width_channels(initial: GraphSpec, pruned: GraphSpec, channels: int, in_channels: int = 3,
                   num_classes: int = 10) -> tuple[int, int]:
    """(C of the width control, its residual): the complete `initial` DAG's C nearest the pruned graph's parameters.

    The residual is the width control's parameter count minus the pruned graph's at `channels`.
    """
    target = counts.parameter_count(pruned, channels, in_channels, num_classes)
    width = counts.fit_channels(initial, target, in_channels, num_classes)
    return width, counts.parameter_count(initial, width, in_channels, num_classes) - target
