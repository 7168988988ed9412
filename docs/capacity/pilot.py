"""The pilot's numbers and the design criterion of docs/capacity.md, read from a pilot sweep's files.

Run from the checkout: `.venv/bin/python docs/capacity/pilot.py [PILOT_DIR ...]` (default
docs/capacity/pilot-c8-warmup, the design the preset holds). The criterion, fixed before the pilot ran: every pilot run of every
dataset at C = 8
  1. leaves chance within the lr = 0.1 phase: its training accuracy (the running mean of an epoch)
     exceeds 0.2, twice chance, in some epoch before the first lr drop; and
  2. ends with test accuracy at least its dataset's C = 4 study mean minus 2 points (the means of
     docs/repro/runs.csv: 92.0 / 76.9 / 69.6 %).
A run that has not reached the first lr drop yet is "running"; one past it but not finished has
verdict 1 only. Nothing here changes or retunes the pilot; it reads the files the sweep wrote.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from dagwire import spec as specs
from dagwire.config import build_config, read_yaml
from dagwire.dynamics import first_phase_epoch
from dagwire.rundir import RunDir
from dagwire.tables import read_runs_table

ROOT = Path(__file__).resolve().parents[2]
LEAVES_CHANCE = 0.2  # twice chance for 10 classes
MARGIN = 0.02  # 2 points below the C = 4 study mean


def targets() -> dict[str, float]:
    """Each dataset's C = 4 study mean test accuracy minus the margin."""
    c4 = read_runs_table(ROOT / "docs" / "repro" / "runs.csv")
    return {d: float(a) - MARGIN for d, a in c4.groupby("dataset")["test_accuracy"].mean().items()}


def run_numbers(run_dir: Path, target: float) -> dict:
    """One pilot run: when it left chance, its accuracy at the first phase's end and at the end, the verdicts."""
    files = RunDir(run_dir)
    config = build_config(None, **read_yaml(files.config))
    metrics = [json.loads(line) for line in files.metrics.read_text().splitlines() if line.strip()] \
        if files.metrics.is_file() else []
    per_epoch = math.ceil(config.limit_train / config.batch_size)
    phase_end = first_phase_epoch(config.milestone_steps(per_epoch), per_epoch, config.epochs)
    left = next((m["epoch"] for m in metrics[:phase_end] if m["train_accuracy"] > LEAVES_CHANCE), None)
    row = {"dataset": config.dataset, "seed": config.seed, "epochs": len(metrics), "left_chance_epoch": left,
           "phase_end_epoch": phase_end,
           "train_acc_phase_end": metrics[phase_end - 1]["train_accuracy"] if len(metrics) >= phase_end else None,
           "resources_phase_end": metrics[phase_end - 1]["resources_loss"] if len(metrics) >= phase_end else None,
           "test_accuracy": None, "train_eval_accuracy": None, "target": target,
           "collapsed": metrics[phase_end - 1].get("collapsed") if len(metrics) >= phase_end else None}
    if files.graph.is_file():
        meta = specs.load(files.graph).meta
        row.update(test_accuracy=meta["test_accuracy"], train_eval_accuracy=meta.get("train_eval_accuracy"),
                   collapsed=meta.get("collapsed"))
    row["leaves_chance"] = ("running" if len(metrics) < phase_end and left is None
                            else "yes" if left is not None else "no")
    row["accuracy_ok"] = "running" if row["test_accuracy"] is None else \
        ("yes" if row["test_accuracy"] >= target else "no")
    return row


def main(*pilot_dirs: str) -> None:
    """Print one line per pilot run and the criterion's outcome."""
    goal = targets()

    def show(value, spec=".3f"):
        return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)

    for pilot in pilot_dirs or (str(ROOT / "docs" / "capacity" / "pilot-c8-warmup"),):
        rows = []
        for run_dir in sorted(Path(pilot).glob("runs/*/seed*")):
            if RunDir(run_dir).config.is_file():
                dataset = read_yaml(RunDir(run_dir).config)["dataset"]
                rows.append(run_numbers(run_dir, goal[dataset]))
        print(f"{Path(pilot).name}:")
        print(f"{'dataset':<18}{'seed':>5}{'epochs':>7}{'left chance':>12}{'acc@phase1':>11}{'L1@phase1':>10}"
              f"{'test':>7}{'target':>7}{'train(no aug)':>14}{'collapsed':>10}  criterion 1 / 2")
        for r in rows:
            print(f"{r['dataset']:<18}{r['seed']:>5}{r['epochs']:>7}{show(r['left_chance_epoch']):>12}"
                  f"{show(r['train_acc_phase_end']):>11}{show(r['resources_phase_end'], '.1f'):>10}"
                  f"{show(r['test_accuracy']):>7}{r['target']:7.3f}{show(r['train_eval_accuracy']):>14}"
                  f"{show(r['collapsed']):>10}  {r['leaves_chance']} / {r['accuracy_ok']}")
        verdicts = [v for r in rows for v in (r["leaves_chance"], r["accuracy_ok"])]
        outcome = "fails" if "no" in verdicts else "passes" if len(rows) == 9 and "running" not in verdicts \
            else "undecided"
        print(f"criterion: {outcome} ({len(rows)} of 9 runs started)")


if __name__ == "__main__":
    main(*sys.argv[1:])
