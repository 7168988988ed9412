"""Training-step time of every trained network of the front, side by side: does a pruned graph train faster?

    python benchmarks/bench_front.py SWEEP... [--datasets a,b] [--rounds 3] [--steps 5] [--csv F.csv]
    python benchmarks/bench_front.py --from-csv F.csv

Each trained network `dagwire front` finds (the complete DAG at λ = 0, every learned graph
retrained, its random controls, its width control) is built from the graph it trained on, at its
C, and takes one-thread SGD steps on a synthetic batch of its run's batch size: a network's warm-up
and timed steps in a row, the networks in a fresh random order each round (`bench.time_side_by_side`).
The seconds an epoch in metrics.jsonl depend on what ran beside each training; here every network
meets the same machine. Run it on an otherwise idle machine.

Prints one JSON object: the CPU; per dataset, λ and family the median over its networks of each
network's median seconds a step over the rounds, with the complete DAG's median divided by it
(`speedup`, above 1: faster than the complete DAG); and, paired by run, the learned graph's step
time over the complete DAG's, its random controls' and its width control's (geometric mean of the
ratios over runs, bootstrap 95 % interval, two-sided sign-flip p: `front.mean_interval`,
`front.sign_flip_p`, on log ratios). The complete DAG's time is the median over every copy of it
the dataset's networks hold: the `complete` family and each width control at its run's own C,
which is the complete DAG itself. `--csv` writes one row per network; `--from-csv` summarises such
a file again without timing anything.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from dagwire import spec as specs
from dagwire.bench import time_side_by_side
from dagwire.front import mean_interval, network_rows, only_datasets, sign_flip_p
from dagwire.machine import CPU_SEPARATOR, cpu_label
from dagwire.model import create_model
from dagwire.rundir import RunDir
from dagwire.train import load_run_config

# What the summary reads of each row of a --csv file (beside the front's network columns it keeps).
CSV_COLUMNS = ("dataset", "lam", "seed", "family", "channels", "flops_per_image", "step_seconds", "timed_on", "rounds",
               "steps")
IMAGE = 32  # the front's FLOPs per image are counted at 32×32 (CMNIST, CFashionMNIST)


def _network(run_dir: str, channels: int) -> tuple[torch.nn.Module, int]:
    """The network a run directory trained (its initial graph at C = `channels`) and its batch size."""
    files = RunDir(Path(run_dir))
    meta = specs.load(files.graph).meta
    model = create_model(specs.load(files.initial_graph), channels, int(meta.get("in_channels", 3)),
                         int(meta.get("num_classes", 10)))
    return model, load_run_config(run_dir).batch_size


def _run(row: dict) -> tuple:
    return row["dataset"], row["lam"], row["seed"]


def is_complete_dag(rows: list[dict]) -> list[bool]:
    """Which networks are the complete DAG at its run's C: the `complete` family and every width control at its
    run's own C (the learned graph's; a learned graph that keeps nearly every parameter gets that width)."""
    own_channels = {_run(r): r["channels"] for r in rows if r["family"] == "learned"}
    return [r["family"] == "complete" or (r["family"] == "width" and r["channels"] == own_channels.get(_run(r)))
            for r in rows]


def complete_seconds(rows: list[dict]) -> dict[str, float]:
    """Per dataset: the median step seconds over its copies of the complete DAG (`is_complete_dag`)."""
    copies: dict[str, list[float]] = {}
    for row, complete in zip(rows, is_complete_dag(rows)):
        if complete:
            copies.setdefault(row["dataset"], []).append(row["step_seconds"])
    return {dataset: statistics.median(seconds) for dataset, seconds in copies.items()}


def family_speed(rows: list[dict]) -> list[dict]:
    """Per (dataset, λ, family): the median of its networks' step seconds and the complete DAG's median over it."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["lam"], row["family"]), []).append(row["step_seconds"])
    complete = complete_seconds(rows)
    out = []
    for (dataset, lam, family), seconds in groups.items():
        median = statistics.median(seconds)
        out.append({"dataset": dataset, "lam": lam, "family": family, "networks": len(seconds),
                    "step_seconds": median,
                    "speedup": complete[dataset] / median if dataset in complete else None})
    return out


def paired_speed(rows: list[dict], resamples: int = 9999, permutations: int = 9999, seed: int = 0) -> list[dict]:
    """Per reference (complete DAG, random controls, width control): the learned graph's step time over it, paired
    by run: geometric mean ratio, bootstrap 95 % interval, sign-flip p of the mean log ratio, runs where faster."""
    complete = complete_seconds(rows)
    by_run: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        by_run.setdefault(_run(row), {}).setdefault(row["family"], []).append(row["step_seconds"])
    rng = np.random.default_rng(seed)
    out = []
    for reference in ("complete", "random", "width"):
        logs = []
        for run, families in by_run.items():
            against = [complete.get(run[0], math.nan)] if reference == "complete" else families.get(reference, [])
            if "learned" in families and against and not math.isnan(against[0]):
                logs.append(math.log(statistics.fmean(families["learned"]) / statistics.fmean(against)))
        values = np.array(logs)
        if not len(values):
            continue
        low, high = mean_interval(values, resamples, rng)
        out.append({"learned_over": reference, "runs": len(values), "ratio": math.exp(values.mean()),
                    "low": math.exp(low), "high": math.exp(high), "p": sign_flip_p(values, permutations, rng),
                    "faster_in": int((values < 0).sum())})
    return out


def summary(rows: list[dict], cpu: str, rounds: int | None, steps: int | None) -> str:
    """The JSON the benchmark prints: a family a line, then the paired ratios, the complete DAG's copies, FLOPs ~ time."""
    copies = [r["step_seconds"] for r, c in zip(rows, is_complete_dag(rows)) if c]
    flops, seconds = [r["flops_per_image"] for r in rows], [r["step_seconds"] for r in rows]
    varied = len(set(flops)) > 1 and len(set(seconds)) > 1  # else no rank correlation is defined
    rho = float(spearmanr(flops, seconds).statistic) if varied else None
    head = {"cpu": cpu, "rounds": rounds, "steps": steps, "networks": len(rows),
            "complete_dag_copies": {"networks": len(copies), "min": min(copies, default=None),
                                    "median": statistics.median(copies) if copies else None,
                                    "max": max(copies, default=None)},
            "flops_step_spearman": rho}
    lines = [f"  {json.dumps(f)}" for f in family_speed(rows)]
    pairs = [f"  {json.dumps(p)}" for p in paired_speed(rows)]
    return (json.dumps(head)[:-1] + ', "families": [\n' + ",\n".join(lines) + '\n], "paired": [\n'
            + ",\n".join(pairs) + "\n]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="*")
    parser.add_argument("--datasets", default="", help="comma-separated; default: every dataset of the sweeps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps a network a round (median), after 3 warm-up")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the networks in each round")
    parser.add_argument("--csv", default="", help="also write one row per network here")
    parser.add_argument("--from-csv", default="", help="summarise a file --csv wrote; time nothing")
    args = parser.parse_args()
    if args.from_csv:
        if not Path(args.from_csv).is_file():
            parser.error(f"no such file: {args.from_csv}")
        try:
            rows = pd.read_csv(args.from_csv).to_dict("records")
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
            parser.error(f"{args.from_csv} is no CSV: {error}")
        missing = sorted(set(CSV_COLUMNS) - set(rows[0] if rows else ()))
        if missing:
            parser.error(f"{args.from_csv} is no --csv of this benchmark with its networks: no {', '.join(missing)}")
        print(summary(rows, CPU_SEPARATOR.join(sorted({r["timed_on"] for r in rows})), rows[0]["rounds"],
                      rows[0]["steps"]))
        return
    if not args.sweeps:
        parser.error("name the sweeps to time, or --from-csv")
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
        trained.drop(columns=["cpu"]).assign(timed_on=cpu_label(), rounds=args.rounds, steps=args.steps).to_csv(args.csv, index=False)
    print(summary(trained.to_dict("records"), cpu_label(), args.rounds, args.steps))


if __name__ == "__main__":
    main()
