"""What a Ray task does for its runs: check DIR, train (K seeds together), measure, record success or failure."""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..errors import DagwireError
from ..rundir import RunDir, mean_epoch_seconds
from .plan import MARKER_FILE
from .table import is_done, result_from_disk, run_facts


@dataclass(frozen=True)
class Job:
    """One run for a Ray task: its TrainConfig (as a dict: what crosses to the worker is plain data),
    its run directory, and how the task is to run it."""

    config: dict[str, Any]
    run_dir: str
    cpus: int = 1
    retrain: bool = False  # also retrain the pruned network (same C, fitted C)
    check_kernels: bool = True  # `dagwire doctor`'s quick form on the node first (cached)
    sweep_dir: str = ""  # with `marker`: the task checks it sees DIR/.dagwire-marker holding it
    marker: str = ""



# --------------------------------------------------------------------------------------------
# One run (inside a Ray worker)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and ±inf become null (strict JSON has neither)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def one_line(exc: BaseException) -> str:
    """An exception as one line: user errors by their message, others with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, DagwireError):
        text = f"{type(exc).__name__}: {text}" if str(exc).strip() else type(exc).__name__
    return text[:500]


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    from ..files import atomic_write_json

    atomic_write_json(RunDir(run_dir).status, _clean(status))


def _epochs_done(run_dir: Path) -> int:
    """Epochs recorded in metrics.jsonl (0 when there is none)."""
    try:
        return sum(1 for line in RunDir(run_dir).metrics.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint was saved after (0 when there is none: the run starts over)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except FileNotFoundError:
        return 0


def train_runs(jobs: list[Job], data) -> list[int | None]:
    """Train (or resume) the runs of `jobs` that have no learned graph yet, K at a time (--batch-seeds).

    Runs whose checkpoints stand at the same epoch train together as members of one network; the
    others in their own groups. Returns, per job, the epoch it resumed from (None: a new run).
    """
    from ..config import build_config
    from ..train import train_seeds

    configs = [build_config(None, **job.config) for job in jobs]
    outs = [Path(job.run_dir) for job in jobs]
    resumed_from: list[int | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for k, out in enumerate(outs):
        if RunDir(out).trained():
            continue
        epoch = _checkpoint_epoch(RunDir(out).checkpoint)
        if RunDir(out).started():
            resumed_from[k] = epoch
        groups.setdefault(epoch, []).append(k)
    for epoch, members in sorted(groups.items()):
        train_seeds([configs[k] for k in members], [outs[k] for k in members], resume=epoch > 0,
                    progress=False, dataset=data)
    return resumed_from


def measure_run(job: Job, data, resumed_from: int | None) -> dict[str, Any]:
    """Write a trained run's thresholds, features, dynamics (and retrained networks), then status.json last."""
    import numpy as np

    from .. import graphs
    from ..config import build_config
    from ..draw import plot_threshold_curve
    from ..dynamics import edge_dynamics
    from ..files import atomic_write_json
    from ..config import TAU_GRID
    from ..prune import load_run, threshold_curve, write_rows_csv

    config = build_config(None, **job.config)
    out = Path(job.run_dir)
    trained = load_run(out, config.device)
    rows = threshold_curve(trained, TAU_GRID, dataset=data, progress=False)
    files = RunDir(out)
    write_rows_csv(rows, files.thresholds_csv)
    plot_threshold_curve(rows, files.thresholds_png, title=f"{config.dataset} seed {config.seed}")

    learned, tau = trained.learned, config.threshold
    features = graphs.recorded_features(learned, tau, config.channels)
    features.setdefault("disconnected", False)
    retained = np.asarray(graphs.edge_mask(learned, graphs.prune(learned, tau)), dtype=bool)
    dynamics = edge_dynamics(np.load(files.edge_history), retained, tau)
    atomic_write_json(files.features, _clean(features))
    atomic_write_json(files.dynamics, _clean(dynamics))
    retrained = retrain_pruned(trained, tau, data) if job.retrain else {}
    status = {
        "status": "done", "dataset": config.dataset, "seed": config.seed,
        "test_accuracy": learned.meta.get("test_accuracy"),
        "thresholded_accuracy": learned.meta.get("thresholded_accuracy"),
        "mean_epoch_seconds": mean_epoch_seconds(out), "epochs": _epochs_done(out),
        "resumed_from_epoch": resumed_from, "device": config.device, "host": socket.gethostname(),
        **node_here(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **retrained,
    }
    write_status(out, status)  # last: its presence means every other file is complete
    return {**_clean(status), **_clean(run_facts(out)), "features": _clean(features), "dynamics": _clean(dynamics)}


def retrain_pruned(trained, tau: float, data) -> dict[str, Any]:
    """Retrain a run's pruned network from scratch, same C and fitted C, into RUN/retrain-<τ>[-fitC].

    Resumes each from its checkpoint (reuses it when finished). Returns the status.json entries:
    RETRAIN_COLUMNS and "retrain": "done", or "retrain": "skipped" with a note for a graph that is
    disconnected at τ (nothing to retrain; not a failure).
    """
    from .. import graphs
    from ..prune import retrain_run

    if not graphs.is_connected(graphs.prune(trained.learned, tau)):
        return {"retrain": "skipped", "note": "retrain skipped: disconnected"}
    device = trained.config.device
    _, same = retrain_run(trained, tau, fit=False, dataset=data, device=device)
    fit_config, fitted = retrain_run(trained, tau, fit=True, dataset=data, device=device)
    return {"retrain": "done",
            "retrained_accuracy": same.test_accuracy, "retrained_fit_accuracy": fitted.test_accuracy,
            "retrained_fit_channels": fit_config.channels,
            "retrain_mean_epoch_seconds": mean_epoch_seconds(same.out),
            "retrain_fit_mean_epoch_seconds": mean_epoch_seconds(fitted.out)}


class _run_lock:
    """An exclusive lock on a run directory (RUN/.lock), held while the run trains and is measured.

    A killed sweep's Ray workers outlive their driver by a few seconds; a rerun's task for the same
    run waits here until they are gone instead of training beside them.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = RunDir(run_dir).lock

    def __enter__(self) -> "_run_lock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # closing releases the lock


def node_here() -> dict[str, str]:
    """The Ray node this process runs on: `ray_node` ("<node id, 8 hex>@<node IP>"), its full id and IP.

    Several nodes on one machine share a host name and an IP; the node id tells them apart. Outside
    Ray (a direct call), `ray_node` is the host name.
    """
    global _NODE_HERE
    if _NODE_HERE is None:
        found = {"ray_node": socket.gethostname()}
        try:
            import ray

            if ray.is_initialized():
                node_id, ip = ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
                found = {"ray_node": f"{node_id[:8]}@{ip}", "ray_node_id": node_id, "ray_node_ip": ip}
        except Exception:  # noqa: BLE001 - where a run ran is information, never a reason to fail it
            pass
        _NODE_HERE = found
    return dict(_NODE_HERE)


_NODE_HERE: dict[str, str] | None = None
_NOT_SEEN: set[tuple[str, str]] = set()  # (DIR, token) this process looked for in vain


def write_marker(sweep_dir: Path) -> str:
    """DIR/.dagwire-marker with a new random token (at a sweep's start); the token."""
    import secrets

    from ..files import atomic_write_text

    token = secrets.token_hex(16)
    atomic_write_text(sweep_dir / MARKER_FILE, token + "\n")
    return token


def check_marker(sweep_dir: str | os.PathLike, token: str, grace: float = 3.0) -> None:
    """DagwireError unless this node reads `token` in DIR/.dagwire-marker: it sees the driver's DIR.

    Reads only: a node that does not share DIR must not create it on its own disk, where the
    driver would never find what it writes. A marker not seen yet is looked for again for `grace`
    seconds (a shared filesystem may show a new file late), once per process and DIR.
    """
    sweep_dir = Path(sweep_dir)
    deadline = time.monotonic() + (0.0 if (str(sweep_dir), token) in _NOT_SEEN else grace)
    while True:
        try:
            found = (sweep_dir / MARKER_FILE).read_text().strip()
        except FileNotFoundError:
            why = f"no {MARKER_FILE} in it" if sweep_dir.is_dir() else "no such directory here"
        except OSError as exc:
            why = f"cannot read its {MARKER_FILE} ({exc.strerror or type(exc).__name__})"
        else:
            if found == token:
                return
            why = f"its {MARKER_FILE} is not this sweep's (another directory at that path, or a newer sweep on DIR)"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    _NOT_SEEN.add((str(sweep_dir), token))
    raise DagwireError(
        f"{sweep_dir} is not on a filesystem this node shares (Ray node {node_here()['ray_node']}, host "
        f"{socket.gethostname()}): {why}; put DIR on a filesystem every node mounts at the same path "
        "(e.g. NFS), or run the sweep on one node")


def _failed_result(job: Job, exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "dataset": job.config["dataset"], "seed": job.config["seed"],
            "error": one_line(exc), **node_here(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _failure(job: Job, exc: BaseException) -> dict[str, Any]:
    """Record a run's failure in its status.json and error.log; return the result."""
    import traceback

    out = Path(job.run_dir)
    result = _failed_result(job, exc)
    try:
        from ..files import atomic_write_text

        atomic_write_text(RunDir(out).error_log, "".join(traceback.format_exception(exc)))
        write_status(out, result)
    except OSError:
        pass
    return result


def run_task(jobs: list[Job]) -> list[dict[str, Any]]:
    """A Ray task: runs of one dataset (several with --batch-seeds); failures are recorded and returned, never raised."""
    from contextlib import ExitStack

    results: list[dict[str, Any] | None] = [None] * len(jobs)
    if jobs and jobs[0].marker:
        try:
            check_marker(jobs[0].sweep_dir, jobs[0].marker)
        except DagwireError as exc:  # nothing written here: the driver records these failures in its DIR
            return [{**_failed_result(job, exc), "record_on_driver": True} for job in jobs]
    try:
        import torch

        from ..config import build_config
        from ..data import load_dataset_for

        # Ray gives the task `cpus` cores; torch would otherwise start one thread per core of the machine.
        torch.set_num_threads(max(1, int(jobs[0].cpus)))
        with ExitStack() as locks:
            for job in sorted(jobs, key=lambda j: j.run_dir):  # one order: no two tasks wait on each other
                locks.enter_context(_run_lock(Path(job.run_dir)))
            pending = []
            for k, job in enumerate(jobs):
                if is_done(job.run_dir):  # finished by another sweep process while this task waited
                    results[k] = result_from_disk(job.run_dir)
                else:
                    RunDir(job.run_dir).error_log.unlink(missing_ok=True)  # from an earlier attempt
                    pending.append(k)
            if pending:
                config = build_config(None, **jobs[pending[0]].config)
                data = load_dataset_for(config)
                if jobs[0].check_kernels:  # once per node and device: the verdict is cached
                    from ..doctor import ensure_healthy

                    ensure_healthy(config.device, max(1, int(jobs[0].cpus)))
                resumed = train_runs([jobs[k] for k in pending], data)
                for k, resumed_from in zip(pending, resumed):
                    try:
                        results[k] = measure_run(jobs[k], data, resumed_from)
                    except Exception as exc:  # noqa: BLE001 - one run's failure is that run's result
                        results[k] = _failure(jobs[k], exc)
    except Exception as exc:  # noqa: BLE001 - a failure before or during training fails every run left
        for k, job in enumerate(jobs):
            if results[k] is None:
                results[k] = _failure(job, exc)
    return [r for r in results if r is not None]


