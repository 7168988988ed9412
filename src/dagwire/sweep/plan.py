"""A sweep's plan and identity: presets, datasets × seeds, the shared TrainConfig, sweep.yaml, the plan shown."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from ..config import given_values
from ..errors import DagwireError
from ..portable import SHARED_DATA, recorded_config, resolved_config, resolved_path
from ..rundir import CONFIG_FILE, SWEEP_FILE, SWEEP_FORMAT, read_sweep_file


MARKER_FILE = ".dagwire-marker"  # proves to each task that it sees the driver's DIR
DEFAULT_SEEDS = "0-9"  # SPEC §9: ten seeds per dataset

# Not part of a sweep's identity: the seed is the sweep's own axis, the device may change on a rerun.
_PER_RUN_FIELDS = ("dataset", "seed", "device")



def _shared_data_dir() -> str:
    """The shared data beside the checkout (`<checkout>/../shared/data`), recorded so that it resolves anywhere."""
    return SHARED_DATA


#: Named sweeps. `config` holds TrainConfig values, `per_dataset` values for one dataset only; a
#: value given by --config YAML or by a flag wins over both.
PRESETS: dict[str, dict[str, Any]] = {
    # Sized to finish in under an hour on 2 cores (two single-thread runs at a time, 9 runs):
    # SPEC §10's 15-node, C = 8, 2,500-step design takes about 25 min a run here, so this one is
    # about 3x cheaper per run: 12 nodes, C = 6 (0.45x the FLOPs), 5,000 images x 30 epochs
    # (about 1,170 SGD steps), and lambda = 5e-3, between SPEC §10's 3e-3 (needs more steps to cut)
    # and 1e-2 (collapsed CMNIST). Chosen before any test result of this preset was seen. MNIST
    # exists here only as its official 10k test split, so CMNIST carves 8,000 train / 2,000 test
    # out of it (carve_test 0.2); data_dir points at ../shared/data, searched first where it exists
    # (Fashion-MNIST is then still found in /usr/share/datasets, the data search path's last stop).
    "mini": {
        "datasets": ["cmnist", "cfashionmnist", "cfashionmnist_t8"],
        "seeds": "0-2",
        "config": {"nodes": 12, "stages": 3, "channels": 6, "limit_train": 5000, "limit_test": 2000,
                   "epochs": 30, "lam": 5e-3, "data_dir": _shared_data_dir()},
        "per_dataset": {"cmnist": {"carve_test": 0.2}},
    },
    # The CPU reproduction (docs/repro.md): the paper's dynamics at a scale two cores finish in about
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
# The capacity study (docs/capacity.md): the repro design, run at C = 4 and C = 8 (--channels), with
# the lr = 0.1 phase doubled to 800 steps and λ ramped from 0 over those 800 steps, so that a task
# that starts slowly at C = 8 learns before the L1 term empties its network (at full λ = 5e-3, lr 0.1
# and momentum 0.9 an edge the loss does not hold up falls from 0.5 to the noise floor in about
# 150 steps; ramped over R steps, in about √(293·R): 480 for R = 800). 46 epochs = 1,840 steps:
# 800 at lr 0.1, 240 at 0.01, 800 at 0.001 (the last phase, which separates datasets, as in repro,
# at full λ). The longer phase alone failed the pilot: CFashionMNIST_T8 seed 100 stayed at chance
# through all 800 steps at lr 0.1 and collapsed. The pilot of this design on seeds 100-102 at C = 8
# decides it before any of the study's seeds 0-4 runs.
PRESETS["capacity"] = {**PRESETS["repro"], "config": {**PRESETS["repro"]["config"], "channels": 8, "epochs": 46,
                                                      "lr_milestones": ["800s", "1040s"], "lam_warmup": 800}}
# The long-schedule study (docs/long.md): the capacity design at C = 4 exactly, with one change, the
# schedule stretched to the paper's proportions, 80 % / 10 % / 10 % of 8,000 steps at lr 0.1 / 0.01 /
# 0.001 (200 epochs of 40 steps: 6,400 / 800 / 800; the paper has about 31,000 / 3,900 / 3,900).
# Everything else kept, λ = 5e-3 ramped over the first 800 steps included, so that the schedule is
# the only difference from docs/capacity/runs_c4.csv and the two tables can be pooled. Fixed on pilot
# seeds 100-102 before any of the study's seeds 0-4 ran.
PRESETS["long"] = {**PRESETS["capacity"], "config": {**PRESETS["capacity"]["config"], "channels": 4, "epochs": 200,
                                                     "lr_milestones": ["6400s", "7200s"]}}


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
    from ..data import available_datasets, split_dataset_name

    name = str(name).strip()
    kind, value = split_dataset_name(name)
    if kind is not None:
        path = Path(value).expanduser().resolve()
        if check_files and not (path.is_file() if kind == "npz" else path.is_dir()):
            raise DagwireError(f"dataset {name}: no such {'file' if kind == 'npz' else 'directory'} {path}")
        return f"{kind}:{path}"
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
    # The λ axis: several λ, each run at every one of them (None: one λ, config["lam"], as every
    # sweep made before the axis existed, whose identity and run directories stay as they were).
    lams: list[float] | None = None

    def run_config(self, dataset: str, seed: int, lam: float | None = None):
        """The TrainConfig of the run (dataset, seed), at λ `lam` on the λ axis (None: the config's λ)."""
        from ..config import build_config

        values = {**self.effective(dataset), "dataset": dataset, "seed": seed, "device": self.device}
        if lam is not None:
            values["lam"] = lam
        return build_config(None, **values)

    def effective(self, dataset: str) -> dict[str, Any]:
        """The configuration one dataset's runs share (TrainConfig fields minus dataset, seed, device),
        data_dir and a graph file resolved on this machine: two records of one place compare equal."""
        return resolved_config({**self.config, **self.per_dataset.get(dataset, {})})

    def identity(self) -> dict[str, Any]:
        """What sweep.yaml stores (the preset is recorded for information, not compared)."""
        identity = {"format": SWEEP_FORMAT, "preset": self.preset, "datasets": list(self.datasets),
                    "seeds": list(self.seeds), "retrain": bool(self.retrain), "config": dict(self.config),
                    "per_dataset": {d: dict(v) for d, v in self.per_dataset.items() if v}}
        if self.lams:  # only a sweep with the λ axis records it: one made without it reads as before
            identity["lams"] = list(self.lams)
        return identity

    def runs(self) -> list[tuple[str, int, str]]:
        """(dataset, seed, run directory relative to the sweep directory), datasets outer, then λ, seeds inner."""
        return [(d, s, rel) for d, s, rel, _ in self.lam_runs()]

    def lam_runs(self) -> list[tuple[str, int, str, float | None]]:
        """`runs` with each run's λ: runs/<dataset>/seed<s> and None (the config's λ) without the λ axis,
        runs/<dataset>/lam<λ>/seed<s> and λ on it."""
        names = run_dir_names(self.datasets)
        if not self.lams:
            return [(d, s, f"runs/{names[d]}/seed{s}", None) for d in self.datasets for s in self.seeds]
        return [(d, s, f"runs/{names[d]}/{lam_dir_name(lam)}/seed{s}", lam)
                for d in self.datasets for lam in self.lams for s in self.seeds]


def lam_dir_name(lam: float) -> str:
    """The folder of one λ on the λ axis: lam0, lam0.001, lam0.02 (`g` format, as retrain-<τ> names τ)."""
    return f"lam{lam:g}"


def parse_lams(value: Any) -> list[float]:
    """λ values from a number, a list, or text such as `0,1e-3,5e-3` (each a number >= 0, none twice)."""
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    lams: list[float] = []
    for part in parts:
        try:
            lam = float(str(part).strip())
        except ValueError:
            raise DagwireError(f"--lam {value!r}: expected numbers >= 0 separated by commas, like 0,1e-3,5e-3") from None
        if not (math.isfinite(lam) and lam >= 0):
            raise DagwireError(f"--lam {value!r}: λ must be a number >= 0, got {part}")
        if lam in lams:
            raise DagwireError(f"--lam {value!r}: λ = {lam:g} is given twice")
        lams.append(lam)
    if not lams:
        raise DagwireError(f"--lam {value!r}: no λ given")
    return lams


def seed_major(runs: list[tuple[str, int, str]], seeds: list[int]) -> list[tuple[str, int, str]]:
    """The runs in the order they are started: every dataset of a seed before the next, seeds in the plan's order.

    So that the machine and the time of day cannot stand in for the dataset: a sweep that moves
    to another machine, or a machine that slows down, has touched every dataset alike. `seeds` is
    the plan's order, not the order the runs' seeds first appear in: in a resumed sweep whose first
    dataset has finished seed 100, that would put seed 101 first.
    """
    return sorted(runs, key=lambda run: seeds.index(run[1]))  # stable: datasets keep their order


def make_plan(
    datasets: str | None = None, seeds: str | None = None, preset: str | None = None,
    config_path: str | None = None, check_files: bool = True, retrain: bool = False, **flags: Any,
) -> SweepPlan:
    """Build and validate a plan: defaults < preset < --config YAML < flags (None = not given)."""
    from dataclasses import fields

    from ..config import TrainConfig, build_config, read_yaml

    chosen: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise DagwireError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
        chosen = PRESETS[preset]
    given = {**(read_yaml(config_path) if config_path else {}), **given_values(flags)}
    lams = parse_lams(given["lam"]) if given.get("lam") is not None else None
    if lams is not None:  # one λ is a plain config value, as before the axis; several make the axis
        given["lam"] = lams[0]
        lams = lams if len(lams) > 1 else None

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

    # sweep.yaml records data_dir and a graph file portably (portable.py); they are resolved where used.
    values = recorded_config({**chosen.get("config", {}), **given})
    device = str(values.get("device") or "cpu")
    base = build_config(None, **{k: v for k, v in values.items() if k not in _PER_RUN_FIELDS}, device=device)
    config = {f.name: getattr(base, f.name) for f in fields(TrainConfig) if f.name not in _PER_RUN_FIELDS}
    per_dataset: dict[str, dict[str, Any]] = {}
    for name, extra in chosen.get("per_dataset", {}).items():
        normal = normalise_dataset(name, check_files=False)
        kept = {k: v for k, v in extra.items() if k not in given}  # what the user gave wins
        if normal in dataset_list and kept:
            per_dataset[normal] = recorded_config(kept)
    plan = SweepPlan(dataset_list, seed_list, config, per_dataset, device, preset, bool(retrain), lams)
    for dataset in dataset_list:  # every run's configuration must be valid before anything starts
        for lam in lams or [None]:
            plan.run_config(dataset, seed_list[0], lam)
    if config["graph"] not in ("complete", "local"):
        from .. import spec as specs

        specs.load(resolved_path(config["graph"]))
    return plan


def lr_phases(config, steps_per_epoch: int) -> list[tuple[float, int]]:
    """(learning rate, steps) of each phase of a run's schedule, in order."""
    total = config.epochs * steps_per_epoch
    bounds = [0, *[min(max(m, 0), total) for m in config.milestone_steps(steps_per_epoch)], total]
    return [(config.learning_rate(a, steps_per_epoch), b - a) for a, b in zip(bounds, bounds[1:]) if b > a]


def describe_plan(plan: SweepPlan, todo: int, cpus_per_run: int = 1, slots: int | None = None,
                  step_seconds: float | None = None, left: Sequence[float] = ()) -> list[str]:
    """Lines shown before a sweep starts: runs, each dataset's schedule in steps, and the expected time.

    The time is an estimate from one timed training step of the initial network on this machine
    (or `step_seconds`), plus evaluations at a third of a step per batch. `left`: the share of each
    run to do still to train, in the order they start (below 1 for one resuming from a checkpoint;
    a run not listed counts as new).
    """
    from ..config import TAU_GRID

    slots = slots or max(1, (os.cpu_count() or 1) // cpus_per_run)
    axis = f"{len(plan.lams)} λ ({', '.join(f'{lam:g}' for lam in plan.lams)}) × " if plan.lams else ""
    lines = [f"plan: {len(plan.datasets)} datasets × {axis}{len(plan.seeds)} seeds = {len(plan.runs())} runs "
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
                     f"({phases}); λ = {', '.join(f'{lam:g}' for lam in plan.lams or [config.lam])}"
                     + (f", ramped up from 0 over the first {config.lam_warmup} steps" if config.lam_warmup else ""))
        if step_seconds is None:
            step_seconds = _time_one_step(config, cpus_per_run)
        eval_batches = math.ceil((config.limit_test or 10_000) / config.batch_size)
        curve_batches = len(TAU_GRID) * (eval_batches + math.ceil((config.holdout or 0) / config.batch_size))
        seconds_per_run.append(step_seconds * (config.epochs * per_epoch + (config.epochs * eval_batches
                                                                              + curve_batches) / 3))
    if seconds_per_run and todo and step_seconds:
        mean = sum(seconds_per_run) / len(seconds_per_run)
        shares = [min(max(share, 0.0), 1.0) for share in left][:todo]
        total = mean * _makespan(shares + [1.0] * (todo - len(shares)), slots)
        lines.append(f"expected: about {mean / 60:.0f} min a run, {total / 3600:.1f} h in all "
                     f"(one step {step_seconds:.2f} s on {cpus_per_run} thread{'s' if cpus_per_run > 1 else ''} here)")
    return lines


def _makespan(works: Sequence[float], slots: int) -> float:
    """When the last of these works ends, each started in order on the first of `slots` free slots."""
    import heapq

    free = [0.0] * slots
    for work in works:
        heapq.heappush(free, heapq.heappop(free) + work)
    return max(free)


def _time_one_step(config, threads: int) -> float:
    """Seconds of one training step of the run's initial network on this machine's CPU, `threads` threads."""
    import torch

    from ..bench import time_train_steps
    from ..model import create_model
    from ..train import initial_spec

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
                     device or "cpu", identity.get("preset"), bool(identity.get("retrain", False)),
                     [float(v) for v in identity["lams"]] if identity.get("lams") else None)


def write_sweep_file(sweep_dir: str | os.PathLike, identity: dict[str, Any]) -> None:
    """DIR/sweep.yaml holding `identity`, written atomically."""
    import yaml

    from ..files import atomic_write_text

    atomic_write_text(Path(sweep_dir) / SWEEP_FILE, yaml.safe_dump(identity, sort_keys=False))


def _is_run_config(path: Path) -> bool:
    """Whether a config.yaml is a run's record: a mapping of TrainConfig fields naming its dataset."""
    import yaml

    from ..config import FIELD_NAMES

    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(values, dict) and "dataset" in values and set(values) <= FIELD_NAMES


def upgrade_run_configs(root: str | os.PathLike) -> list[Path]:
    """Rewrite every run config.yaml under `root` with its places in the portable form; the files rewritten."""
    from ..portable import upgrade_config_file

    return [path for path in sorted(Path(root).rglob(CONFIG_FILE))
            if _is_run_config(path) and upgrade_config_file(path)]


def upgrade_sweep_file(sweep_dir: Path) -> bool:
    """Rewrite DIR/sweep.yaml with each place (data_dir, a graph file) in its portable form where it holds
    an absolute path of the checkout's (an older sweep's record); True when it did. Every other value stays."""
    from ..portable import portable_identity

    stored = read_sweep_file(sweep_dir)
    upgraded = portable_identity(stored)
    if upgraded == stored:
        return False
    write_sweep_file(sweep_dir, upgraded)
    return True


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
    # A sweep.yaml from before the λ axis existed, or of one λ, has no key: its λ is config's lam.
    if old.get("lams") != new.get("lams"):
        return f"lams ({_short(old.get('lams'))} there, {_short(new.get('lams'))} now)"
    from dataclasses import fields

    from ..config import TrainConfig

    old_plan, new_plan = plan_from_identity(old), plan_from_identity(new)
    keys = list(dict.fromkeys([*new["config"], *old["config"]]))
    # A sweep.yaml written before a TrainConfig field existed lacks it: its runs had its default.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for dataset in new["datasets"]:
        a, b = {**defaults, **old_plan.effective(dataset)}, {**defaults, **new_plan.effective(dataset)}
        for key in keys:
            if a.get(key) != b.get(key):
                where = "" if old["config"].get(key) != new["config"].get(key) else f" for {dataset}"
                return f"{key}{where} ({_short(a.get(key))} there, {_short(b.get(key))} now)"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


