"""Running a sweep: the runs still to do as Ray tasks, each recorded in the runs table as it finishes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import DagwireError
from ..files import read_jsonl
from ..rundir import RunDir
from ..tables import runs_frame
from .cluster import _check_resources, check_reachable, connect_ray, run_slots
from .hold import HOLD_FILE, hold_sweep_dir
from .plan import (SWEEP_FILE, SweepPlan, describe_plan, first_difference, read_sweep_file, seed_major,
                   upgrade_run_configs, upgrade_sweep_file, write_sweep_file)
from .table import make_row, result_from_disk, write_tables
from .worker import Job, one_line, run_task, write_marker, write_status

if TYPE_CHECKING:
    from ..config import TrainConfig


# --------------------------------------------------------------------------------------------
# The sweep


def prepare_dir(sweep_dir: Path, plan: SweepPlan) -> bool:
    """Check that DIR is new or holds this same sweep (DagwireError otherwise); True when new."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise DagwireError(f"--out {sweep_dir} is a file, not a directory")
    old = read_sweep_file(sweep_dir)
    if old is not None:
        difference = first_difference(old, plan.identity())
        if difference:
            raise DagwireError(f"{sweep_dir} was made by a different configuration: {difference}")
        return False
    if sweep_dir.is_dir() and any(p.name != HOLD_FILE for p in sweep_dir.iterdir()):
        raise DagwireError(f"{sweep_dir} exists and is not a sweep directory (no {SWEEP_FILE}); give another --out")
    return True


@dataclass
class SweepResult:
    """How a sweep ended: the runs table and the counts."""

    table: Any  # pandas.DataFrame
    done: int
    failed: int
    ran: int


def run_sweep(
    plan: SweepPlan, sweep_dir: str | os.PathLike, *, address: str | None = None, cpus_per_run: int = 1,
    gpus_per_run: float = 0.0, runs_at_once: int | None = None, batch_seeds: int = 1, progress: bool = True,
    check_kernels: bool = True,
) -> SweepResult:
    """Run every unfinished (dataset, seed) of `plan` into `sweep_dir` as Ray tasks; resumable.

    runs_at_once: at most this many Ray tasks at a time (default: as many as the cluster holds).
    """
    if cpus_per_run < 1:
        raise DagwireError(f"--cpus-per-run must be at least 1, got {cpus_per_run}")
    if runs_at_once is not None and runs_at_once < 1:
        raise DagwireError(f"--runs-at-once must be at least 1, got {runs_at_once}")
    if batch_seeds < 1:
        raise DagwireError(f"--batch-seeds must be at least 1, got {batch_seeds}")
    if not (gpus_per_run >= 0 and math.isfinite(gpus_per_run)):
        raise DagwireError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    if plan.device.startswith("cuda") and not gpus_per_run:
        raise DagwireError(f"--device {plan.device} needs --gpus-per-run > 0 (Ray hides GPUs from tasks without one)")
    sweep_dir = Path(sweep_dir)
    prepare_dir(sweep_dir, plan)  # a wrong DIR is refused before anything is written, the hold file too
    with hold_sweep_dir(sweep_dir):  # a DIR that a live sweep holds is refused here: one sweep per DIR
        return _run_held(plan, sweep_dir, address, cpus_per_run, gpus_per_run, runs_at_once, batch_seeds, progress,
                         check_kernels)


def _run_held(plan: SweepPlan, sweep_dir: Path, address: str | None, cpus_per_run: int, gpus_per_run: float,
              runs_at_once: int | None, batch_seeds: int, progress: bool, check_kernels: bool) -> SweepResult:
    """run_sweep's work, with DIR held: DIR is read again here (the sweep that held it may just have ended)."""
    from tqdm import tqdm

    new = prepare_dir(sweep_dir, plan)
    runs = plan.runs()
    # Keyed by run directory: on the λ axis one (dataset, seed) has a run at every λ.
    rows = {rel: make_row(d, s, rel, {"status": "pending"} if new else result_from_disk(sweep_dir / rel))
            for d, s, rel in runs}
    todo = seed_major([(d, s, rel) for d, s, rel in runs if rows[rel]["status"] != "done"], list(plan.seeds))
    stages = int(plan.config["stages"])

    started = False
    if todo:
        started = connect_ray(address)  # before writing anything: an unreachable cluster leaves DIR as it was
    elif address:
        check_reachable(address)
    try:
        if todo:
            _check_resources(cpus_per_run, gpus_per_run)
        if new:  # DIR itself exists: the hold made it
            write_sweep_file(sweep_dir, plan.identity())
        elif upgrade_sweep_file(sweep_dir):
            click.echo(f"{sweep_dir / SWEEP_FILE}: its places (data_dir, a graph file) now recorded relative to "
                       "the dagwire checkout (the same place), so that it resolves on another machine", err=True)
        if not new:
            upgraded = upgrade_run_configs(sweep_dir / "runs")
            if upgraded:
                click.echo(f"{sweep_dir}: {len(upgraded)} run config(s) now record their places relative to the "
                           "dagwire checkout (the same places)", err=True)
        marker = write_marker(sweep_dir) if todo else None
        for d, s, rel in todo:
            rows[rel] = make_row(d, s, rel, {"status": "pending"})
        write_tables(sweep_dir, runs_frame(list(rows.values()), stages))
        if todo:
            _execute(plan, sweep_dir, todo, rows, stages, cpus_per_run, gpus_per_run, runs_at_once, batch_seeds,
                     progress, tqdm, check_kernels, marker)
    finally:
        if started:
            import ray

            ray.shutdown()
    table = runs_frame(list(rows.values()), stages)
    done = int((table["status"] == "done").sum())
    return SweepResult(table, done, int((table["status"] == "failed").sum()), len(todo))


def seed_groups(todo: list[tuple[str, int, str]], batch_seeds: int) -> list[list[tuple[str, int, str]]]:
    """The runs to do, K of one dataset (and λ) at a time (in the order given), each group one Ray task."""
    groups: list[list[tuple[str, int, str]]] = []
    open_group: dict[str, list[tuple[str, int, str]]] = {}
    for run in todo:
        key = str(Path(run[2]).parent)  # runs/<dataset>[/lam<λ>]: the runs that share one configuration
        group = open_group.get(key)
        if group is None or len(group) >= batch_seeds:
            group = open_group[key] = []
            groups.append(group)
        group.append(run)
    return groups


def share_left(config: TrainConfig, run_dir: Path) -> float:
    """The share of a run's epochs still to train: 1 unless it resumes from a checkpoint.

    Its epochs done are read from metrics.jsonl, which is written just after each checkpoint (so it
    is never ahead of the checkpoint), rather than by loading the checkpoint itself.
    """
    files = RunDir(run_dir)
    if not files.checkpoint.exists():
        return 1.0
    done = sum(1 for record in read_jsonl(files.metrics) if "epoch" in record)
    return max(0.0, 1 - done / config.epochs)


def _execute(plan, sweep_dir, todo, rows, stages, cpus_per_run, gpus_per_run, runs_at_once, batch_seeds, progress,
             tqdm, check_kernels, marker=None) -> None:
    """Submit the runs, then record each as it finishes (runs.csv and runs.parquet rewritten each time).

    `marker`: the token in DIR/.dagwire-marker, which each task checks before it touches DIR.
    """
    import ray

    # Ray promises no start order for queued tasks, so a task is submitted only when a slot is free:
    # runs start in the seed-major order of `todo`.
    slots = min(run_slots(cpus_per_run, gpus_per_run), runs_at_once or math.inf)
    if progress:  # the plan, once every input has been checked and before the first run starts
        left = [share_left(plan.run_config(d, s), sweep_dir / rel) for d, s, rel in todo]
        for line in describe_plan(plan, len(todo), cpus_per_run, slots,
                                  step_seconds=None if plan.device == "cpu" else 0.0, left=left):
            click.echo(line, err=True)
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1)(run_task)
    waiting = seed_groups(todo, batch_seeds)
    lam_of = {rel: lam for _, _, rel, lam in plan.lam_runs()}
    refs = {}

    def submit_next() -> None:
        group = waiting.pop(0)
        jobs = [Job(plan.run_config(dataset, seed, lam_of[rel]).to_dict(), str((sweep_dir / rel).resolve()),
                    cpus_per_run, plan.retrain, check_kernels, str(sweep_dir.resolve()), marker)
                for dataset, seed, rel in group]
        refs[task.remote(jobs)] = group

    while waiting and len(refs) < slots:
        submit_next()
    counts = {"done": sum(r["status"] == "done" for r in rows.values()), "failed": 0}
    bar = tqdm(total=len(rows), initial=counts["done"], desc="sweep", unit="run", disable=not progress)
    bar.set_postfix(counts)
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                group = refs.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the worker died (memory, a signal): its runs failed
                    results = [{"status": "failed", "dataset": d, "seed": s, "error": one_line(exc)} for d, s, _ in group]
                    for (_, _, rel), result in zip(group, results):
                        try:
                            write_status(sweep_dir / rel, result)
                        except OSError:
                            pass
                for (dataset, seed, rel), result in zip(group, results):
                    if result.pop("record_on_driver", False):  # a node that does not see DIR wrote nothing
                        try:
                            write_status(sweep_dir / rel, result)
                        except OSError:
                            pass
                    rows[rel] = make_row(dataset, seed, rel, result)
                    counts[result["status"] if result.get("status") in counts else "failed"] += 1
                    if result.get("status") != "done" and progress:
                        bar.write(f"failed: {dataset} seed {seed}: {result.get('error', '')}")
                    bar.update()
                write_tables(sweep_dir, runs_frame(list(rows.values()), stages))
                bar.set_postfix(counts)
                if waiting:
                    submit_next()
    finally:
        bar.close()


