"""docs/capacity.md's results tables, in docs/repro.md's format, printed from the committed runs tables.

Run from the checkout: `.venv/bin/python docs/capacity/results.py [RUNS.csv ...]` (default
docs/capacity/runs_c4.csv and runs_c8.csv). One Markdown table per runs table: per dataset, the
mean ± std (ddof=1) over its done runs of test accuracy, the fit (accuracy on the run's own
training subset without augmentation), τ*, and the graph features at τ* and at the sweep's τ. A
table with runs not yet done says how many are done. Nothing here changes the study; it reads the
tables the sweeps wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from dagwire.compare import dataset_order, with_flags
from dagwire.config import DEFAULT_TAU
from dagwire.render import fmt_k, fmt_mean_std
from dagwire.stats import TAU_STAR_SUFFIX
from dagwire.sweep.plan import PRESETS
from dagwire.tables import read_runs_table

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TABLES = (ROOT / "docs" / "capacity" / "runs_c4.csv", ROOT / "docs" / "capacity" / "runs_c8.csv")

# The sweep's τ of the study's preset (the features without a suffix are at it).
SWEEP_TAU = PRESETS["capacity"]["config"].get("threshold", DEFAULT_TAU)
LABELS = {"cmnist": "CMNIST", "cfashionmnist": "CFashionMNIST", "cfashionmnist_t8": "CFashionMNIST_T8"}

# (row label, column, formatter); "{nodes}" is the initial node count.
ROWS = (
    ("test accuracy", "test_accuracy", fmt_mean_std(3)),
    ("training accuracy, no augmentation", "train_eval_accuracy", fmt_mean_std(3)),
    ("sparsity at τ\\*", "sparsity" + TAU_STAR_SUFFIX, fmt_mean_std(3)),
    ("nodes at τ\\* (of {nodes})", "nodes" + TAU_STAR_SUFFIX, fmt_mean_std(1)),
    ("mean degree at τ\\*", "mean_degree" + TAU_STAR_SUFFIX, fmt_mean_std(2)),
    ("parameters at τ\\*", "parameters" + TAU_STAR_SUFFIX, fmt_k),
    ("log paths at τ\\*", "log_paths" + TAU_STAR_SUFFIX, fmt_mean_std(2)),
    ("max path at τ\\*", "max_path" + TAU_STAR_SUFFIX, fmt_mean_std(1)),
    ("edge connectivity at τ\\*", "edge_connectivity" + TAU_STAR_SUFFIX, fmt_mean_std(1)),
    ("sparsity at τ = {tau:g}", "sparsity", fmt_mean_std(3)),
    ("mean degree at τ = {tau:g}", "mean_degree", fmt_mean_std(2)),
)


def results_table(path: str | Path) -> str:
    """One runs table's results as a Markdown table, datasets in the paper's order of difficulty."""
    runs = with_flags(read_runs_table(path))
    done = runs[runs["done"]]
    datasets = dataset_order(runs["dataset"])
    channels = sorted(set(pd.to_numeric(runs["channels"]).dropna().astype(int)))  # pending rows have none
    nodes = sorted(set(pd.to_numeric(runs["initial_nodes"]).dropna().astype(int)))
    status = (f"{Path(path).name}: C = {', '.join(map(str, channels)) or '?'}, {len(done)} of {len(runs)} runs done"
              + ("" if len(done) == len(runs) else " (not a result until all are)"))
    if done.empty or "tau_star" not in done.columns:
        return status
    stars = sorted(set(pd.to_numeric(done["tau_star"], errors="coerce").astype(float).dropna()))
    counts = done.groupby("dataset")["seed"].nunique()
    lines = [status, "",
             "| | " + " | ".join(f"{LABELS.get(d, d)} (n = {counts.get(d, 0)})" for d in datasets) + " |",
             "| --- |" + " --- |" * len(datasets),
             "| τ\\* (one for all datasets) | " + " | ".join(", ".join(f"{t:g}" for t in stars) or "–"
                                                          for _ in datasets) + " |"]
    for label, column, fmt in ROWS:
        cells = []
        for d in datasets:
            if column not in done.columns:
                cells.append("–")
                continue
            values = pd.to_numeric(done.loc[done["dataset"] == d, column], errors="coerce").astype(float).dropna()
            cells.append(fmt(values.mean(), values.std()) if len(values) else "–")
        lines.append(f"| {label.format(nodes=', '.join(map(str, nodes)), tau=SWEEP_TAU)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(*tables: str) -> None:
    """Print each runs table's results table, a blank line between them."""
    print("\n\n".join(results_table(t) for t in (tables or DEFAULT_TABLES)))


if __name__ == "__main__":
    main(*sys.argv[1:])
