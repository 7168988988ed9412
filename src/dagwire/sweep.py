"""Multi-seed, multi-dataset sweeps on Ray (SPEC §9): every (dataset, seed) an independent, resumable run.

`dagwire sweep --datasets a,b --seeds 0-9 [train flags] --out DIR` lays out

    DIR/sweep.yaml                   the sweep's configuration, written once; a rerun must match it
    DIR/.dagwire-marker              a random token, rewritten when a sweep command starts; each task
                                     checks that it reads the same before it touches DIR
    DIR/runs/<dataset>/seed<k>/      one `dagwire train` run directory, plus
        thresholds.csv, .png         accuracy (no fine-tuning) and sparsity over τ (Fig. 2)
        features.json                SPEC §5 features at the config's τ and C
        dynamics.json                SPEC §7 (A)-(D), edges and the epoch-1 DSC scores
        retrain-<τ>/, retrain-<τ>-fitC/  with --retrain: the pruned network (τ: the config's threshold)
                                     trained from scratch, same C and C fitted to the complete
                                     network's parameter count (App. B–C; `dagwire retrain`'s dirs)
        status.json                  {"status": "done" | "failed", ...}, written last, atomically
        error.log                    the traceback of a failed run
    DIR/runs.csv, DIR/runs.parquet   one row per run, rewritten atomically whenever a run finishes

Each run is a Ray task (`--cpus-per-run`, `--gpus-per-run`), on an embedded local Ray instance by
default or on an existing cluster with `--address` (then DIR must be on a filesystem every node
mounts at the same path, and dagwire installed on every node: README, "On a cluster"). A task on a
node that does not see DIR's marker fails its runs with an error naming the node and DIR, without
writing anything there; the driver records those failures. The runs table's `ray_node` column
says which node each run ran on. Rerunning the same command skips done runs, resumes
unfinished ones from their checkpoints and retries failed ones. Exit codes: 0 when every run is
done, 1 when some run failed (its error is in runs.csv and its status.json), 2 for bad input.

Module-level imports stay light: cli.py imports this module at start-up.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .config import given_values
from .errors import DagwireError
from .rundir import RunDir
from .files import mean_epoch_seconds
from .stats import TAU_STAR_SUFFIX
from .tables import RETRAIN_COLUMNS, feature_columns, runs_frame, write_runs_table

SWEEP_FILE = "sweep.yaml"
MARKER_FILE = ".dagwire-marker"  # proves to each task that it sees the driver's DIR
SWEEP_FORMAT = "dagwire-sweep/1"
DEFAULT_SEEDS = "0-9"  # SPEC §9: ten seeds per dataset

# Not part of a sweep's identity: the seed is the sweep's own axis, the device may change on a rerun.
_PER_RUN_FIELDS = ("dataset", "seed", "device")



def _shared_data_dir() -> str | None:
    """`<repo>/../shared/data` when it holds MNIST (the only MNIST on these machines), else None."""
    try:
        candidate = Path(__file__).resolve().parents[3] / "shared" / "data"
    except IndexError:
        return None
    return str(candidate) if (candidate / "mnist").is_dir() else None


#: Named sweeps. `config` holds TrainConfig values, `per_dataset` values for one dataset only; a
#: value given by --config YAML or by a flag wins over both.
PRESETS: dict[str, dict[str, Any]] = {
    # Sized to finish in under an hour on 2 cores (two single-thread runs at a time, 9 runs):
    # SPEC §10's 15-node, C = 8, 2,500-step design takes about 25 min a run here, so this one is
    # about 3x cheaper per run: 12 nodes, C = 6 (0.45x the FLOPs), 5,000 images x 30 epochs
    # (about 1,170 SGD steps), and lambda = 5e-3, between SPEC §10's 3e-3 (needs more steps to cut)
    # and 1e-2 (collapsed CMNIST). Chosen before any test result of this preset was seen. MNIST
    # exists here only as its official 10k test split, so CMNIST carves 8,000 train / 2,000 test
    # out of it (carve_test 0.2); data_dir points at ../shared/data when present (Fashion-MNIST is
    # then still found in /usr/share/datasets, the data search path's last stop).
    "mini": {
        "datasets": ["cmnist", "cfashionmnist", "cfashionmnist_t8"],
        "seeds": "0-2",
        "config": {"nodes": 12, "stages": 3, "channels": 6, "limit_train": 5000, "limit_test": 2000,
                   "epochs": 30, "lam": 5e-3, "data_dir": _shared_data_dir()},
        "per_dataset": {"cmnist": {"carve_test": 0.2}},
    },
    # The CPU reproduction (issue 11): the paper's dynamics at a scale two cores finish in about
    # 2.5 hours (one step of this network takes about 0.8 s on one thread here). Held from the
    # paper: lr 0.1 / 0.01 / 0.001 in steps, batch 128, momentum 0.9, weight decay 1e-4, the data
    # pipeline. Scaled: a 30-node initial DAG (well above the ~12 nodes the paper's easiest task
    # keeps), C = 4, 5,120 training images (40 steps an epoch), 36 epochs = 1,440 steps: 400 at
    # lr 0.1, 240 at 0.01, and the longest phase last, 800 at 0.001, which is what separates
    # datasets: its Σ lr·λ/(1 − momentum) is 0.04 with λ = 5e-3, as the paper's. 1,000 further
    # training images are held out to choose τ* on; 1,000 test images. Fixed on pilot seed 100
    # before the study's seeds 0-4 ran (docs/repro.md).
    "repro": {
        "datasets": ["cmnist", "cfashionmnist", "cfashionmnist_t8"],
        "seeds": "0-4",
        "config": {"nodes": 30, "stages": 3, "channels": 4, "limit_train": 5120, "holdout": 1000,
                   "limit_test": 1000, "epochs": 36, "lr_milestones": ["400s", "640s"], "lam": 5e-3,
                   "data_dir": _shared_data_dir()},
        "per_dataset": {"cmnist": {"carve_test": 0.2}},
    },
}


# --------------------------------------------------------------------------------------------
# Parsing the command line


def parse_seeds(text: str) -> list[int]:
    """Seeds from `0-9`, `0,3,5` or `0-2,7` (non-negative, each at most once, in the order given)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise DagwireError(f"--seeds {text!r}: expected ranges and numbers like 0-9, 0,3,5 or 0-2,7")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise DagwireError(f"--seeds {text!r}: the range {first}-{last} is empty")
        for seed in range(first, last + 1):
            if seed in seeds:
                raise DagwireError(f"--seeds {text!r}: seed {seed} is given twice")
            seeds.append(seed)
    return seeds


def normalise_dataset(name: str, check_files: bool = True) -> str:
    """A dataset name as runs use it: a registered name in lower case, or `npz:`/`folder:` + absolute path."""
    from .data import available_datasets

    name = str(name).strip()
    prefix, sep, rest = name.partition(":")
    if sep and prefix.lower() in ("npz", "folder") and rest.strip():
        path = Path(rest.strip()).expanduser().resolve()
        if check_files and not (path.is_file() if prefix.lower() == "npz" else path.is_dir()):
            raise DagwireError(f"dataset {name}: no such {'file' if prefix.lower() == 'npz' else 'directory'} {path}")
        return f"{prefix.lower()}:{path}"
    if name.lower() in available_datasets():
        return name.lower()
    raise DagwireError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}, "
                       "folder:DIR, npz:FILE")


def parse_datasets(text: str, check_files: bool = True) -> list[str]:
    """Comma-separated dataset names, each validated and normalised (see `normalise_dataset`)."""
    names = [p.strip() for p in str(text).split(",")]
    if not names or any(not n for n in names):
        raise DagwireError(f"--datasets {text!r}: expected comma-separated names like cmnist,cfashionmnist")
    out: list[str] = []
    for name in names:
        normal = normalise_dataset(name, check_files)
        if normal in out:
            raise DagwireError(f"--datasets {text!r}: {name} is given twice")
        out.append(normal)
    return out


def run_dir_names(datasets: list[str]) -> dict[str, str]:
    """A filesystem-safe, unique folder name for each dataset (npz:/a/b/x.npz -> npz-x)."""
    import hashlib

    def base(name: str) -> str:
        prefix, sep, rest = name.partition(":")
        raw = f"{prefix}-{Path(rest).stem if prefix == 'npz' else Path(rest).name}" if sep else name
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "dataset"

    names = {d: base(d) for d in datasets}
    taken = list(names.values())
    # Two different datasets with the same safe name (x.npz in two folders) get their hash appended.
    return {d: v if taken.count(v) == 1 else f"{v}-{hashlib.sha1(d.encode()).hexdigest()[:8]}"
            for d, v in names.items()}


def _absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """data_dir and a graph file as absolute paths: Ray workers need not share the driver's cwd."""
    values = dict(values)
    if values.get("data_dir"):
        values["data_dir"] = str(Path(values["data_dir"]).expanduser().resolve())
    if values.get("graph") not in (None, "complete", "local"):
        values["graph"] = str(Path(values["graph"]).expanduser().resolve())
    return values


# --------------------------------------------------------------------------------------------
# The plan: which runs, with which configuration


@dataclass
class SweepPlan:
    """What a sweep runs: datasets × seeds, one TrainConfig (minus dataset, seed, device), per-dataset values."""

    datasets: list[str]
    seeds: list[int]
    config: dict[str, Any]
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    preset: str | None = None
    retrain: bool = False  # retrain each run's pruned network (same C, fitted C) after it is measured

    def run_config(self, dataset: str, seed: int):
        """The TrainConfig of the run (dataset, seed)."""
        from .config import build_config

        values = {**self.config, **self.per_dataset.get(dataset, {}),
                  "dataset": dataset, "seed": seed, "device": self.device}
        return build_config(None, **values)

    def effective(self, dataset: str) -> dict[str, Any]:
        """The configuration one dataset's runs share (TrainConfig fields minus dataset, seed, device)."""
        return {**self.config, **self.per_dataset.get(dataset, {})}

    def identity(self) -> dict[str, Any]:
        """What sweep.yaml stores (the preset is recorded for information, not compared)."""
        return {"format": SWEEP_FORMAT, "preset": self.preset, "datasets": list(self.datasets),
                "seeds": list(self.seeds), "retrain": bool(self.retrain), "config": dict(self.config),
                "per_dataset": {d: dict(v) for d, v in self.per_dataset.items() if v}}

    def runs(self) -> list[tuple[str, int, str]]:
        """(dataset, seed, run directory relative to the sweep directory), datasets outer, seeds inner."""
        names = run_dir_names(self.datasets)
        return [(d, s, f"runs/{names[d]}/seed{s}") for d in self.datasets for s in self.seeds]


def make_plan(
    datasets: str | None = None, seeds: str | None = None, preset: str | None = None,
    config_path: str | None = None, check_files: bool = True, retrain: bool = False, **flags: Any,
) -> SweepPlan:
    """Build and validate a plan: defaults < preset < --config YAML < flags (None = not given)."""
    from dataclasses import fields

    from .config import TrainConfig, build_config, read_yaml

    chosen: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise DagwireError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
        chosen = PRESETS[preset]
    given = {**(read_yaml(config_path) if config_path else {}), **given_values(flags)}

    if datasets is not None and flags.get("dataset") is not None:
        raise DagwireError("give either --datasets or --dataset, not both")
    if seeds is not None and flags.get("seed") is not None:
        raise DagwireError("give either --seeds or --seed, not both")
    if datasets is None:
        if given.get("dataset") is not None:
            datasets = str(given["dataset"])
        elif chosen:
            datasets = ",".join(chosen["datasets"])
        else:
            raise DagwireError("--datasets is required (comma-separated, e.g. cmnist,cfashionmnist), or --preset")
    dataset_list = parse_datasets(datasets, check_files)
    if seeds is None:
        seeds = str(given["seed"]) if given.get("seed") is not None else chosen.get("seeds", DEFAULT_SEEDS)
    seed_list = parse_seeds(seeds)

    values = _absolute_paths({**chosen.get("config", {}), **given})
    device = str(values.get("device") or "cpu")
    base = build_config(None, **{k: v for k, v in values.items() if k not in _PER_RUN_FIELDS}, device=device)
    config = {f.name: getattr(base, f.name) for f in fields(TrainConfig) if f.name not in _PER_RUN_FIELDS}
    per_dataset: dict[str, dict[str, Any]] = {}
    for name, extra in chosen.get("per_dataset", {}).items():
        normal = normalise_dataset(name, check_files=False)
        kept = {k: v for k, v in extra.items() if k not in given}  # what the user gave wins
        if normal in dataset_list and kept:
            per_dataset[normal] = _absolute_paths(kept)
    plan = SweepPlan(dataset_list, seed_list, config, per_dataset, device, preset, bool(retrain))
    for dataset in dataset_list:  # every run's configuration must be valid before anything starts
        plan.run_config(dataset, seed_list[0])
    if config["graph"] not in ("complete", "local"):
        from . import spec as specs

        specs.load(config["graph"])
    return plan


def lr_phases(config, steps_per_epoch: int) -> list[tuple[float, int]]:
    """(learning rate, steps) of each phase of a run's schedule, in order."""
    total = config.epochs * steps_per_epoch
    bounds = [0, *[min(max(m, 0), total) for m in config.milestone_steps(steps_per_epoch)], total]
    return [(config.learning_rate(a, steps_per_epoch), b - a) for a, b in zip(bounds, bounds[1:]) if b > a]


def describe_plan(plan: SweepPlan, todo: int, cpus_per_run: int = 1, slots: int | None = None,
                  step_seconds: float | None = None) -> list[str]:
    """Lines shown before a sweep starts: runs, each dataset's schedule in steps, and the expected time.

    The time is an estimate from one timed training step of the initial network on this machine
    (or `step_seconds`), plus evaluations at a third of a step per batch.
    """
    from .prune import DEFAULT_GRID

    slots = slots or max(1, (os.cpu_count() or 1) // cpus_per_run)
    lines = [f"plan: {len(plan.datasets)} datasets × {len(plan.seeds)} seeds = {len(plan.runs())} runs "
             f"({todo} to do), {slots} at a time" + (f" (preset {plan.preset})" if plan.preset else "")]
    seconds_per_run = []
    for dataset in plan.datasets:
        config = plan.run_config(dataset, plan.seeds[0])
        if config.limit_train is None:
            lines.append(f"  {dataset}: {config.epochs} epochs of the whole training split")
            continue
        per_epoch = math.ceil(config.limit_train / config.batch_size)
        phases = ", ".join(f"{steps} at lr {lr:.3g}" for lr, steps in lr_phases(config, per_epoch))
        lines.append(f"  {dataset}: {config.epochs} epochs × {per_epoch} steps = {config.epochs * per_epoch} steps "
                     f"({phases}); λ = {config.lam:g}")
        if step_seconds is None:
            step_seconds = _time_one_step(config, cpus_per_run)
        eval_batches = math.ceil((config.limit_test or 10_000) / config.batch_size)
        curve_batches = len(DEFAULT_GRID) * (eval_batches + math.ceil((config.holdout or 0) / config.batch_size))
        seconds_per_run.append(step_seconds * (config.epochs * per_epoch + (config.epochs * eval_batches
                                                                              + curve_batches) / 3))
    if seconds_per_run and todo and step_seconds:
        mean = sum(seconds_per_run) / len(seconds_per_run)
        total = mean * math.ceil(todo / slots)
        lines.append(f"expected: about {mean / 60:.0f} min a run, {total / 3600:.1f} h in all "
                     f"(one step {step_seconds:.2f} s on {cpus_per_run} thread{'s' if cpus_per_run > 1 else ''} here)")
    return lines


def _time_one_step(config, threads: int) -> float:
    """Seconds of one training step of the run's initial network on this machine's CPU, `threads` threads."""
    import torch

    from .bench import time_train_steps
    from .model import create_model
    from .train import initial_spec

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = create_model(initial_spec(config), config.channels)
        return time_train_steps({"run": model}, config.batch_size, 32, torch.device("cpu"), steps=3, warmup=2)["run"]
    finally:
        torch.set_num_threads(before)


def plan_from_identity(identity: dict[str, Any], device: str | None = None) -> SweepPlan:
    """The plan stored in a sweep.yaml (device: the one to run on now)."""
    return SweepPlan(list(identity["datasets"]), [int(s) for s in identity["seeds"]], dict(identity["config"]),
                     {d: dict(v) for d, v in (identity.get("per_dataset") or {}).items()},
                     device or "cpu", identity.get("preset"), bool(identity.get("retrain", False)))


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


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first key where two sweep.yaml contents give different runs, None when they agree."""
    import yaml

    # Compare what YAML gives back, so that 3e-3 written and read is 3e-3 computed.
    old, new = yaml.safe_load(yaml.safe_dump(old)), yaml.safe_load(yaml.safe_dump(new))
    for key in ("datasets", "seeds"):
        if old.get(key) != new.get(key):
            return f"{key} ({_short(old.get(key))} there, {_short(new.get(key))} now)"
    # A sweep.yaml from before --retrain existed has no key: it did not retrain.
    if bool(old.get("retrain", False)) != bool(new.get("retrain", False)):
        return f"retrain ({bool(old.get('retrain', False))} there, {bool(new.get('retrain', False))} now)"
    old_plan, new_plan = plan_from_identity(old), plan_from_identity(new)
    keys = list(dict.fromkeys([*new["config"], *old["config"]]))
    for dataset in new["datasets"]:
        a, b = old_plan.effective(dataset), new_plan.effective(dataset)
        for key in keys:
            if a.get(key) != b.get(key):
                where = "" if old["config"].get(key) != new["config"].get(key) else f" for {dataset}"
                return f"{key}{where} ({_short(a.get(key))} there, {_short(b.get(key))} now)"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


def _one_line(exc: BaseException) -> str:
    """An exception as one line: user errors by their message, others with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, DagwireError):
        text = f"{type(exc).__name__}: {text}" if str(exc).strip() else type(exc).__name__
    return text[:500]


def _write_status(run_dir: Path, status: dict[str, Any]) -> None:
    from .files import atomic_write_json

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


def train_runs(jobs: list[dict[str, Any]], data) -> list[int | None]:
    """Train (or resume) the runs of `jobs` that have no learned graph yet, K at a time (--batch-seeds).

    Runs whose checkpoints stand at the same epoch train together as members of one network; the
    others in their own groups. Returns, per job, the epoch it resumed from (None: a new run).
    """
    from .config import build_config
    from .train import train_seeds

    configs = [build_config(None, **job["config"]) for job in jobs]
    outs = [Path(job["run_dir"]) for job in jobs]
    resumed_from: list[int | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for k, out in enumerate(outs):
        if RunDir(out).trained():
            continue
        checkpoint = RunDir(out).checkpoint
        epoch = _checkpoint_epoch(checkpoint)
        if checkpoint.exists() or (out / "config.yaml").exists():
            resumed_from[k] = epoch
        groups.setdefault(epoch, []).append(k)
    for epoch, members in sorted(groups.items()):
        train_seeds([configs[k] for k in members], [outs[k] for k in members], resume=epoch > 0,
                    progress=False, dataset=data)
    return resumed_from


def measure_run(job: dict[str, Any], data, resumed_from: int | None) -> dict[str, Any]:
    """Write a trained run's thresholds, features, dynamics (and retrained networks), then status.json last."""
    import numpy as np

    from . import graphs
    from .config import build_config
    from .draw import plot_threshold_curve
    from .dynamics import edge_dynamics
    from .files import atomic_write_json
    from .prune import DEFAULT_GRID, load_run, threshold_curve, write_rows_csv

    config = build_config(None, **job["config"])
    out = Path(job["run_dir"])
    trained = load_run(out, config.device)
    rows = threshold_curve(trained, DEFAULT_GRID, dataset=data, progress=False)
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
    retrained = retrain_pruned(trained, tau, data) if job.get("retrain") else {}
    status = {
        "status": "done", "dataset": config.dataset, "seed": config.seed,
        "test_accuracy": learned.meta.get("test_accuracy"),
        "thresholded_accuracy": learned.meta.get("thresholded_accuracy"),
        "mean_epoch_seconds": mean_epoch_seconds(out), "epochs": _epochs_done(out),
        "resumed_from_epoch": resumed_from, "device": config.device, "host": socket.gethostname(),
        **node_here(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **retrained,
    }
    _write_status(out, status)  # last: its presence means every other file is complete
    return {**_clean(status), "features": _clean(features), "dynamics": _clean(dynamics)}


def retrain_pruned(trained, tau: float, data) -> dict[str, Any]:
    """Retrain a run's pruned network from scratch, same C and fitted C, into RUN/retrain-<τ>[-fitC].

    Resumes each from its checkpoint (reuses it when finished). Returns the status.json entries:
    RETRAIN_COLUMNS and "retrain": "done", or "retrain": "skipped" with a note for a graph that is
    disconnected at τ (nothing to retrain; not a failure).
    """
    from . import graphs
    from .prune import retrain_run

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

    from .files import atomic_write_text

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


def _failed_result(job: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "dataset": job["config"]["dataset"], "seed": job["config"]["seed"],
            "error": _one_line(exc), **node_here(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _failure(job: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """Record a run's failure in its status.json and error.log; return the result."""
    import traceback

    out = Path(job["run_dir"])
    result = _failed_result(job, exc)
    try:
        from .files import atomic_write_text

        atomic_write_text(RunDir(out).error_log, "".join(traceback.format_exception(exc)))
        _write_status(out, result)
    except OSError:
        pass
    return result


def _run_task(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Ray task: runs of one dataset (several with --batch-seeds); failures are recorded and returned, never raised."""
    from contextlib import ExitStack

    results: list[dict[str, Any] | None] = [None] * len(jobs)
    if jobs and jobs[0].get("marker"):
        try:
            check_marker(jobs[0]["sweep_dir"], jobs[0]["marker"])
        except DagwireError as exc:  # nothing written here: the driver records these failures in its DIR
            return [{**_failed_result(job, exc), "record_on_driver": True} for job in jobs]
    try:
        import torch

        from .config import build_config
        from .data import load_dataset_for

        # Ray gives the task `cpus` cores; torch would otherwise start one thread per core of the machine.
        torch.set_num_threads(max(1, int(jobs[0]["cpus"])))
        with ExitStack() as locks:
            for job in sorted(jobs, key=lambda j: j["run_dir"]):  # one order: no two tasks wait on each other
                locks.enter_context(_run_lock(Path(job["run_dir"])))
            pending = []
            for k, job in enumerate(jobs):
                if is_done(job["run_dir"]):  # finished by another sweep process while this task waited
                    results[k] = result_from_disk(job["run_dir"])
                else:
                    RunDir(job["run_dir"]).error_log.unlink(missing_ok=True)  # from an earlier attempt
                    pending.append(k)
            if pending:
                config = build_config(None, **jobs[pending[0]]["config"])
                data = load_dataset_for(config)
                if jobs[0].get("check_kernels", True):  # once per node and device: the verdict is cached
                    from .doctor import ensure_healthy

                    ensure_healthy(config.device, max(1, int(jobs[0]["cpus"])))
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
        status = {**status, "features": _read_json(RunDir(run_dir).features) or {},
                  "dynamics": _read_json(RunDir(run_dir).dynamics) or {}}
    return status


def make_row(dataset: str, seed: int, run_dir: str, result: dict[str, Any]) -> dict[str, Any]:
    """One runs.csv row from a run's result."""
    done = result.get("status") == "done"
    row = {"dataset": dataset, "seed": seed, "status": result.get("status", "pending"),
           "error": "" if done else str(result.get("error") or ""), "run_dir": run_dir,
           "ray_node": str(result.get("ray_node") or "")}
    for key in ("test_accuracy", "thresholded_accuracy", "mean_epoch_seconds", *RETRAIN_COLUMNS):
        row[key] = result.get(key) if done else None
    if done:
        features = dict(result.get("features") or {})
        features["disconnected"] = bool(features.get("disconnected", False))
        row.update(features)
        row.update({f"dyn_{k}": v for k, v in (result.get("dynamics") or {}).items()})
    return row


def with_tau_star(df, sweep_dir: str | os.PathLike):
    """The runs table with `tau_star` and every feature at τ* (columns `<feature>_at_tau_star`).

    τ* is the paper's threshold rule applied to the done runs' hold-out threshold curves
    (`stats.tau_star`), one τ for all datasets; it moves as runs finish. A table whose runs have
    no hold-out accuracy (trained without --holdout) is returned unchanged.
    """
    import pandas as pd

    from . import graphs
    from . import spec as specs
    from .stats import tau_star

    sweep_dir = Path(sweep_dir)
    curves, done = [], []
    for k, row in df.iterrows():
        path = RunDir(sweep_dir / str(row["run_dir"])).thresholds_csv
        if row["status"] != "done" or not path.is_file():
            continue
        curve = pd.read_csv(path)
        if "holdout_accuracy" not in curve.columns:
            continue
        curves.append(curve.assign(dataset=row["dataset"], seed=row["seed"]))
        done.append(k)
    tau = tau_star(pd.concat(curves, ignore_index=True)) if curves else None
    if tau is None:
        return df
    df = df.copy()
    df["tau_star"] = tau
    stages = sum(1 for c in df.columns if c.startswith("sparsity_stage_"))
    names = feature_columns(stages)
    at_tau = {k: graphs.recorded_features(specs.load(RunDir(sweep_dir / str(df.loc[k, "run_dir"])).graph), tau)
              for k in done}
    for name in names:
        values = [at_tau[k].get(name, True if name == "disconnected" else None) if k in at_tau else None
                  for k in df.index]
        df[name + TAU_STAR_SUFFIX] = values
    return runs_frame(df.to_dict("records"), stages)


def write_tables(sweep_dir: str | os.PathLike, df) -> None:
    """DIR/runs.csv and DIR/runs.parquet, with τ* columns where the runs held out data."""
    write_runs_table(with_tau_star(df, sweep_dir), sweep_dir)


def collect_runs(sweep_dir: str | os.PathLike):
    """(Re)build the runs table of a sweep from its run directories (sweep.yaml's runs, else runs/*/seed*)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DagwireError(f"sweep directory not found: {sweep_dir}")
    identity = read_sweep_file(sweep_dir)
    rows = []
    if identity is not None:
        plan = plan_from_identity(identity)
        for dataset, seed, rel in plan.runs():
            rows.append(make_row(dataset, seed, rel, result_from_disk(sweep_dir / rel)))
        return with_tau_star(runs_frame(rows, int(plan.config.get("stages", 0)) or None), sweep_dir)
    for run_dir in sorted(p for p in sweep_dir.glob("runs/*/seed*") if RunDir(p).status.is_file()):
        status_path = RunDir(run_dir).status
        status = _read_json(status_path) or {}
        seed = status.get("seed", run_dir.name[len("seed"):])
        rel = str(run_dir.relative_to(sweep_dir))
        rows.append(make_row(str(status.get("dataset", run_dir.parent.name)), int(seed), rel,
                             result_from_disk(run_dir)))
    return with_tau_star(runs_frame(rows), sweep_dir)


# --------------------------------------------------------------------------------------------
# Ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (DagwireError) when nothing listens at a Ray address; Ray itself would retry for minutes."""
    if address in ("auto", "local"):
        return
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise DagwireError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise DagwireError(f"--address {address}: no Ray cluster reachable there "
                           f"({exc.strerror or type(exc).__name__})") from None


def _token_source() -> str:
    """Where Ray takes the authentication token from, in its order: the variable, the file, ~/.ray."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return "~/.ray/auth_token"


def _auth_advice(address: str, token_mode: bool, has_token: bool = True, why: str = "") -> str:
    """One line: why a cluster refused us, and what to set."""
    give = ("RAY_AUTH_TOKEN=<the token its nodes were started with> (or RAY_AUTH_TOKEN_PATH=<a file holding it>; "
            "`ray get-auth-token` on the head node prints it)")
    if not token_mode:
        if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
            return (f"--address {address}: the Ray cluster there requires token authentication, and Ray sends no "
                    "token unless RAY_AUTH_MODE=token; set RAY_AUTH_MODE=token as well")
        return (f"--address {address}: the Ray cluster there requires token authentication; set RAY_AUTH_MODE=token "
                f"and {give}")
    if not has_token:
        return f"--address {address}: RAY_AUTH_MODE=token but no authentication token found{why}; set {give}"
    return f"--address {address}: the Ray cluster there refused the token from {_token_source()}; set {give}"


def _is_auth_error(exc: BaseException) -> bool:
    """Whether Ray failed for want of the right token (somewhere in the exception's chain)."""
    seen = 0
    while exc is not None and seen < 10:
        text = f"{type(exc).__name__} {exc}"
        if "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class _quiet_stderr:
    """Send file descriptor 2 to a scratch file for a while: Ray's C++ core logs there directly."""

    def __enter__(self) -> "_quiet_stderr":
        import sys
        import tempfile

        self.saved = self.scratch = None
        try:
            sys.stderr.flush()
            self.scratch = tempfile.TemporaryFile()
            self.saved = os.dup(2)
            os.dup2(self.scratch.fileno(), 2)
        except (OSError, ValueError):  # no usable stderr: nothing to keep quiet
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        if self.scratch is not None:
            self.scratch.close()


def check_token(address: str) -> None:
    """DagwireError naming what to set when the cluster at `address` requires a token we lack or it refuses.

    Ray itself would retry a refused connection for 20 s, logging each attempt, then report only
    that it could not connect; one request answers here. Anything but an authentication failure
    is left to `ray.init` to report.
    """
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    try:
        from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, GcsClient, get_authentication_mode
    except ImportError:  # another Ray: ray.init reports what goes wrong
        return
    token_mode = get_authentication_mode() == AuthenticationMode.TOKEN
    if token_mode:  # without a token, Ray's C++ core would abort this process at the first request
        try:
            found, why = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True), ""
        except Exception as exc:  # noqa: BLE001 - e.g. RAY_AUTH_TOKEN_PATH names no readable file
            found = False
            why = (f" (RAY_AUTH_TOKEN_PATH {os.environ['RAY_AUTH_TOKEN_PATH']} cannot be read or is empty)"
                   if os.environ.get("RAY_AUTH_TOKEN_PATH") and not os.environ.get("RAY_AUTH_TOKEN") else
                   f" ({_one_line(exc).split('. ')[0]})")
        if not found:
            raise DagwireError(_auth_advice(address, token_mode, has_token=False, why=why))
    try:
        with _quiet_stderr():
            GcsClient(address=address)
    except Exception as exc:  # noqa: BLE001 - only an authentication failure is ours to explain
        if _is_auth_error(exc):
            raise DagwireError(_auth_advice(address, token_mode)) from None


def connect_ray(address: str | None = None) -> bool:
    """Use an initialised Ray, else connect to `address`, else start a local instance; True if started here."""
    import logging

    if address:
        check_reachable(address)
    import ray

    if ray.is_initialized():
        return False
    if address:
        check_token(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            # address="local": a new instance even when another Ray runs here (plain init would join it).
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for "cannot start / connect"
        if address and _is_auth_error(exc):
            token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
            raise DagwireError(_auth_advice(address, token_mode, "no authentication token" not in str(exc))) from None
        raise DagwireError(f"cannot {'connect to Ray at ' + address if address else 'start Ray'}: "
                           f"{_one_line(exc)}") from None
    return True


def _check_resources(cpus_per_run: int, gpus_per_run: float) -> None:
    import ray

    total = ray.cluster_resources()
    # Ray would wait forever for a task no node can hold.
    if total.get("CPU", 0) < cpus_per_run:
        raise DagwireError(f"--cpus-per-run {cpus_per_run}: the Ray cluster has {total.get('CPU', 0):g} CPUs")
    if gpus_per_run and total.get("GPU", 0) < gpus_per_run:
        raise DagwireError(f"--gpus-per-run {gpus_per_run:g}: the Ray cluster has {total.get('GPU', 0):g} GPUs")


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
    if sweep_dir.is_dir() and any(sweep_dir.iterdir()):
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
    gpus_per_run: float = 0.0, batch_seeds: int = 1, progress: bool = True, check_kernels: bool = True,
) -> SweepResult:
    """Run every unfinished (dataset, seed) of `plan` into `sweep_dir` as Ray tasks; resumable."""
    import yaml
    from tqdm import tqdm

    from .files import atomic_write_text

    if cpus_per_run < 1:
        raise DagwireError(f"--cpus-per-run must be at least 1, got {cpus_per_run}")
    if batch_seeds < 1:
        raise DagwireError(f"--batch-seeds must be at least 1, got {batch_seeds}")
    if not (gpus_per_run >= 0 and math.isfinite(gpus_per_run)):
        raise DagwireError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    if plan.device.startswith("cuda") and not gpus_per_run:
        raise DagwireError(f"--device {plan.device} needs --gpus-per-run > 0 (Ray hides GPUs from tasks without one)")
    sweep_dir = Path(sweep_dir)
    new = prepare_dir(sweep_dir, plan)
    runs = plan.runs()
    rows = {(d, s): make_row(d, s, rel, {"status": "pending"} if new else result_from_disk(sweep_dir / rel))
            for d, s, rel in runs}
    todo = [(d, s, rel) for d, s, rel in runs if rows[(d, s)]["status"] != "done"]
    stages = int(plan.config["stages"])

    started = False
    if todo:
        started = connect_ray(address)  # before writing anything: an unreachable cluster leaves DIR as it was
    elif address:
        check_reachable(address)
    try:
        if todo:
            _check_resources(cpus_per_run, gpus_per_run)
        if new:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(sweep_dir / SWEEP_FILE, yaml.safe_dump(plan.identity(), sort_keys=False))
        marker = write_marker(sweep_dir) if todo else None
        for d, s, rel in todo:
            rows[(d, s)] = make_row(d, s, rel, {"status": "pending"})
        write_tables(sweep_dir, runs_frame(list(rows.values()), stages))
        if todo:
            _execute(plan, sweep_dir, todo, rows, stages, cpus_per_run, gpus_per_run, batch_seeds, progress, tqdm,
                     check_kernels, marker)
    finally:
        if started:
            import ray

            ray.shutdown()
    table = runs_frame(list(rows.values()), stages)
    done = int((table["status"] == "done").sum())
    return SweepResult(table, done, int((table["status"] == "failed").sum()), len(todo))


def seed_groups(todo: list[tuple[str, int, str]], batch_seeds: int) -> list[list[tuple[str, int, str]]]:
    """The runs to do, K of one dataset at a time (in the order given), each group one Ray task."""
    groups: list[list[tuple[str, int, str]]] = []
    open_group: dict[str, list[tuple[str, int, str]]] = {}
    for run in todo:
        group = open_group.get(run[0])
        if group is None or len(group) >= batch_seeds:
            group = open_group[run[0]] = []
            groups.append(group)
        group.append(run)
    return groups


def _execute(plan, sweep_dir, todo, rows, stages, cpus_per_run, gpus_per_run, batch_seeds, progress, tqdm,
             check_kernels, marker=None) -> None:
    """Submit the runs, then record each as it finishes (runs.csv and runs.parquet rewritten each time).

    `marker`: the token in DIR/.dagwire-marker, which each task checks before it touches DIR.
    """
    import ray

    if progress:  # the plan, once every input has been checked and before the first run starts
        for line in describe_plan(plan, len(todo), cpus_per_run, step_seconds=None if plan.device == "cpu" else 0.0):
            click.echo(line, err=True)
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1)(_run_task)
    refs = {}
    for group in seed_groups(todo, batch_seeds):
        jobs = [{"config": plan.run_config(dataset, seed).to_dict(), "run_dir": str((sweep_dir / rel).resolve()),
                 "cpus": cpus_per_run, "retrain": plan.retrain, "check_kernels": check_kernels,
                 "sweep_dir": str(sweep_dir.resolve()), "marker": marker}
                for dataset, seed, rel in group]
        refs[task.remote(jobs)] = group
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
                    results = [{"status": "failed", "dataset": d, "seed": s, "error": _one_line(exc)} for d, s, _ in group]
                    for (_, _, rel), result in zip(group, results):
                        try:
                            _write_status(sweep_dir / rel, result)
                        except OSError:
                            pass
                for (dataset, seed, rel), result in zip(group, results):
                    if result.pop("record_on_driver", False):  # a node that does not see DIR wrote nothing
                        try:
                            _write_status(sweep_dir / rel, result)
                        except OSError:
                            pass
                    rows[(dataset, seed)] = make_row(dataset, seed, rel, result)
                    counts[result["status"] if result.get("status") in counts else "failed"] += 1
                    if result.get("status") != "done" and progress:
                        bar.write(f"failed: {dataset} seed {seed}: {result.get('error', '')}")
                    bar.update()
                write_tables(sweep_dir, runs_frame(list(rows.values()), stages))
                bar.set_postfix(counts)
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# The command


@click.command("sweep")
@click.option("--datasets", help="Comma-separated datasets (cmnist, cfashionmnist, ..., npz:FILE, folder:DIR).")
@click.option("--seeds", help=f"Seeds: 0-9, 0,3,5 or 0-2,7 (default {DEFAULT_SEEDS}, or the preset's).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (rerun to resume).")
@click.option("--preset", help=f"Named settings ({', '.join(sorted(PRESETS))}); --config and flags win.")
@click.option("--address", help="An existing Ray cluster (HOST:PORT, ray://HOST:PORT, auto); default: local Ray.")
@click.option("--cpus-per-run", type=int, default=1, show_default=True, help="CPU cores (torch threads) per run.")
@click.option("--gpus-per-run", type=float, default=0.0, show_default=True, help="GPUs per run (fractions share one).")
@click.option("--retrain", is_flag=True, default=False,
              help="Also retrain each run's pruned network from scratch (same C and fitted C) into "
                   "RUN/retrain-τ[-fitC]; part of the sweep's configuration.")
@click.option("--batch-seeds", type=int, default=1, show_default=True,
              help="Train K seeds of a dataset as members of one network, one Ray task (same math; a GPU lever).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--skip-doctor", is_flag=True, help="Run even if `dagwire doctor`'s quick check fails (not advised).")
def sweep_command(datasets, seeds, out, preset, address, cpus_per_run, gpus_per_run, retrain, batch_seeds, quiet,
                  skip_doctor, config_path=None, **flags) -> None:
    """Run every (dataset, seed) as an independent training run through Ray; rerun to resume.

    Each run also gets thresholds.csv, features.json and dynamics.json; DIR/runs.csv and
    DIR/runs.parquet hold one row per run. Exit code 1 when some run failed (rerun retries it).
    """
    sweep_dir = Path(out)
    nothing_given = (datasets is None and seeds is None and preset is None and config_path is None
                     and all(v is None for k, v in flags.items() if k != "device"))
    stored = read_sweep_file(sweep_dir) if nothing_given else None
    if stored is not None:
        # `dagwire sweep --out DIR` alone continues the sweep stored there.
        plan = plan_from_identity(stored, flags.get("device"))
        plan.retrain = plan.retrain or retrain  # --retrain on a sweep made without it is refused below
        for dataset in plan.datasets:
            plan.run_config(dataset, plan.seeds[0])
    else:
        plan = make_plan(datasets, seeds, preset, config_path, check_files=address is None, retrain=retrain,
                         **flags)
    if address is None:  # a local sweep checks this machine first; on a cluster each node checks itself
        from .cli import check_kernels

        check_kernels(plan.device, skip_doctor, threads=cpus_per_run)
    result = run_sweep(plan, sweep_dir, address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                       batch_seeds=batch_seeds, progress=not quiet, check_kernels=not skip_doctor)
    total = len(result.table)
    click.echo(f"sweep {sweep_dir}: {result.done}/{total} done, {result.failed} failed "
               f"({result.ran} run now); table in {sweep_dir / 'runs.csv'} and runs.parquet")
    if result.failed:
        click.echo(f"dagwire: {result.failed} of {total} runs failed (errors in {sweep_dir / 'runs.csv'}); "
                   "rerun the same command to retry them", err=True)
        click.get_current_context().exit(1)


def _attach_train_options(command: click.Command) -> None:
    """Give `command` every `dagwire train` flag, after its own options.

    Imported here, after `sweep_command` exists, so that either import order works: cli.py imports
    this module at its end (train_options is defined by then), and importing this module first
    imports cli.py, whose `from .sweep import sweep_command` then finds the command.
    """
    from .cli import train_options

    def holder(**kwargs):  # pragma: no cover - only collects the decorators' parameters
        return kwargs

    decorated = train_options(holder)
    # click stores decorator parameters innermost first; a command lists them in reading order.
    command.params.extend(reversed(getattr(decorated, "__click_params__", [])))


_attach_train_options(sweep_command)
