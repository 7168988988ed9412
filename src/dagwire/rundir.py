"""A run directory: the one place that knows the names of the files a run writes.

    config.yaml         the full TrainConfig
    initial_graph.json  the initial DAG (before training)
    checkpoint.pt       model + optimiser + records, rewritten atomically every epoch
    metrics.jsonl       one JSON line per epoch
    edge_history.npy    epochs × edges, |tanh w| after each epoch, edge order = graph.json's
    graph.json          the learned graph (written at the end)
    weights.pt          the final state_dict (plain tensors)
and, for a run measured by a sweep:
    thresholds.csv/.png accuracy (no fine-tuning) and sparsity over τ
    tau_tolerance.json  by `dagwire thresholds` only: the tolerance it chose the run's own τ* with
    features.json       SPEC §5 features at the config's τ and C
    dynamics.json       SPEC §7 statistics of the edge history
    status.json         {"status": "done" | "failed", ...}, written last
    error.log           the traceback of a failed run
    retrain-<τ>[-fitC]/ the pruned network trained from scratch (same C, or C fitted)
    retrain-<τ>-random<k>/, retrain-<τ>-width/
                        its controls trained from scratch: a random graph of its size, a narrower complete DAG
and, in each retraining, network.json: its family, size, FLOPs and measured CPU time per image.

A sweep's directory holds its identity, sweep.yaml (`read_sweep_file`), above runs/<dataset>/seed<s>/:
it is here, beside the run's files, because every run (τ*, `dagwire retrain`) looks up for it.
`mean_epoch_seconds` and `epoch_cpus` read what a run's epochs recorded of their time and CPU.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DagwireError
from .files import read_jsonl
from .machine import CPU_SEPARATOR

CONFIG_FILE = "config.yaml"  # a run's TrainConfig, in every run directory
SWEEP_FILE = "sweep.yaml"  # a sweep's identity: its datasets, seeds, shared config
SWEEP_FORMAT = "dagwire-sweep/1"


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """DIR/sweep.yaml as a dict, None when absent; DagwireError when it is not a sweep file."""
    import yaml

    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        return None
    try:
        obj = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DagwireError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != SWEEP_FORMAT or \
            not all(isinstance(obj.get(k), t) for k, t in (("datasets", list), ("seeds", list), ("config", dict))):
        raise DagwireError(f"{path} is not a dagwire sweep file ({SWEEP_FORMAT})")
    return obj


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory's files, and whether the run has started or finished."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # --- what training writes ---
    @property
    def config(self) -> Path:
        """config.yaml: the run's TrainConfig."""
        return self.path / CONFIG_FILE

    @property
    def initial_graph(self) -> Path:
        """initial_graph.json: the DAG the run started from."""
        return self.path / "initial_graph.json"

    @property
    def checkpoint(self) -> Path:
        """checkpoint.pt: everything a resume needs."""
        return self.path / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        """metrics.jsonl: one line per epoch."""
        return self.path / "metrics.jsonl"

    @property
    def edge_history(self) -> Path:
        """edge_history.npy: |tanh w| of every edge after every epoch."""
        return self.path / "edge_history.npy"

    @property
    def graph(self) -> Path:
        """graph.json: the learned graph."""
        return self.path / "graph.json"

    @property
    def weights(self) -> Path:
        """weights.pt: the final state_dict."""
        return self.path / "weights.pt"

    # --- what measuring a run writes ---
    @property
    def thresholds_csv(self) -> Path:
        """thresholds.csv: the threshold curve."""
        return self.path / "thresholds.csv"

    @property
    def thresholds_png(self) -> Path:
        """thresholds.png: the threshold curve, drawn."""
        return self.path / "thresholds.png"

    @property
    def tau_tolerance(self) -> Path:
        """tau_tolerance.json: the tolerance (accuracy points) of the run's own τ*, as `dagwire thresholds` chose it."""
        return self.path / "tau_tolerance.json"

    @property
    def features(self) -> Path:
        """features.json: the learned graph's features at the run's τ."""
        return self.path / "features.json"

    @property
    def dynamics(self) -> Path:
        """dynamics.json: statistics of the edge history."""
        return self.path / "dynamics.json"

    @property
    def status(self) -> Path:
        """status.json: done or failed, written last."""
        return self.path / "status.json"

    @property
    def error_log(self) -> Path:
        """error.log: a failed run's traceback."""
        return self.path / "error.log"

    @property
    def lock(self) -> Path:
        """.lock: held while a sweep task trains and measures the run."""
        return self.path / ".lock"

    def threshold_rows(self) -> list[dict[str, float]]:
        """thresholds.csv's rows as numbers, sorted by τ ([] when the run has no threshold curve)."""
        if not self.thresholds_csv.exists():
            return []
        with open(self.thresholds_csv, newline="") as f:
            rows = [{k: float(v == "True") if v in ("True", "False") else float(v) for k, v in row.items()}
                    for row in csv.DictReader(f)]
        return sorted(rows, key=lambda r: r["threshold"])

    def retrain(self, tau: float, fit: bool) -> "RunDir":
        """retrain-<τ:g> (same C) or retrain-<τ:g>-fitC: the pruned network trained from scratch."""
        return RunDir(self.path / (f"retrain-{tau:g}" + ("-fitC" if fit else "")))

    def control(self, tau: float, name: str) -> "RunDir":
        """retrain-<τ:g>-<name> (name: random<k> or width): a control of the pruned network, trained from scratch."""
        return RunDir(self.path / f"retrain-{tau:g}-{name}")

    @property
    def network(self) -> Path:
        """network.json (in a retraining): its family, parameters, FLOPs and CPU time per image."""
        return self.path / "network.json"

    # --- state ---
    def started(self) -> bool:
        """A run was started here (a config or a checkpoint exists)."""
        return self.config.exists() or self.checkpoint.exists()

    def trained(self) -> bool:
        """Training finished: the learned graph and the final weights exist."""
        return self.graph.exists() and self.weights.exists()


def mean_epoch_seconds(run_dir: str | os.PathLike) -> float:
    """Mean of `seconds` over the epochs in a run's metrics.jsonl (NaN when there are none)."""
    seconds = [float(r["seconds"]) for r in read_jsonl(RunDir(run_dir).metrics)
               if isinstance(r.get("seconds"), (int, float))]
    return sum(seconds) / len(seconds) if seconds else float("nan")


def epoch_cpus(run_dir: str | os.PathLike) -> str:
    """The CPUs a run's epochs ran on (metrics.jsonl), in order of first use, joined by `machine.CPU_SEPARATOR`."""
    return CPU_SEPARATOR.join(dict.fromkeys(str(r["cpu"]) for r in read_jsonl(RunDir(run_dir).metrics) if r.get("cpu")))
