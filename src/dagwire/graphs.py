"""Graph math on specs, torch-free: threshold, dead-path removal, and the features of SPEC §5."""

from __future__ import annotations

import math
from fractions import Fraction

import networkx as nx
import numpy as np

from . import counts
from .errors import SpecError
from .spec import GraphSpec


def threshold(spec: GraphSpec, tau: float) -> GraphSpec:
    """Erase every edge whose weight is below τ."""
    if spec.weights is None:
        raise SpecError("thresholding needs edge weights; the graph has none")
    kept = [(e, w) for e, w in zip(spec.edges, spec.weights) if w >= tau]
    return spec.with_edges([e for e, _ in kept], [w for _, w in kept])


def _reachable(spec: GraphSpec) -> tuple[set[int], set[int]]:
    """Nodes reachable from the input, and nodes from which the output is reachable."""
    # Edges are sorted by (i, j) with i < j, so one pass in each direction is a topological sweep.
    forward = {0}
    for i, j in spec.edges:
        if i in forward:
            forward.add(j)
    backward = {spec.output}
    for i, j in reversed(spec.edges):
        if j in backward:
            backward.add(i)
    return forward, backward


def is_connected(spec: GraphSpec) -> bool:
    """Whether the output node is reachable from the input node."""
    return spec.output in _reachable(spec)[0]


def remove_dead_paths(spec: GraphSpec) -> GraphSpec:
    """Keep only edges on some input→output path (none at all when the output is unreachable)."""
    forward, backward = _reachable(spec)
    live = forward & backward
    keep = [n for n, (i, j) in enumerate(spec.edges) if i in live and j in live]
    weights = None if spec.weights is None else [spec.weights[n] for n in keep]
    return spec.with_edges([spec.edges[n] for n in keep], weights)


def prune(spec: GraphSpec, tau: float) -> GraphSpec:
    """Threshold at τ, then remove dead paths."""
    return remove_dead_paths(threshold(spec, tau))


def edge_mask(spec: GraphSpec, pruned: GraphSpec) -> list[bool]:
    """For each edge of `spec`, whether it survives in `pruned`."""
    kept = set(pruned.edges)
    return [e in kept for e in spec.edges]


def path_statistics(spec: GraphSpec) -> tuple[int, Fraction, int]:
    """Number of input→output paths, their mean length and the longest, exactly, without enumerating."""
    # count[j]: paths 0→j; total[j]: summed lengths of those paths (exact Python ints).
    count = {0: 1}
    total = {0: 0}
    longest = {0: 0}
    for i, j in spec.edges:
        if i not in count:
            continue
        count[j] = count.get(j, 0) + count[i]
        total[j] = total.get(j, 0) + total[i] + count[i]
        longest[j] = max(longest.get(j, 0), longest[i] + 1)
    n = count.get(spec.output, 0)
    if n == 0:
        return 0, Fraction(0), 0
    return n, Fraction(total[spec.output], n), longest[spec.output]


def _stage_edges(edges, spec: GraphSpec, stage: int) -> int:
    return sum(1 for i, j in edges if spec.stage_of(i) == stage and spec.stage_of(j) == stage)


def _sparsity(kept: GraphSpec, initial: GraphSpec) -> dict[str, float]:
    """Overall and per-stage sparsity of `kept` against the initial edge set."""
    out = {"sparsity": 1.0 - kept.num_edges / initial.num_edges if initial.num_edges else 0.0}
    for s in range(len(initial.stages)):
        base = _stage_edges(initial.edges, initial, s)
        # A stage with no internal initial edges cannot lose any: its sparsity is 0 by convention.
        out[f"sparsity_stage_{s}"] = 1.0 - _stage_edges(kept.edges, kept, s) / base if base else 0.0
    return out


def ln_communicability(graph: nx.Graph, u: int, v: int) -> float:
    """ln [expm(A)]_{uv} of an undirected graph, computed stably from the eigendecomposition."""
    nodes = list(graph.nodes)
    a = nx.to_numpy_array(graph, nodelist=nodes, weight=None)
    eigenvalues, vectors = np.linalg.eigh(a)
    terms = vectors[nodes.index(u)] * vectors[nodes.index(v)]
    # log Σ φ_u φ_v e^λ with mixed signs: factor out the largest exponent.
    top = eigenvalues.max()
    value = float(np.sum(terms * np.exp(eigenvalues - top)))
    if value <= 0:
        return float("-inf")
    return math.log(value) + float(top)


def pca_elongation(graph: nx.Graph) -> float:
    """2·(V1 − 0.5), V1 the first principal component's variance ratio of the Kamada-Kawai layout."""
    if graph.number_of_nodes() < 3:
        return 1.0
    layout = nx.kamada_kawai_layout(graph, weight=None)
    points = np.array([layout[n] for n in graph.nodes])
    points = points - points.mean(axis=0)
    singular = np.linalg.svd(points, compute_uv=False) ** 2
    return float(2.0 * (singular[0] / singular.sum() - 0.5))


def features(
    spec: GraphSpec, tau: float = 0.006, channels: int = 11, initial: GraphSpec | None = None,
    in_channels: int = 3, num_classes: int = 10,
) -> dict:
    """SPEC §5's features of the graph pruned at τ; a disconnected graph gives sparsity only."""
    initial = spec if initial is None else initial
    thresholded = threshold(spec, tau)
    pruned = remove_dead_paths(thresholded)
    if not is_connected(pruned):
        # Dead-path removal erases a disconnected graph entirely, so its sparsity is the thresholded one.
        return {"disconnected": True, **_sparsity(thresholded, initial)}
    result: dict = dict(_sparsity(pruned, initial))
    nodes = pruned.active_nodes()
    result["nodes"] = len(nodes)
    for s in range(len(spec.stages)):
        result[f"nodes_stage_{s}"] = sum(1 for n in nodes if spec.stage_of(n) == s)
    result["parameters"] = counts.parameter_count(pruned, channels, in_channels, num_classes)
    n_paths, mean_length, _ = path_statistics(pruned)
    directed = nx.DiGraph()
    directed.add_nodes_from(nodes)
    directed.add_edges_from(pruned.edges)
    undirected = directed.to_undirected()
    result["log_paths"] = math.log(n_paths)
    result["mean_path"] = float(mean_length)
    result["max_path"] = int(nx.dag_longest_path_length(directed, weight=None))
    result["ln_communicability"] = ln_communicability(undirected, 0, spec.output)
    result["edge_connectivity"] = int(nx.edge_connectivity(directed, 0, spec.output))
    result["mean_degree"] = 2.0 * pruned.num_edges / len(nodes)
    result["pca_elongation"] = pca_elongation(undirected)
    result["q1d"] = bool(result["pca_elongation"] > 0.25 and result["edge_connectivity"] > 1)
    return result


def _single_threaded() -> None:
    # Tiny eigendecompositions and L-BFGS steps run faster on one BLAS thread, and each worker
    # owns one core. scipy loads its own BLAS on import, so import it before limiting.
    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _features_star(args: tuple) -> dict:
    spec, kwargs = args
    return features(spec, **kwargs)


def features_many(specs_: list[GraphSpec], workers: int | None = None, **kwargs) -> list[dict]:
    """`features` of many graphs, spread over processes (the Kamada-Kawai layout dominates)."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_limits

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(specs_) < 8:
        with threadpool_limits(1):
            return [features(s, **kwargs) for s in specs_]
    with ProcessPoolExecutor(workers, initializer=_single_threaded) as pool:
        return list(pool.map(_features_star, [(s, kwargs) for s in specs_], chunksize=max(1, len(specs_) // (4 * workers))))
