"""τ* of a run, decided in one place: the paper's threshold rule (`stats.tau_star`) at a tolerance.

A run of a sweep is pruned at its sweep's τ* (the runs table's `tau_star`, one τ for every run,
chosen on all their hold-out curves at the sweep's `tau_tolerance`); any other run at its own τ*,
from its own hold-out threshold curve (RUN/thresholds.csv) at the run's tolerance: the one its
last `dagwire thresholds` used (RUN/tau_tolerance.json), else its config's `tau_tolerance`.
Tolerances are in percentage points of accuracy, as the command line takes them; the paper's
is 0.5 (`config.TAU_TOLERANCE_POINTS`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .config import TAU_TOLERANCE_POINTS, build_config, read_yaml
from .errors import DagwireError
from .files import atomic_write_text
from .rundir import SWEEP_FILE, RunDir, read_sweep_file


def check_tolerance(points: float, name: str = "--tolerance") -> float:
    """A tolerance in points of accuracy as a float; DagwireError unless it is a finite number >= 0."""
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not (math.isfinite(points) and points >= 0):
        raise DagwireError(f"{name} must be a number of accuracy points >= 0 (the paper's: {TAU_TOLERANCE_POINTS:g}), "
                           f"got {points}")
    return float(points)


def tau_star_of(curves, points: float = TAU_TOLERANCE_POINTS) -> float | None:
    """The paper's rule on threshold curves (one run's, or a sweep's long table) at `points` of accuracy."""
    from .stats import tau_star

    return tau_star(curves, check_tolerance(points, "τ*'s tolerance") / 100)


def sweep_tolerance(sweep_dir: str | os.PathLike) -> float:
    """The tolerance of a sweep's τ*: its sweep.yaml's `tau_tolerance` (the paper's when it has none)."""
    identity = read_sweep_file(sweep_dir) or {}
    return check_tolerance(identity.get("config", {}).get("tau_tolerance", TAU_TOLERANCE_POINTS), "tau_tolerance")


def run_tolerance(run_dir: str | os.PathLike) -> float:
    """A run's own tolerance: the one its last `dagwire thresholds` used, else its config's `tau_tolerance`."""
    files = RunDir(run_dir)
    if files.tau_tolerance.is_file():
        try:
            points = json.loads(files.tau_tolerance.read_text())["tau_tolerance"]
        except (OSError, ValueError, KeyError, TypeError):
            raise DagwireError(f"{files.tau_tolerance} is not a tolerance record; run `dagwire thresholds {run_dir}` "
                               f"again") from None
        return check_tolerance(points, str(files.tau_tolerance))
    if files.config.is_file():
        return build_config(None, **read_yaml(files.config)).tau_tolerance
    return TAU_TOLERANCE_POINTS


def record_tolerance(run_dir: str | os.PathLike, points: float) -> None:
    """Remember the tolerance `dagwire thresholds` chose the run's τ* with, so that 'star' uses it too."""
    atomic_write_text(RunDir(run_dir).tau_tolerance, json.dumps({"tau_tolerance": check_tolerance(points)}) + "\n")


def own_tau_star(run_dir: str | os.PathLike, points: float | None = None) -> float:
    """The run's own τ*, from its hold-out threshold curve, at `points` (None: the run's tolerance)."""
    import pandas as pd

    rows = RunDir(run_dir).threshold_rows()
    points = run_tolerance(run_dir) if points is None else points
    tau = tau_star_of(pd.DataFrame(rows), points) if rows and "holdout_accuracy" in rows[0] else None
    if tau is None:
        raise DagwireError(f"τ*: {run_dir} is not a run of a sweep (no {SWEEP_FILE} above it) and has no hold-out "
                           f"threshold curve: train it with --holdout N, then run `dagwire thresholds {run_dir}`")
    return tau


def run_tau_star(run_dir: str | os.PathLike) -> float:
    """τ* of a run: its sweep's, from the runs table; outside a sweep, its own (`own_tau_star`).

    DagwireError when there is none: a sweep whose runs held out no data, or a lone run without a
    thresholds.csv that has hold-out accuracy (`--holdout`, then `dagwire thresholds RUN`).
    """
    from .tables import read_runs_table

    run = Path(run_dir).resolve()
    sweep_dir = next((d for d in run.parents if read_sweep_file(d) is not None), None)
    if sweep_dir is None:
        return own_tau_star(run_dir)
    df = read_runs_table(sweep_dir)
    rows = df[[(sweep_dir / str(rel)).resolve() == run for rel in df["run_dir"]]]
    if rows.empty:
        raise DagwireError(f"τ*: {run_dir} is not in the runs table of the sweep {sweep_dir}")
    if "tau_star" not in df.columns or rows["tau_star"].isna().all():
        raise DagwireError(f"τ*: the sweep {sweep_dir} has no τ* (its runs held out no data: --holdout)")
    return float(rows["tau_star"].iloc[0])
