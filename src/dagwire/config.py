"""One typed training configuration, loaded from YAML and overridden by flags (SPEC §2 defaults)."""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import DagwireError
from .files import atomic_write_text
from .portable import recorded_config, resolved_config


# The paper's threshold τ (Sec. 3): edges with |tanh w| below it are erased. Every default τ is this one.
DEFAULT_TAU = 0.006
STAR = "star"  # τ = the run's τ*: its sweep's, or for a run outside a sweep its own hold-out one
# The paper's τ* rule allows this many percentage points of hold-out accuracy below the unpruned
# network's (stats.tau_star); a run or a sweep may set its own (`tau_tolerance`).
TAU_TOLERANCE_POINTS = 0.5


def parse_tau(text: str | None) -> float | str | None:
    """A τ given as text: None, "star", or a number (DagwireError otherwise)."""
    if text is None:
        return None
    if text.strip().lower() == STAR:
        return STAR
    try:
        return float(text)
    except ValueError:
        raise DagwireError(f"τ must be a number >= 0 or '{STAR}', got {text!r}") from None


# The fixed τ grid of threshold curves, and of τ* (stats.tau_star): dense where small networks
# trained briefly keep their edges (0.01-0.3).
TAU_GRID = (0.0, 0.001, 0.002, 0.004, 0.006, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15,
            0.175, 0.2, 0.25, 0.3)


def _option(default: Any, help: str, **flag: Any) -> Any:
    """A TrainConfig field with its command-line help (and flag details): options.py builds the flags from these."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the paper's regime (App. A).

    Each field is also a `dagwire train` flag (`options.train_options` builds them from here), so a
    default or a help text is written once.
    """

    dataset: str = _option("cfashionmnist", "cmnist, ckmnist, cfashionmnist, cifar10, <name>_t8, folder:DIR, npz:FILE.")
    data_dir: str | None = _option(None, "Where the dataset files are (also searched: $DAGWIRE_DATA, cache, "
                                          "/usr/share/datasets).")
    limit_train: int | None = _option(None, "Stratified, seeded subset of N training images.")
    limit_test: int | None = _option(None, "Stratified, seeded subset of N test images.")
    carve_test: float | None = _option(None, "Carve train and test (this fraction) from the official test split only.")
    data_seed: int = _option(0, "Seed of the data subsets (the same for every run seed).")
    nodes: int = _option(60, "Number of DAG nodes.")
    stages: int = _option(3, "Number of equal stages.")
    channels: int = _option(11, "Channels C of stage 0.")
    graph: str = _option("complete", "Initial DAG: complete, local, or a graph.json path.")
    local_window: int = _option(10, "Window k of the local graph (j - i <= k).")
    epochs: int = _option(100, "Epochs.")
    batch_size: int = _option(128, "Batch size.")
    lr: float = _option(0.1, "Initial learning rate.")
    momentum: float = _option(0.9, "SGD momentum.")
    weight_decay: float = _option(1e-4, "Weight decay (on every parameter, the edge weights too).")
    lam: float = _option(1e-3, "λ of the L1 resources term.")
    lam_warmup: int = _option(0, "Steps over which λ ramps linearly from 0 to --lam (0: the full λ from the first step).")
    lr_milestones: list[int | float | str] | None = _option(
        None, "Where lr drops ×lr-gamma: epochs (80,90), fractions of all steps (0.8,0.9) or step counts "
              "(500s,740s); default 80%,90% of the epochs.", text=True)
    lr_gamma: float = _option(0.1, "Factor of the learning rate at each milestone.")
    augment: bool = _option(True, "Random crop + flip.")
    holdout: int | None = _option(None, "Hold out N training images (stratified, by --data-seed), never trained on: "
                                        "τ* is chosen on them.")
    seed: int = _option(0, "Seed of initialisation and data order.")
    device: str = _option("cpu", "cpu, cuda, cuda:N or mps.")
    eval_batch_size: int = _option(1000, "Batch size of evaluations.")
    threshold: float = _option(DEFAULT_TAU, "τ for the thresholded accuracy at the end.")
    tau_tolerance: float = _option(TAU_TOLERANCE_POINTS, "Points of hold-out accuracy τ* may cost against the "
                                   "unpruned network (`dagwire thresholds`, 'star'); no effect on training.")
    compile: bool = _option(False, "torch.compile the network: minutes of compiling, pays off on long GPU runs.")
    precision: str = _option("fp32", "bf16: autocast matmuls and convolutions to bfloat16 (fast on GPUs).",
                             choices=("fp32", "bf16"))

    def milestone_steps(self, steps_per_epoch: int) -> list[int]:
        """The SGD steps (counted from 0) from which on the learning rate is multiplied by lr_gamma once more."""
        if self.lr_milestones is None:
            return [round(0.8 * self.epochs) * steps_per_epoch, round(0.9 * self.epochs) * steps_per_epoch]
        total = self.epochs * steps_per_epoch
        steps = []
        for m in self.lr_milestones:
            if isinstance(m, str):
                steps.append(int(m[:-1]))
            elif isinstance(m, float):
                steps.append(round(m * total))
            else:
                steps.append(m * steps_per_epoch)
        return sorted(steps)

    def learning_rate(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of SGD step `step` (from 0): lr, times lr_gamma at every milestone passed."""
        lr = self.lr
        for milestone in self.milestone_steps(steps_per_epoch):
            if step >= milestone:
                lr *= self.lr_gamma  # repeated products, as torch's MultiStepLR computes them
        return lr

    def lam_at(self, step: int) -> float:
        """λ at SGD step `step` (from 0): rising linearly from 0 over the first lam_warmup steps, then lam."""
        if step >= self.lam_warmup:
            return self.lam
        return self.lam * step / self.lam_warmup

    def validate(self) -> "TrainConfig":
        """Raise DagwireError on values no run can use; return self."""
        checks = [
            (self.nodes >= 2, f"--nodes must be at least 2, got {self.nodes}"),
            (self.stages >= 1, f"--stages must be at least 1, got {self.stages}"),
            (self.stages >= 1 and self.nodes % self.stages == 0,
             f"--stages {self.stages} does not divide --nodes {self.nodes} into equal stages"),
            (self.channels >= 1, f"--channels must be at least 1, got {self.channels}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}"),
            (math.isfinite(self.lam) and self.lam >= 0, f"--lam must be a number >= 0, got {self.lam}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.limit_train is None or self.limit_train >= 1, f"--limit-train must be >= 1, got {self.limit_train}"),
            (self.limit_test is None or self.limit_test >= 1, f"--limit-test must be >= 1, got {self.limit_test}"),
            (self.carve_test is None or 0 < self.carve_test < 1, f"--carve-test must be in (0, 1), got {self.carve_test}"),
            (self.threshold >= 0, f"--threshold must be >= 0, got {self.threshold}"),
            (math.isfinite(self.tau_tolerance) and self.tau_tolerance >= 0,
             f"--tau-tolerance must be a number of points >= 0, got {self.tau_tolerance}"),
            (self.local_window >= 1, f"--local-window must be >= 1, got {self.local_window}"),
            (self.holdout is None or self.holdout >= 1, f"--holdout must be >= 1, got {self.holdout}"),
            (self.lam_warmup >= 0, f"--lam-warmup must be >= 0, got {self.lam_warmup}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DagwireError(message)
        if self.precision not in ("fp32", "bf16"):
            raise DagwireError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"):
            raise DagwireError(f"--device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as YAML, atomically, its places relative to the checkout where they can be (portable.py)."""
        atomic_write_text(path, yaml.safe_dump(recorded_config(self.to_dict()), sort_keys=False))


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict of known TrainConfig fields, its places resolved on this machine."""
    path = Path(path)
    try:
        obj = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DagwireError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DagwireError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise DagwireError(f"config {path} is not valid YAML: {first}") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise DagwireError(f"config {path} must be a mapping of option: value, got {type(obj).__name__}")
    unknown = sorted(set(obj) - FIELD_NAMES)
    if unknown:
        raise DagwireError(f"config {path}: unknown option(s) {', '.join(unknown)}")
    return resolved_config(obj)


def build_config(yaml_path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the YAML file, then the flags that were given (None means not given)."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(read_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    types = typing.get_type_hints(TrainConfig)
    for key, value in list(values.items()):
        values[key] = _coerce(key, value, types[key])
    return TrainConfig(**values).validate()


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check a YAML or flag value against the field's annotation (YAML reads 1e-3 as a string)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    if value is None:
        if optional:
            return None
        raise DagwireError(f"option {key} cannot be empty")
    kind = typing.get_origin(base) or base
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is list:  # lr_milestones, the one list field
            return parse_milestones(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        raise DagwireError(f"option {key}: {value!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    return value


def parse_milestones(value: Any) -> list[int | float | str]:
    """Milestones from "80,90", "0.8,0.9", "500s,740s" or a YAML list of those: epochs, fractions, steps."""
    items = str(value).split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise DagwireError(f"--lr-milestones must be a list of epochs, fractions or step counts, got {value!r}")
    parsed: list[int | float | str] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            if text.endswith("s") and text[:-1].isdigit():
                parsed.append(f"{int(text[:-1])}s")
            elif isinstance(item, bool):
                raise ValueError
            elif "." in text or "e" in text.lower():
                fraction = float(text)
                if not 0 < fraction < 1:
                    raise ValueError
                parsed.append(fraction)
            else:
                epoch = int(text)
                if epoch < 0:
                    raise ValueError
                parsed.append(epoch)
        except ValueError:
            raise DagwireError(f"--lr-milestones: {text!r} is not an epoch (80), a fraction of the steps (0.8) "
                               f"or a step count (500s)") from None
    return parsed


def given_values(flags: dict[str, Any]) -> dict[str, Any]:
    """The train flags that were given (None: not given), as TrainConfig field values."""
    given = {k: v for k, v in flags.items() if v is not None}
    if "compile_" in given:
        given["compile"] = given.pop("compile_")
    if "lr_milestones" in given:
        given["lr_milestones"] = parse_milestones(given["lr_milestones"])
    return given
