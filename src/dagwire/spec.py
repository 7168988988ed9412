"""Graph spec: the pure-data description of a staged DAG (nodes, stages, edges, weights).

A spec never touches torch. The network is built from it (`dagwire.model`), and every piece of
graph math (threshold, dead paths, features) is a pure function on specs (`dagwire.graphs`).

The interchange file is `graph.json`:
    {"format": "dagwire-graph/1", "num_nodes": N, "stages": [sizes],
     "edges": [[i, j, weight], ...], ...extra keys}
Edges are kept sorted by (i, j); that order is the order of the network's edge-weight vector and
of the columns of `edge_history.npy`.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import SpecError
from .files import atomic_write_text

FORMAT = "dagwire-graph/1"


@dataclass(frozen=True)
class GraphSpec:
    """A DAG on nodes 0..num_nodes-1 (0 = input, num_nodes-1 = output) split into stages."""

    num_nodes: int
    stages: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]
    weights: tuple[float, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def num_edges(self) -> int:
        """Number of edges."""
        return len(self.edges)

    @property
    def output(self) -> int:
        """Index of the output node."""
        return self.num_nodes - 1

    def stage_of(self, node: int) -> int:
        """Stage index of `node`."""
        return stage_of(self.stages, node)

    def active_nodes(self) -> list[int]:
        """Nodes the network computes: input, output and every node touched by an edge."""
        used = {0, self.num_nodes - 1}
        for i, j in self.edges:
            used.add(i)
            used.add(j)
        return sorted(used)

    def with_edges(self, edges: Iterable[tuple[int, int]], weights: Iterable[float] | None) -> "GraphSpec":
        """A copy on the same nodes and stages with another edge set (sorted by (i, j))."""
        edges, weights = list(edges), None if weights is None else list(weights)
        if weights is not None and len(weights) != len(edges):
            raise SpecError(f"{len(weights)} weights for {len(edges)} edges")
        pairs = list(zip(edges, weights)) if weights is not None else [(e, None) for e in edges]
        pairs.sort(key=lambda p: p[0])
        new_edges = tuple((int(i), int(j)) for (i, j), _ in pairs)
        new_weights = None if weights is None else tuple(float(w) for _, w in pairs)
        return replace(self, edges=new_edges, weights=new_weights)

    def with_weights(self, weights: Sequence[float] | None) -> "GraphSpec":
        """A copy with the given edge weights (in edge order)."""
        return replace(self, weights=None if weights is None else tuple(float(w) for w in weights))

    def to_dict(self) -> dict[str, Any]:
        """The graph.json object (weights default to 1.0 when the spec has none)."""
        weights = self.weights if self.weights is not None else (1.0,) * len(self.edges)
        out: dict[str, Any] = {
            "format": FORMAT,
            "num_nodes": self.num_nodes,
            "stages": list(self.stages),
            "edges": [[i, j, float(w)] for (i, j), w in zip(self.edges, weights)],
        }
        for key, value in self.meta.items():
            out.setdefault(key, value)
        return out


def stage_of(stages: Sequence[int], node: int) -> int:
    """Stage index of `node` for consecutive stage blocks of the given sizes."""
    table = _stage_table(tuple(stages))
    if not 0 <= node < len(table):
        raise SpecError(f"node {node} is outside the {sum(stages)} nodes of the stages {list(stages)}")
    return table[node]


@functools.lru_cache(maxsize=64)
def _stage_table(stages: tuple[int, ...]) -> tuple[int, ...]:
    """Node -> stage lookup (feature code asks this hundreds of thousands of times)."""
    return tuple(s for s, size in enumerate(stages) for _ in range(size))


def equal_stages(num_nodes: int, num_stages: int) -> tuple[int, ...]:
    """Split `num_nodes` into `num_stages` equal consecutive blocks (must divide exactly)."""
    if num_stages < 1:
        raise SpecError(f"--stages must be at least 1, got {num_stages}")
    if num_nodes < 2:
        raise SpecError(f"--nodes must be at least 2 (an input and an output), got {num_nodes}")
    if num_nodes % num_stages:
        raise SpecError(f"{num_stages} stages do not divide {num_nodes} nodes into equal blocks")
    return (num_nodes // num_stages,) * num_stages


def complete(num_nodes: int, num_stages: int = 3) -> GraphSpec:
    """The complete DAG: an edge i->j for every i < j."""
    stages = equal_stages(num_nodes, num_stages)
    edges = tuple((i, j) for i in range(num_nodes) for j in range(i + 1, num_nodes))
    return GraphSpec(num_nodes, stages, edges)


def local(num_nodes: int, num_stages: int = 3, window: int = 10) -> GraphSpec:
    """The local DAG of App. D.1: edges i->j with 0 < j - i <= window."""
    if window < 1:
        raise SpecError(f"the local window must be at least 1, got {window}")
    stages = equal_stages(num_nodes, num_stages)
    edges = tuple((i, j) for i in range(num_nodes) for j in range(i + 1, min(num_nodes, i + window + 1)))
    return GraphSpec(num_nodes, stages, edges)


def from_edge_list(num_nodes: int, stages: Sequence[int], edges: Iterable[Sequence[int]]) -> GraphSpec:
    """Any DAG given as (i, j) pairs with i < j."""
    pairs = sorted({(int(e[0]), int(e[1])) for e in edges})
    return GraphSpec(num_nodes, tuple(int(s) for s in stages), tuple(pairs))


def validate(spec: GraphSpec) -> None:
    """Raise SpecError unless `spec` is a staged DAG with edges i<j in range, sorted, unique."""
    n = spec.num_nodes
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise SpecError(f"num_nodes must be an integer >= 2, got {n!r}")
    if not spec.stages or any((not isinstance(s, int)) or s < 1 for s in spec.stages):
        raise SpecError(f"stages must be a non-empty list of positive integers, got {list(spec.stages)}")
    if sum(spec.stages) != n:
        raise SpecError(f"stages {list(spec.stages)} sum to {sum(spec.stages)}, not to num_nodes {n}")
    previous = None
    for i, j in spec.edges:
        if not (0 <= i < n and 0 <= j < n):
            raise SpecError(f"edge ({i}, {j}) is out of range for {n} nodes")
        if i >= j:
            raise SpecError(f"edge ({i}, {j}) does not go forward (needs i < j)")
        if previous is not None and (i, j) <= previous:
            raise SpecError(f"edge ({i}, {j}) is repeated or out of (i, j) order")
        previous = (i, j)
    if spec.weights is not None:
        if len(spec.weights) != len(spec.edges):
            raise SpecError(f"{len(spec.weights)} weights for {len(spec.edges)} edges")
        for (i, j), w in zip(spec.edges, spec.weights):
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise SpecError(f"edge ({i}, {j}) has weight {w!r}; weights must be finite numbers >= 0")


def from_dict(obj: Any, source: str = "graph") -> GraphSpec:
    """Parse a graph.json object; unknown keys are kept in `meta`."""
    if not isinstance(obj, dict):
        raise SpecError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    fmt = obj.get("format")
    if fmt is not None and fmt != FORMAT:
        raise SpecError(f"{source}: format {fmt!r} is not {FORMAT!r}")
    for key in ("num_nodes", "stages", "edges"):
        if key not in obj:
            raise SpecError(f"{source}: missing key {key!r}")
    n, stages, raw_edges = obj["num_nodes"], obj["stages"], obj["edges"]
    if not isinstance(stages, list) or not isinstance(raw_edges, list):
        raise SpecError(f"{source}: 'stages' and 'edges' must be lists")
    triples = []
    for e in raw_edges:
        if not isinstance(e, list) or len(e) not in (2, 3) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in e
        ):
            raise SpecError(f"{source}: edge {e!r} is not [i, j] or [i, j, weight]")
        i, j = e[0], e[1]
        if int(i) != i or int(j) != j:
            raise SpecError(f"{source}: edge {e!r} has non-integer node indices")
        w = float(e[2]) if len(e) == 3 else 1.0
        triples.append((int(i), int(j), w))
    seen = set()
    for i, j, _ in triples:
        if (i, j) in seen:
            raise SpecError(f"{source}: edge ({i}, {j}) is listed twice")
        seen.add((i, j))
    triples.sort(key=lambda t: (t[0], t[1]))
    meta = {k: v for k, v in obj.items() if k not in ("format", "num_nodes", "stages", "edges")}
    try:
        return GraphSpec(
            n,
            tuple(stages),
            tuple((i, j) for i, j, _ in triples),
            tuple(w for _, _, w in triples),
            meta,
        )
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def load(path: str | os.PathLike) -> GraphSpec:
    """Read and validate a graph.json file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"graph file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read graph file {path}: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return from_dict(obj, source=str(path))


def save(spec: GraphSpec, path: str | os.PathLike, **extra: Any) -> None:
    """Write `spec` (plus `extra` keys) to `path` as graph.json, atomically, one edge per line."""
    obj = spec.to_dict()
    obj.update(extra)
    lines = []
    for key, value in obj.items():
        if key == "edges":
            rows = ",\n".join("  " + json.dumps(edge) for edge in value)
            lines.append(f'"edges": [\n{rows}\n ]' if rows else '"edges": []')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    atomic_write_text(path, "{\n " + ",\n ".join(lines) + "\n}\n")
