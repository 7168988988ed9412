"""A run's threshold curve: building each τ's pruned network against evaluating it (goal: building is a small part).

    python benchmarks/bench_thresholds.py [RUN] [--test-images 1000]

RUN (default: docs/capacity/sweep-c4's CFashionMNIST seed 0, the paper's 30-node DAG at C = 4) is
pruned at every τ of the grid `dagwire thresholds` uses; for each connected pruned graph the
physically smaller network is built from the trained weights (`model.materialise`) and evaluated on
the first --test-images test images, one thread. Prints one JSON object: the CPU, the seconds of
each part summed over the grid, and building's share.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dagwire import graphs
from dagwire.config import TAU_GRID
from dagwire.data import load_dataset_for
from dagwire.errors import DagwireError
from dagwire.machine import cpu_label
from dagwire.model import materialise
from dagwire.prune import load_run
from dagwire.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = "docs/capacity/sweep-c4/runs/cfashionmnist/seed0"  # in the checkout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", default=DEFAULT_RUN)
    parser.add_argument("--test-images", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    try:
        trained = load_run(run if run.exists() else ROOT / run)  # a run of the checkout's docs from anywhere
    except DagwireError as exc:
        parser.exit(2, f"bench_thresholds: error: {exc}\n")
    data = load_dataset_for(trained.config)
    x = torch.from_numpy(data.test_x[:args.test_images])
    y = torch.from_numpy(data.test_y[:args.test_images])
    build = evaluate_seconds = 0.0
    connected = 0
    for tau in TAU_GRID:
        pruned = graphs.prune(trained.learned, tau)
        if not graphs.is_connected(pruned):
            continue
        connected += 1
        started = time.perf_counter()
        small = materialise(trained.model, pruned.with_weights(None))
        build += time.perf_counter() - started
        started = time.perf_counter()
        evaluate(small, x, y, data.mean, data.std, trained.config.eval_batch_size)
        evaluate_seconds += time.perf_counter() - started
    print(json.dumps({
        "cpu": cpu_label(), "run": str(args.run), "taus": len(TAU_GRID), "connected": connected,
        "test_images": len(x), "build_seconds": round(build, 2), "evaluate_seconds": round(evaluate_seconds, 2),
        "build_share": round(build / (build + evaluate_seconds), 3) if connected else None,
    }))


if __name__ == "__main__":
    main()
