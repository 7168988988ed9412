"""Features of many random 60-node graphs (issue goal: 1000 graphs in under 30 s on 2 CPU cores).

    python benchmarks/bench_features.py [--graphs 1000]

Weights are drawn so that 1–21% of the edges survive τ = 0.006: the paper's trained networks have
sparsity 0.79–0.99 (Table 1).
"""

import argparse
import json
import os
import time

import numpy as np

from dagwire import graphs, spec as specs


def random_trained_like(rng: np.random.Generator) -> specs.GraphSpec:
    """The complete 60-node DAG with weights of which a random 1–21% are above τ."""
    full = specs.complete(60, 3)
    keep = rng.random(full.num_edges) < rng.uniform(0.01, 0.21)
    weights = np.where(keep, rng.uniform(0.01, 0.8, full.num_edges), rng.uniform(0, 0.005, full.num_edges))
    return full.with_weights(weights.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    samples = [random_trained_like(rng) for _ in range(args.graphs)]
    started = time.perf_counter()
    results = graphs.features_many(samples, workers=args.workers)
    seconds = time.perf_counter() - started
    connected = sum(1 for r in results if not r.get("disconnected"))
    print(json.dumps({"graphs": args.graphs, "workers": args.workers or os.cpu_count(), "seconds": round(seconds, 2),
                      "ms_per_graph": round(1000 * seconds / args.graphs, 2), "connected": connected}))


if __name__ == "__main__":
    main()
