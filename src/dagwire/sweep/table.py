"""The runs table of a sweep, built from its run directories (status.json, features, dynamics) and τ*."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from ..errors import DagwireError
from ..rundir import RunDir, epoch_cpus
from ..stats import TAU_STAR_SUFFIX
from ..tables import (CAPACITY_COLUMNS, FIT_COLUMNS, RETRAIN_COLUMNS, SCHEDULE_COLUMNS, feature_columns,
                      read_runs_table, runs_frame, write_runs_table)
from .plan import plan_from_identity, read_sweep_file


# --------------------------------------------------------------------------------------------
# runs.csv / runs.parquet


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_done(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory's status.json says done (and its measurements are there)."""
    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    status = _read_json(files.status)
    return (isinstance(status, dict) and status.get("status") == "done"
            and files.features.is_file() and files.dynamics.is_file())


def result_from_disk(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What `measure_run` returned for a run, read back from its files ({"status": "pending"} if none)."""
    run_dir = Path(run_dir)
    status = _read_json(RunDir(run_dir).status)
    if not isinstance(status, dict) or status.get("status") not in ("done", "failed"):
        return {"status": "pending"}
    if status["status"] == "done":
        if not is_done(run_dir):
            return {"status": "pending"}
        status = {**status, **run_facts(run_dir), "features": _read_json(RunDir(run_dir).features) or {},
                  "dynamics": _read_json(RunDir(run_dir).dynamics) or {}}
    return status


def run_facts(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A trained run's capacity, schedule, fit, collapse and CPU columns, read from its own files.

    They are derived here rather than stored in status.json, so that a table rebuilt from runs
    trained before a column existed gets every column its files allow (the collapse check, for
    one, needs only metrics.jsonl and edge_history.npy).
    """
    import numpy as np

    from .. import spec as specs
    from ..config import build_config, read_yaml
    from ..counts import parameter_count
    from ..dynamics import first_phase_epoch, is_collapsed

    files = RunDir(run_dir)
    config = build_config(None, **read_yaml(files.config))
    initial, learned = specs.load(files.initial_graph), specs.load(files.graph)
    in_channels, classes = int(learned.meta.get("in_channels", 3)), int(learned.meta.get("num_classes", 10))
    metrics = [json.loads(line) for line in files.metrics.read_text().splitlines() if line.strip()]
    collapsed = learned.meta.get("collapsed")
    steps_per_epoch = -(-(config.limit_train or 0) // config.batch_size) or None
    schedule = {"lam": config.lam, "lam_warmup": config.lam_warmup}
    if steps_per_epoch:  # a run over the whole training split: its steps per epoch are not in its config
        schedule.update(steps=config.epochs * steps_per_epoch,
                        milestones=",".join(str(m) for m in config.milestone_steps(steps_per_epoch)))
    if collapsed is None and metrics and files.edge_history.is_file():  # a run from before the check existed
        if steps_per_epoch:
            epoch = first_phase_epoch(config.milestone_steps(steps_per_epoch), steps_per_epoch, config.epochs)
            collapsed = is_collapsed(metrics[epoch - 1]["train_accuracy"], np.load(files.edge_history)[epoch - 1],
                                     classes)
    return {"cpu": epoch_cpus(run_dir),
            "channels": config.channels, "stages": config.stages, "initial_nodes": initial.num_nodes,
            "initial_parameters": parameter_count(initial, config.channels, in_channels, classes),
            "train_eval_accuracy": learned.meta.get("train_eval_accuracy"), "collapsed": collapsed, **schedule}


def make_row(dataset: str, seed: int, run_dir: str, result: dict[str, Any]) -> dict[str, Any]:
    """One runs.csv row from a run's result."""
    done = result.get("status") == "done"
    row = {"dataset": dataset, "seed": seed, "status": result.get("status", "pending"),
           "error": "" if done else str(result.get("error") or ""), "run_dir": run_dir,
           "ray_node": str(result.get("ray_node") or ""), "cpu": str(result.get("cpu") or "")}
    for key in (*CAPACITY_COLUMNS, *SCHEDULE_COLUMNS, "test_accuracy", *FIT_COLUMNS, "thresholded_accuracy", "mean_epoch_seconds",
                *RETRAIN_COLUMNS):
        row[key] = result.get(key) if done else None
    if done:
        features = dict(result.get("features") or {})
        features["disconnected"] = bool(features.get("disconnected", False))
        row.update(features)
        row.update({f"dyn_{k}": v for k, v in (result.get("dynamics") or {}).items()})
    return row


def holdout_curves(df, sweep_dir: str | os.PathLike):
    """The done runs' threshold curves that carry hold-out accuracy, as one long table (dataset,
    seed, threshold, ...; None when there is none), and the runs-table index of those runs."""
    import pandas as pd

    curves, done = [], []
    for k, row in df.iterrows():
        path = RunDir(Path(sweep_dir) / str(row["run_dir"])).thresholds_csv
        if row["status"] != "done" or not path.is_file():
            continue
        curve = pd.read_csv(path)
        if "holdout_accuracy" not in curve.columns:
            continue
        curves.append(curve.assign(dataset=row["dataset"], seed=row["seed"]))
        done.append(k)
    return (pd.concat(curves, ignore_index=True) if curves else None), done


def with_tau_star(df, sweep_dir: str | os.PathLike, previous=None):
    """The runs table with `tau_star` and every feature at τ* (columns `<feature>_at_tau_star`).

    τ* is the paper's threshold rule applied to the done runs' hold-out threshold curves at the
    sweep's tolerance (`taustar`), one τ for all datasets; it moves as runs finish. A table whose
    runs have no hold-out accuracy (trained without --holdout) is returned unchanged. A run that
    `previous` (the table this one replaces) already measured at the same τ* keeps those numbers:
    the layout behind pca_elongation is an optimisation whose last bits differ between CPU kinds,
    and a table rewritten on another machine must not change what was measured.
    """
    import pandas as pd

    from .. import graphs
    from .. import spec as specs
    from ..taustar import sweep_tolerance, tau_star_of

    sweep_dir = Path(sweep_dir)
    if "lam" in df.columns and df["lam"].dropna().nunique() > 1:
        return _tau_star_per_lam(df, sweep_dir, previous)
    curves, done = holdout_curves(df, sweep_dir)
    tau = tau_star_of(curves, sweep_tolerance(sweep_dir))
    if tau is None:
        return df
    df = df.copy()
    df["tau_star"] = tau
    stages = sum(1 for c in df.columns if c.startswith("sparsity_stage_"))
    names = feature_columns(stages)
    measured = _measured_at(previous, tau, names)
    at_tau = {k: measured.get(str(df.loc[k, "run_dir"])) or
              graphs.recorded_features(specs.load(RunDir(sweep_dir / str(df.loc[k, "run_dir"])).graph), tau)
              for k in done}
    for name in names:
        values = [at_tau[k].get(name, True if name == "disconnected" else None) if k in at_tau else None
                  for k in df.index]
        df[name + TAU_STAR_SUFFIX] = values
    return runs_frame(df.to_dict("records"), stages)


def _measured_at(previous, tau: float, names: list[str]) -> dict[str, dict[str, Any]]:
    """run_dir → its features at τ* from a previous runs table whose done run had this same τ*."""
    if previous is None or "tau_star" not in previous.columns:
        return {}
    import pandas as pd

    out = {}
    for _, row in previous.iterrows():
        if str(row["status"]) == "done" and not pd.isna(row["tau_star"]) and float(row["tau_star"]) == tau:
            values = {n: row.get(n + TAU_STAR_SUFFIX) for n in names}
            out[str(row["run_dir"])] = {n: (None if pd.isna(v) else v) for n, v in values.items()}
    return out


def _tau_star_per_lam(df, sweep_dir: Path, previous=None):
    """`with_tau_star` of a sweep on the λ axis: each λ's runs get the τ* a sweep of that λ alone would give them.

    One τ for runs at different λ would let the least pruned λ set it for all: at λ = 0 no edge
    shrinks, so every τ of the grid keeps hold-out accuracy and τ* would be the grid's largest.
    """
    by_run = {}
    for _, part in df[df["lam"].notna()].groupby("lam", sort=False):
        for record in with_tau_star(part.reset_index(drop=True), sweep_dir, previous).to_dict("records"):
            by_run[record["run_dir"]] = record
    return runs_frame([by_run.get(row["run_dir"], row) for row in df.to_dict("records")])


def write_tables(sweep_dir: str | os.PathLike, df) -> None:
    """DIR/runs.csv and DIR/runs.parquet, with τ* columns where the runs held out data; what the
    tables being replaced measured at the same τ* is kept (`with_tau_star`)."""
    write_runs_table(with_tau_star(df, sweep_dir, _previous_table(Path(sweep_dir))), sweep_dir)


def _previous_table(sweep_dir: Path):
    """The runs table a sweep directory holds now, None when it has none or it cannot be read."""
    try:
        return read_runs_table(sweep_dir)
    except DagwireError:
        return None


def collect_runs(sweep_dir: str | os.PathLike):
    """(Re)build the runs table of a sweep from its run directories (sweep.yaml's runs, else runs/*/seed*);
    features at τ* that the table it holds already measured at the same τ* are kept (`with_tau_star`)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DagwireError(f"sweep directory not found: {sweep_dir}")
    previous = _previous_table(sweep_dir)
    identity = read_sweep_file(sweep_dir)
    rows = []
    if identity is not None:
        plan = plan_from_identity(identity)
        for dataset, seed, rel in plan.runs():
            rows.append(make_row(dataset, seed, rel, result_from_disk(sweep_dir / rel)))
        return with_tau_star(runs_frame(rows, int(plan.config.get("stages", 0)) or None), sweep_dir, previous)
    for run_dir in sorted(p for p in sweep_dir.glob("runs/*/seed*") if RunDir(p).status.is_file()):
        status_path = RunDir(run_dir).status
        status = _read_json(status_path) or {}
        seed = status.get("seed", run_dir.name[len("seed"):])
        rel = str(run_dir.relative_to(sweep_dir))
        rows.append(make_row(str(status.get("dataset", run_dir.parent.name)), int(seed), rel,
                             result_from_disk(run_dir)))
    return with_tau_star(runs_frame(rows), sweep_dir, previous)


