"""The pilot's numbers and the design criterion of docs/long.md, read from the pilot sweeps' files.

Run from the checkout: `.venv/bin/python docs/long/pilot.py [PILOT_SWEEP ...]` (default the three
sweeps under docs/long/pilot/). The criterion, fixed before the pilot ran: every pilot run (CMNIST
seed 100, CFashionMNIST seed 101, CFashionMNIST_T8 seed 102, the `long` preset)
  1. does not collapse (`collapsed`, decided at the end of the lr = 0.1 phase); and
  2. ends with test accuracy at least its dataset's capacity-study C = 4 mean minus 2 points
     (the means of docs/capacity/runs_c4.csv: 96.2 / 81.7 / 75.1 %).
A run still in its first phase is "running" on both; one past it has verdict 1 only. The numbers
of each run come from docs/capacity/pilot.py's `run_numbers`, the same reading of a run's files.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from dagwire.config import read_yaml
from dagwire.rundir import RunDir
from dagwire.tables import read_runs_table

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 0.02  # 2 points below the capacity study's C = 4 mean
PILOT_RUNS = 3  # one per dataset
run_numbers = runpy.run_path(str(ROOT / "docs" / "capacity" / "pilot.py"))["run_numbers"]


def targets() -> dict[str, float]:
    """Each dataset's capacity-study C = 4 mean test accuracy minus the margin."""
    c4 = read_runs_table(ROOT / "docs" / "capacity" / "runs_c4.csv")
    return {d: float(a) - MARGIN for d, a in c4.groupby("dataset")["test_accuracy"].mean().items()}


def pilot_rows(*pilot_dirs: str) -> list[dict]:
    """One row per pilot run: run_numbers, and criterion 1 as "yes" (no collapse), "no" or "running"."""
    goal = targets()
    rows = []
    for pilot in pilot_dirs or sorted(str(p) for p in (ROOT / "docs" / "long" / "pilot").iterdir() if p.is_dir()):
        for run_dir in sorted(Path(pilot).glob("runs/*/seed*")):
            if RunDir(run_dir).config.is_file():
                row = run_numbers(run_dir, goal[read_yaml(RunDir(run_dir).config)["dataset"]])
                row["no_collapse"] = ("running" if row["collapsed"] is None else "no" if row["collapsed"] else "yes")
                rows.append(row)
    return rows


def main(*pilot_dirs: str) -> None:
    """Print one line per pilot run and the criterion's outcome."""
    def show(value, spec=".3f"):
        return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)

    rows = pilot_rows(*pilot_dirs)
    print(f"{'dataset':<18}{'seed':>5}{'epochs':>7}{'acc@phase1':>11}{'L1@phase1':>10}{'test':>7}{'target':>7}"
          f"{'train(no aug)':>14}{'collapsed':>10}  criterion 1 / 2")
    for r in rows:
        print(f"{r['dataset']:<18}{r['seed']:>5}{r['epochs']:>7}{show(r['train_acc_phase_end']):>11}"
              f"{show(r['resources_phase_end'], '.1f'):>10}{show(r['test_accuracy']):>7}{r['target']:7.3f}"
              f"{show(r['train_eval_accuracy']):>14}{show(r['collapsed']):>10}  {r['no_collapse']} / {r['accuracy_ok']}")
    verdicts = [v for r in rows for v in (r["no_collapse"], r["accuracy_ok"])]
    outcome = "fails" if "no" in verdicts else "passes" if len(rows) == PILOT_RUNS and "running" not in verdicts \
        else "undecided"
    print(f"criterion: {outcome} ({len(rows)} of {PILOT_RUNS} runs started)")


if __name__ == "__main__":
    main(*sys.argv[1:])
