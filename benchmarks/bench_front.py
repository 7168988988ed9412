"""Training-step time of every trained network of the front, side by side: does a pruned graph train faster?

    python benchmarks/bench_front.py SWEEP... [--datasets a,b] [--rounds 3] [--steps 5] [--csv F.csv]

Each trained network `dagwire front` finds (the complete DAG at λ = 0, every learned graph
retrained, its random controls, its width control) is built from the graph it trained on, at its
C, and takes one-thread SGD steps on a synthetic batch of its run's batch size: a network's warm-up
and timed steps in a row, the networks in a fresh random order each round (`bench.time_side_by_side`).
The seconds an epoch in metrics.jsonl depend on what ran beside each training; here every network
meets the same machine. Run it on an otherwise idle machine.

Prints one JSON object: the CPU, and per dataset, λ and family the median over its networks of
each network's median seconds a step over the rounds, with the complete DAG's median divided by it
(`speedup`, above 1: faster than the complete DAG). `--csv` writes one row per network.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from dagwire import spec as specs
from dagwire.bench import time_side_by_side
from dagwire.front import network_rows, only_datasets
from dagwire.machine import cpu_label
from dagwire.model import create_model
from dagwire.rundir import RunDir
from dagwire.train import load_run_config

IMAGE = 32  # the front's FLOPs per image are counted at 32×32 (CMNIST, CFashionMNIST)


def _network(run_dir: str, channels: int) -> tuple[torch.nn.Module, int]:
    """The network a run directory trained (its initial graph at C = `channels`) and its batch size."""
    files = RunDir(Path(run_dir))
    meta = specs.load(files.graph).meta
    model = create_model(specs.load(files.initial_graph), channels, int(meta.get("in_channels", 3)),
                         int(meta.get("num_classes", 10)))
    return model, load_run_config(run_dir).batch_size


def family_speed(rows: list[dict]) -> list[dict]:
    """Per (dataset, λ, family): the median of its networks' step seconds and the complete DAG's median over it."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["lam"], row["family"]), []).append(row["step_seconds"])
    complete = {d: statistics.median(s) for (d, _, f), s in groups.items() if f == "complete"}
    out = []
    for (dataset, lam, family), seconds in groups.items():
        median = statistics.median(seconds)
        out.append({"dataset": dataset, "lam": lam, "family": family, "networks": len(seconds),
                    "step_seconds": median,
                    "speedup": complete[dataset] / median if dataset in complete else None})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--datasets", default="", help="comma-separated; default: every dataset of the sweeps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps a network a round (median), after 3 warm-up")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the networks in each round")
    parser.add_argument("--csv", default="", help="also write one row per network here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the study's trainings ran: one thread a process
    networks = network_rows(args.sweeps, progress=False)
    if args.datasets:
        networks = only_datasets(networks, args.datasets.split(","))
    trained = networks[networks["family"] != "thresholded"].reset_index(drop=True)
    built = {str(i): _network(row["run_dir"], int(row["channels"])) for i, row in trained.iterrows()}
    seconds: dict[str, list[float]] = {}
    for batch in sorted({b for _, b in built.values()}):
        models = {i: model for i, (model, b) in built.items() if b == batch}
        seconds |= time_side_by_side(models, batch, IMAGE, torch.device("cpu"), args.rounds, args.steps, seed=args.seed)
    trained["batch_size"] = [built[str(i)][1] for i in trained.index]
    trained["step_seconds"] = [statistics.median(seconds[str(i)]) for i in trained.index]
    if args.csv:
        trained.drop(columns=["cpu"]).assign(timed_on=cpu_label()).to_csv(args.csv, index=False)
    families = family_speed(trained.to_dict("records"))
    head = json.dumps({"cpu": cpu_label(), "rounds": args.rounds, "steps": args.steps})[:-1]
    print(head + ', "families": [\n' + ",\n".join(f"  {json.dumps(f)}" for f in families) + "\n]}")  # a family a line


if __name__ == "__main__":
    main()
