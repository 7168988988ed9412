"""The demo's design pilot, one line a run: `.venv/bin/python docs/demo/pilot.py [--tolerance POINTS] docs/demo/pilot/*`.

Each directory holds one candidate's runs (seed*/: config.yaml, metrics.jsonl, graph.json, thresholds.csv).
--tolerance: τ* by the same rule with another tolerance, in points of accuracy, than the paper's 0.5 (docs/demo.md).
"""

import argparse
from pathlib import Path

from dagwire import graphs, spec as specs
from dagwire.rundir import RunDir
from dagwire.taustar import own_tau_star


def main(*candidates: str, tolerance: float | None = None) -> None:
    """Print test accuracy unpruned → at the run's own τ*, τ*, and what pruning at τ* kept."""
    for name in candidates:
        for run in sorted(Path(name).glob("seed*")):
            learned = specs.load(run / "graph.json")
            rows = {r["threshold"]: r for r in RunDir(run).threshold_rows()}
            tau = own_tau_star(run, tolerance)
            print(f"{Path(name).name:12s} {run.name:6s} "
                  + graphs.pruning_summary(learned, tau, rows[0.0]["test_accuracy"], rows[tau]["test_accuracy"], "τ*"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The demo's design pilot, one line a run.")
    parser.add_argument("candidates", nargs="+", help="pilot candidate directories (each with seed*/ runs)")
    parser.add_argument("--tolerance", type=float, help="τ*'s tolerance in points of accuracy (default: the paper's 0.5)")
    args = parser.parse_args()
    main(*args.candidates, tolerance=args.tolerance)
