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
import math
import sys
from itertools import accumulate

import numpy as np
import pandas as pd

from dagwire.compare import load_runs
from dagwire.config import build_config
from dagwire.rundir import RunDir
from dagwire.stats import tau_star
from dagwire.sweep.plan import lr_phases
from dagwire.sweep.table import holdout_curves


def phase_end_epochs(config) -> list[int]:
    """Epochs (1-based) at which each lr phase ends, from the run's schedule as the sweep's plan shows it."""
    per_epoch = math.ceil(config.limit_train / config.batch_size)
    return [steps // per_epoch for steps in accumulate(steps for _, steps in lr_phases(config, per_epoch))]


def run_numbers(run_dir: str) -> dict:
    """The numbers of one run: final accuracies and the edge quantiles at each phase end."""
    files = RunDir(run_dir)
    last = json.loads(files.metrics.read_text().splitlines()[-1])
    history = np.load(files.edge_history)
    row = {"train_accuracy": last["train_accuracy"], "test_accuracy": last["test_accuracy"]}
    for phase, epoch in enumerate(phase_end_epochs(build_config(files.config)), start=1):
        edges = history[epoch - 1]
        row[f"median_edge_end_phase{phase}"] = float(np.median(edges))
        row[f"p80_edge_end_phase{phase}"] = float(np.quantile(edges, 0.8))
    return row


def main(sweep_dir: str = "docs/repro/sweep") -> None:
    runs = load_runs(sweep_dir)
    runs = runs[runs["status"] == "done"]
    table = pd.DataFrame([{"dataset": run["dataset"], **run_numbers(run["run_dir"])} for _, run in runs.iterrows()])
    table = table.groupby("dataset", sort=False).mean()
    curves, _ = holdout_curves(runs, sweep_dir)
    table["own_tau_within_tolerance"] = [tau_star(curves[curves["dataset"] == d]) for d in table.index]
    with pd.option_context("display.width", 200, "display.float_format", "{:.4f}".format):
        print(table.T.to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
