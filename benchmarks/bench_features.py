"""Features of many random trained-like 60-node graphs (goal: 1000 graphs in under 30 s on 2 CPU cores).

    python benchmarks/bench_features.py [--graphs 1000] [--workers N] [--seed 0]

Each graph is the complete 60-node, 3-stage DAG (1770 edges) with weights drawn so that a random
1–21% of its edges (uniform per graph; `--low/--high`) are at or above τ = 0.006: the paper's
trained networks have sparsity 0.79–0.99 (Table 1). Prints one JSON object: total seconds, ms per graph, graphs connected after
pruning, and the mean size of the pruned graphs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from dagwire import graphs, spec as specs


def random_trained_like(rng: np.random.Generator, low: float = 0.01, high: float = 0.21) -> specs.GraphSpec:
    """The complete 60-node DAG with weights of which a random `low`–`high` fraction are above τ."""
    full = specs.complete(60, 3)
    keep = rng.random(full.num_edges) < rng.uniform(low, high)
    weights = np.where(keep, rng.uniform(0.01, 0.8, full.num_edges), rng.uniform(0, 0.005, full.num_edges))
    return full.with_weights(weights.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=float, default=0.01, help="smallest fraction of edges above τ")
    parser.add_argument("--high", type=float, default=0.21, help="largest fraction of edges above τ")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    samples = [random_trained_like(rng, args.low, args.high) for _ in range(args.graphs)]
    workers = args.workers or os.cpu_count() or 1
    started = time.perf_counter()
    results = graphs.features_many(samples, workers=workers)
    seconds = time.perf_counter() - started
    connected = [r for r in results if not r.get("disconnected")]
    print(json.dumps({
        "graphs": args.graphs,
        "workers": workers,
        "seconds": round(seconds, 2),
        "ms_per_graph": round(1000 * seconds / max(args.graphs, 1), 2),
        "connected": len(connected),
        "mean_pruned_nodes": round(float(np.mean([r["nodes"] for r in connected])), 1) if connected else None,
        "mean_pruned_sparsity": round(float(np.mean([r["sparsity"] for r in connected])), 3) if connected else None,
    }))


if __name__ == "__main__":
    main()
