"""The demo's design pilot, one line a run: `.venv/bin/python docs/demo/pilot.py docs/demo/pilot/*` (docs/demo.md).

Each directory holds one candidate's runs (seed*/: config.yaml, metrics.jsonl, graph.json, thresholds.csv).
"""

import sys
from pathlib import Path

from dagwire import graphs, spec as specs
from dagwire.rundir import RunDir
from dagwire.sweep.table import own_tau_star


def main(*candidates: str) -> None:
    """Print test accuracy unpruned → at the run's own τ*, τ*, and what pruning at τ* kept."""
    for name in candidates:
        for run in sorted(Path(name).glob("seed*")):
            learned = specs.load(run / "graph.json")
            rows = {r["threshold"]: r for r in RunDir(run).threshold_rows()}
            tau = own_tau_star(run)
            print(f"{Path(name).name:12s} {run.name:6s} "
                  + graphs.pruning_summary(learned, tau, rows[0.0]["test_accuracy"], rows[tau]["test_accuracy"], "τ*"))


if __name__ == "__main__":
    main(*sys.argv[1:])
