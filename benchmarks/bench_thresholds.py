"""A run's threshold curve: building each τ's pruned network against evaluating it (goal: building is a small part).

    python benchmarks/bench_thresholds.py [RUN] [--test-images 1000]

RUN (default: docs/capacity/sweep-c4's CFashionMNIST seed 0, the paper's 30-node DAG at C = 4) goes
through `prune.threshold_curve` itself, one thread, on the first --test-images test images (and as
many hold-out images, where the run holds some out): for each τ of the grid whose pruned graph is
connected, the curve builds the physically smaller network from the trained weights
(`model.materialise`) and evaluates it. The two are timed where the curve calls them. Prints one
JSON object: the CPU, the seconds of each part summed over the grid, and building's share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import torch

from dagwire import prune
from dagwire.config import TAU_GRID
from dagwire.data import load_dataset_for
from dagwire.errors import DagwireError
from dagwire.machine import cpu_label

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
        trained = prune.load_run(run if run.exists() else ROOT / run)  # a run of the checkout's docs from anywhere
    except DagwireError as exc:
        parser.exit(2, f"bench_thresholds: error: {exc}\n")
    data = load_dataset_for(trained.config)
    n = args.test_images
    data = dataclasses.replace(
        data, test_x=data.test_x[:n], test_y=data.test_y[:n],
        holdout_x=None if data.holdout_x is None else data.holdout_x[:n],
        holdout_y=None if data.holdout_y is None else data.holdout_y[:n])
    seconds = {"materialise": 0.0, "evaluate": 0.0}
    calls = {"materialise": 0, "evaluate": 0}

    def timed(name: str, function: Callable) -> Callable:
        """`function`, adding its seconds and calls to the totals under `name`."""
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return function(*a, **kw)
            finally:
                seconds[name] += time.perf_counter() - started
                calls[name] += 1
        return wrapper

    # The curve's own calls are timed, so what is timed is what `dagwire thresholds` runs.
    originals = prune.materialise, prune.evaluate
    prune.materialise, prune.evaluate = timed("materialise", prune.materialise), timed("evaluate", prune.evaluate)
    try:
        prune.threshold_curve(trained, TAU_GRID, data, progress=False)
    finally:
        prune.materialise, prune.evaluate = originals
    build, evaluate_seconds = seconds["materialise"], seconds["evaluate"]
    connected = calls["materialise"]
    print(json.dumps({
        "cpu": cpu_label(), "run": str(args.run), "taus": len(TAU_GRID), "connected": connected,
        "test_images": len(data.test_x),
        "evaluations": calls["evaluate"], "build_seconds": round(build, 2), "evaluate_seconds": round(evaluate_seconds, 2),
        "build_share": round(build / (build + evaluate_seconds), 3) if connected else None,
    }))


if __name__ == "__main__":
    main()
