"""Graph math on specs, torch-free: threshold, dead-path removal, and the features of SPEC §5.

Every function here is pure: it takes a `GraphSpec` and returns a new one or plain numbers.
Nodes keep their original indices throughout (node 0 is the input, `spec.output` the output).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Iterable

import networkx as nx
import numpy as np
import scipy.optimize  # noqa: F401  (Kamada-Kawai minimises with it; loaded now so the BLAS controller sees it)

from . import counts
from .config import DEFAULT_TAU
from .errors import SpecError
from .spec import GraphSpec



def threshold(spec: GraphSpec, tau: float) -> GraphSpec:
    """Erase every edge whose weight is below τ (τ = 0 keeps every edge)."""
    if spec.weights is None:
        raise SpecError("thresholding needs edge weights; the graph has none")
    if math.isnan(tau):
        raise SpecError("the threshold τ is NaN")
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
    # A node in both sets lies on an input→output path; if the output is unreachable no node is.
    live = forward & backward
    keep = [n for n, (i, j) in enumerate(spec.edges) if i in live and j in live]
    weights = None if spec.weights is None else [spec.weights[n] for n in keep]
    return spec.with_edges([spec.edges[n] for n in keep], weights)


def prune(spec: GraphSpec, tau: float) -> GraphSpec:
    """Threshold at τ, then remove dead paths."""
    return remove_dead_paths(threshold(spec, tau))


def pruning_summary(spec: GraphSpec, tau: float, accuracy_before: float | None = None,
                    accuracy_after: float | None = None, tau_name: str = "τ") -> str:
    """One line on what pruning at τ kept: "kept 41 of 105 edges, 12 of 15 nodes, τ* = 0.02, accuracy 0.74 → 0.74".

    Counts are of `spec` (the learned graph, every edge) against `prune(spec, τ)`; the accuracy part
    appears when both accuracies are given. A τ that cuts the output off says so instead of counts.
    """
    pruned = prune(spec, tau)
    if is_connected(pruned):
        kept = (f"kept {pruned.num_edges} of {spec.num_edges} edges, "
                f"{len(pruned.active_nodes())} of {len(spec.active_nodes())} nodes")
    else:
        kept = f"kept {threshold(spec, tau).num_edges} of {spec.num_edges} edges, disconnected (output unreachable)"
    line = f"{kept}, {tau_name} = {tau:g}"
    if accuracy_before is not None and accuracy_after is not None:
        line += f", accuracy {accuracy_before:.3f} → {accuracy_after:.3f}"
    return line


def edge_mask(spec: GraphSpec, pruned: GraphSpec) -> list[bool]:
    """For each edge of `spec` (in its order), whether it survives in `pruned`."""
    kept = set(pruned.edges)
    return [e in kept for e in spec.edges]


def path_statistics(spec: GraphSpec) -> tuple[int, Fraction, int]:
    """Number of input→output paths, their exact mean length and the longest, without enumerating."""
    # count[j]: paths 0→j; total[j]: summed lengths of those paths. Python ints never overflow,
    # so the complete 60-node DAG's 2^58 paths are exact. Edges in (i, j) order are topological.
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


def _stage_edges(edges: Iterable[tuple[int, int]], spec: GraphSpec, stage: int) -> int:
    return sum(1 for i, j in edges if spec.stage_of(i) == stage and spec.stage_of(j) == stage)


def _sparsity(kept: GraphSpec, initial: GraphSpec) -> dict[str, float]:
    """Overall and per-stage sparsity of `kept` against the initial edge set."""
    out = {"sparsity": 1.0 - kept.num_edges / initial.num_edges if initial.num_edges else 0.0}
    for s in range(len(initial.stages)):
        base = _stage_edges(initial.edges, initial, s)
        # A stage with no internal initial edges (one node, or a sparse initial mask) cannot lose
        # any: its sparsity is 0.0 by convention, never NaN.
        out[f"sparsity_stage_{s}"] = 1.0 - _stage_edges(kept.edges, kept, s) / base if base else 0.0
    return out


def ln_expm_entry(adjacency: np.ndarray, u: int, v: int) -> float:
    """ln [expm(A)]_{uv} of a non-negative matrix, accurate to ~1e-14 relative even when tiny or huge."""
    # The eigendecomposition Σ φ_u φ_v e^λ cancels catastrophically once the entry is far below
    # e^λmax (an undirected distance of ~15 already gives garbage). Here every number stays
    # non-negative, so nothing cancels: a Taylor series of A/2^s (norm <= 1/2), then s squarings,
    # renormalising each square by its largest entry and carrying that factor as a logarithm so
    # that e^λmax never overflows. 2^s >= 2n keeps every power A^k, k < ~2n, at full Taylor weight.
    # Limit: an entry below ~1e-300 of the largest one (a path graph of ~150 nodes) underflows to -inf.
    a = np.asarray(adjacency, dtype=float)
    n = a.shape[0]
    norm = float(a.sum(axis=1).max()) if n else 0.0
    s = max(0, math.ceil(math.log2(max(2.0 * norm, 2.0 * n, 1.0))))
    b = a / 2.0**s
    result = np.eye(n)
    term = np.eye(n)
    for k in range(1, 19):  # ||b|| <= 1/2: the next term is below 2^-19/19! ≈ 1e-23
        term = term @ b / k
        result += term
    log_scale = 0.0
    for _ in range(s):
        result = result @ result
        top = float(result.max())
        result /= top
        log_scale = 2.0 * log_scale + math.log(top)
    entry = float(result[u, v])
    return math.log(entry) + log_scale if entry > 0 else float("-inf")


def ln_communicability(graph: nx.Graph, u: Any, v: Any) -> float:
    """ln [expm(A)]_{uv}, the communicability of u and v in an undirected, unweighted graph."""
    nodes = list(graph.nodes)
    a = nx.to_numpy_array(graph, nodelist=nodes, weight=None)
    return ln_expm_entry(a, nodes.index(u), nodes.index(v))


def layout_distances(graph: nx.Graph) -> dict[Any, dict[Any, int]]:
    """Hop distances for Kamada-Kawai; pairs in different components get (largest distance + 1)."""
    # networkx puts 1e6 between components, which squeezes each component to a point once the
    # layout is rescaled; a near-finite gap keeps every part of a disconnected drawing readable.
    dist = {n: dict(d) for n, d in nx.shortest_path_length(graph)}
    gap = 1 + max((max(d.values()) for d in dist.values() if d), default=0)
    for n, d in dist.items():
        if len(d) < len(dist):
            for m in dist:
                d.setdefault(m, gap)
    return dist


def kamada_kawai(graph: nx.Graph) -> dict[Any, np.ndarray]:
    """networkx's Kamada-Kawai layout (unweighted, default circular start), also for disconnected graphs."""
    if graph.number_of_nodes() == 1:
        return {n: np.zeros(2) for n in graph.nodes}
    with _one_blas_thread():
        return nx.kamada_kawai_layout(graph, dist=layout_distances(graph), weight=None)


def pca_elongation(graph: nx.Graph) -> float:
    """2·(V1 − 0.5), V1 the first principal component's explained-variance ratio of the Kamada-Kawai layout."""
    if graph.number_of_nodes() < 3:
        return 1.0  # two points always lie on a line
    layout = kamada_kawai(graph)
    points = np.array([layout[n] for n in graph.nodes])
    points = points - points.mean(axis=0)
    variances = np.linalg.svd(points, compute_uv=False) ** 2
    return float(2.0 * (variances[0] / variances.sum() - 0.5))


_BLAS = None


def _one_blas_thread():
    """A context running BLAS on one thread: on these tiny matrices threads only cost (Kamada-Kawai ~8x)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()  # built once: threadpool_limits() rescans libraries each call (~1 ms)
    return _BLAS.limit(limits=1, user_api="blas")


def features(
    spec: GraphSpec,
    tau: float = DEFAULT_TAU,
    channels: int = 11,
    initial: GraphSpec | None = None,
    in_channels: int = 3,
    num_classes: int = 10,
    layout: bool = True,
) -> dict[str, Any]:
    """SPEC §5's features of `spec` pruned at τ, in SPEC order; a disconnected graph gives sparsity only.

    `spec` is the trained weighted graph; `initial` the initial edge set that sparsity counts
    against (default: `spec`'s own edges). When the output is unreachable after thresholding, the
    result is {"disconnected": True, "sparsity": …, "sparsity_stage_<s>": …} measured on the
    thresholded graph: dead-path removal would erase it entirely and report sparsity 1.
    `layout=False` leaves out the two features of the Kamada-Kawai layout (pca_elongation, q1d):
    the layout's iterative optimisation is about 90 % of the time of the rest on a 30-node graph.
    """
    with _one_blas_thread():
        return _features(spec, tau, channels, spec if initial is None else initial, in_channels, num_classes,
                         layout)


def recorded_features(spec: GraphSpec, tau: float = DEFAULT_TAU, channels: int | None = None) -> dict[str, Any]:
    """`features` of a learned graph with the sizes its graph.json recorded (channels: given, else recorded, else 11)."""
    meta = spec.meta
    return features(spec, tau, int(meta.get("channels", 11)) if channels is None else channels,
                    in_channels=int(meta.get("in_channels", 3)), num_classes=int(meta.get("num_classes", 10)))


def _features(
    spec: GraphSpec, tau: float, channels: int, initial: GraphSpec, in_channels: int, num_classes: int,
    layout: bool = True,
) -> dict[str, Any]:
    thresholded = threshold(spec, tau)
    pruned = remove_dead_paths(thresholded)
    if not is_connected(pruned):
        return {"disconnected": True, **_sparsity(thresholded, initial)}
    result: dict[str, Any] = dict(_sparsity(pruned, initial))
    nodes = pruned.active_nodes()
    result["nodes"] = len(nodes)
    for s in range(len(spec.stages)):
        result[f"nodes_stage_{s}"] = sum(1 for n in nodes if spec.stage_of(n) == s)
    result["parameters"] = counts.parameter_count(pruned, channels, in_channels, num_classes)
    n_paths, mean_length, _ = path_statistics(pruned)
    directed = nx.DiGraph()
    directed.add_nodes_from(nodes)  # sorted insertion order fixes Kamada-Kawai's start positions
    directed.add_edges_from(pruned.edges)
    undirected = directed.to_undirected(as_view=False)
    result["log_paths"] = math.log(n_paths)  # math.log takes ints of any size without a float overflow
    result["mean_path"] = float(mean_length)
    result["max_path"] = int(nx.dag_longest_path_length(directed, weight=None))
    result["ln_communicability"] = ln_communicability(undirected, 0, spec.output)
    result["edge_connectivity"] = int(nx.edge_connectivity(directed, 0, spec.output))
    result["mean_degree"] = 2.0 * pruned.num_edges / len(nodes)
    if not layout:
        return result
    result["pca_elongation"] = pca_elongation(undirected)
    result["q1d"] = bool(result["pca_elongation"] > 0.25 and result["edge_connectivity"] > 1)
    return result


def _features_star(args: tuple) -> dict[str, Any]:
    spec, kwargs = args
    return features(spec, **kwargs)


def features_many(specs_: list[GraphSpec], workers: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """`features` of many graphs, in order, spread over `workers` processes (default: every core)."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(specs_) < 8:
        return [features(s, **kwargs) for s in specs_]
    chunk = max(1, len(specs_) // (4 * workers))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_features_star, [(s, kwargs) for s in specs_], chunksize=chunk))
