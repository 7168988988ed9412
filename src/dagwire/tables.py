"""The runs table, one row per run of a sweep: its one schema, and reading and writing it.

runs.parquet keeps the column types (nullable integers and booleans); runs.csv is the same table
for people and spreadsheets. Both are written together, atomically; `read_runs_table` reads
either and gives the same typed frame.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from .errors import DagwireError
from .stats import TAU_STAR_SUFFIX

RUNS_CSV = "runs.csv"
RUNS_PARQUET = "runs.parquet"
RETRAIN_COLUMNS = ("retrained_accuracy", "retrained_fit_accuracy", "retrained_fit_channels",
                   "retrain_mean_epoch_seconds", "retrain_fit_mean_epoch_seconds")
# The initial network's size, so that tables of sweeps at different sizes can be pooled. `nodes` is
# already the feature "nodes kept", so the initial count is `initial_nodes`.
CAPACITY_COLUMNS = ("channels", "stages", "initial_nodes", "initial_parameters")
# The schedule in SGD steps, so that tables of sweeps that trained for different lengths can be
# pooled (`dagwire ordering --by steps`): total steps, the steps at which lr drops (comma-separated),
# λ and the steps it ramps over.
SCHEDULE_COLUMNS = ("steps", "milestones", "lam", "lam_warmup")
# The fit (accuracy on the training subset without augmentation) and the collapse check
# (dynamics.is_collapsed); empty for runs trained before either was recorded.
FIT_COLUMNS = ("train_eval_accuracy", "collapsed")
# ray_node: the Ray node a run ran on ("<node id, 8 hex>@<node IP>"; empty for runs recorded before it existed).
# cpu: every CPU (model and ISA) the run trained on, in order, machine.CPU_SEPARATOR-separated (a resumed run may have moved).
BASE_COLUMNS = ("dataset", "seed", "status", "error", "run_dir", "ray_node", "cpu", *CAPACITY_COLUMNS,
                *SCHEDULE_COLUMNS,
                "test_accuracy", *FIT_COLUMNS, "thresholded_accuracy", "mean_epoch_seconds", *RETRAIN_COLUMNS)
DYNAMICS_KEYS = ("A", "B", "C", "D", "edges", "dsc_largest", "dsc_smallest")
INT_COLUMNS = {"seed", "retrained_fit_channels", "nodes", "parameters", "max_path", "edge_connectivity", "dyn_edges",
               "channels", "stages", "initial_nodes", "initial_parameters", "steps", "lam_warmup"}
BOOL_COLUMNS = {"q1d", "disconnected", "collapsed"}
TEXT_COLUMNS = {"dataset", "status", "error", "run_dir", "ray_node", "cpu", "milestones"}


def feature_columns(stages: int) -> list[str]:
    """The SPEC §5 feature keys in `graphs.features` order for `stages` stages, then `disconnected`."""
    return ["sparsity", *[f"sparsity_stage_{s}" for s in range(stages)], "nodes",
            *[f"nodes_stage_{s}" for s in range(stages)], "parameters", "log_paths", "mean_path", "max_path",
            "ln_communicability", "edge_connectivity", "mean_degree", "pca_elongation", "q1d", "disconnected"]


def runs_frame(rows: list[dict[str, Any]], stages: int | None = None):
    """The runs table: fixed columns (base, features, dyn_*), nullable ints and booleans."""
    import pandas as pd

    keys = list(dict.fromkeys(k for row in rows for k in row))
    if stages is None:
        found = [int(k.rsplit("_", 1)[1]) for k in keys if re.fullmatch(r"(sparsity|nodes)_stage_\d+", k)]
        stages = max(found) + 1 if found else 0
    features = feature_columns(stages)
    dynamics = [f"dyn_{k}" for k in DYNAMICS_KEYS]
    known = set(BASE_COLUMNS) | set(features) | set(dynamics)
    extra_features = [k for k in keys if k not in known and not k.startswith("dyn_")]
    extra_dynamics = [k for k in keys if k not in known and k.startswith("dyn_")]
    columns = [*BASE_COLUMNS, *features, *extra_features, *dynamics, *extra_dynamics]
    df = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    for column in columns:
        kind = column.removesuffix(TAU_STAR_SUFFIX)  # features at τ* have the types of the features
        if kind in TEXT_COLUMNS:
            df[column] = df[column].astype(object).where(df[column].notna(), "").astype(str)
        elif kind in INT_COLUMNS or kind.startswith("nodes_stage_"):
            df[column] = pd.to_numeric(df[column], errors="coerce").round().astype("Int64")
        elif kind in BOOL_COLUMNS:
            df[column] = pd.array([None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                                   else bool(v) for v in df[column]], dtype="boolean")
        else:
            df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return df


def write_runs_table(df, sweep_dir: str | os.PathLike) -> list[Path]:
    """DIR/runs.csv and DIR/runs.parquet, each atomically, skipping a file that already holds this table; those written."""
    from .files import atomic_write, atomic_write_text

    sweep_dir = Path(sweep_dir)
    csv_path, parquet_path = sweep_dir / RUNS_CSV, sweep_dir / RUNS_PARQUET
    written = []
    text = df.to_csv(index=False)
    if not (csv_path.is_file() and csv_path.read_text() == text):
        atomic_write_text(csv_path, text)
        written.append(csv_path)
    # runs.parquet's bytes name the pandas and pyarrow that wrote it: rewriting the same table with
    # other versions changes the file though not one cell, so a resumed sweep with nothing new would
    # touch a committed record. Compare the table instead.
    if not _parquet_holds(parquet_path, df):
        atomic_write(parquet_path, lambda f: df.to_parquet(f, index=False))
        written.append(parquet_path)
    return written


def _parquet_holds(path: Path, df) -> bool:
    """Whether the parquet file at `path` reads back as `df`: the same columns, types and cells."""
    import pandas as pd

    if not path.is_file():
        return False
    try:
        pd.testing.assert_frame_equal(pd.read_parquet(path), df, check_exact=True)
    except Exception:  # noqa: BLE001 - unreadable or different: either way it is written afresh
        return False
    return True


def read_runs_table(path: str | os.PathLike):
    """A runs table from runs.parquet or runs.csv (or the sweep directory holding them), typed as written."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / RUNS_PARQUET if (path / RUNS_PARQUET).is_file() else path / RUNS_CSV
    if not path.is_file():
        raise DagwireError(f"runs table not found: {path}")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds for a bad file
        raise DagwireError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    missing = [c for c in ("dataset", "seed", "status") if c not in df.columns]
    if missing:
        raise DagwireError(f"{path} is not a runs table: it lacks the column(s) {', '.join(missing)}")
    return runs_frame(df.to_dict("records"))
