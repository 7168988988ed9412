"""Descriptive numbers behind docs/repro.md's "What the evidence points to" (post hoc, not a test).

Run from the checkout: `.venv/bin/python docs/repro/evidence.py [SWEEP_DIR]` (default
docs/repro/sweep). Per dataset, mean over its done runs of:
  - the last epoch's training and test accuracy (is the network fitting its training set?);
  - the median and the 80th percentile of |tanh w| over all edges at the end of each lr phase, from
    edge_history.npy (does the last, lr = 0.001, phase still move the edges, and differently per
    dataset?);
  - the largest τ at which that dataset alone keeps its hold-out accuracy within the τ* tolerance
    (stats.tau_star on its own threshold curves: how much pruning each dataset tolerates).
Nothing here changes or retunes the study; it reads the files the sweep wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dagwire.compare import load_runs
from dagwire.rundir import RunDir
from dagwire.stats import tau_star


def phase_end_epochs(config: dict) -> list[int]:
    """Epochs (1-based) at which each lr phase ends, from the run's step milestones and epoch length."""
    steps_per_epoch = config["limit_train"] // config["batch_size"]
    ends = [int(str(m).rstrip("s")) // steps_per_epoch for m in config["lr_milestones"]]
    return ends + [config["epochs"]]


def run_numbers(run_dir: Path) -> dict:
    """The numbers of one run: final accuracies, edge quantiles per phase end, its own tolerated τ."""
    import yaml

    files = RunDir(run_dir)
    config = yaml.safe_load(files.config.read_text())
    last = json.loads(files.metrics.read_text().splitlines()[-1])
    history = np.load(files.edge_history)
    row = {"train_accuracy": last["train_accuracy"], "test_accuracy": last["test_accuracy"]}
    for phase, epoch in enumerate(phase_end_epochs(config), start=1):
        edges = history[epoch - 1]
        row[f"median_edge_end_phase{phase}"] = float(np.median(edges))
        row[f"p80_edge_end_phase{phase}"] = float(np.quantile(edges, 0.8))
    return row


def main(sweep_dir: str = "docs/repro/sweep") -> None:
    runs = load_runs(sweep_dir)
    runs = runs[runs["status"] == "done"]
    rows, curves = [], []
    for _, run in runs.iterrows():
        rows.append({"dataset": run["dataset"], **run_numbers(Path(run["run_dir"]))})
        curve = pd.read_csv(RunDir(run["run_dir"]).thresholds_csv)
        curves.append(curve.assign(dataset=run["dataset"]))
    table = pd.DataFrame(rows).groupby("dataset", sort=False).mean()
    curves = pd.concat(curves)
    table["own_tau_within_tolerance"] = [tau_star(curves[curves["dataset"] == d]) for d in table.index]
    with pd.option_context("display.width", 200, "display.float_format", "{:.4f}".format):
        print(table.T.to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
