"""Feature trajectories: a run's graph after every epoch, thresholded at τ with dead paths removed.

Every run records |tanh w| of every edge after every epoch (edge_history.npy), so the graph it
would have left had it stopped at epoch e can be measured without training again. Here, numbers
only (draw.py draws them):

- `run_trajectory`: per epoch, edges kept and the SPEC §5 features of the graph at τ, except the
  two of the Kamada-Kawai layout (pca_elongation, q1d), whose iterative optimisation costs about
  nine times the rest together and would make a sweep's trajectory minutes instead of seconds;
- `sweep_trajectories` / `trajectory_summary`: every run of a sweep, and per dataset mean ± std
  against the training step;
- `ordering_over_time`: the paper's ordering test (`stats.ordering_test`: Kendall τ-b with the
  difficulty rank, permutation p, Holm across features) at every k-th epoch, difficulty always
  ranked by the runs' *final* test accuracy, so that only the graphs change with the step;
- `length_test`: does the difficulty effect grow between two steps of the same runs?
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import graphs
from . import spec as specs
from .config import DEFAULT_TAU, TrainConfig, build_config, read_yaml
from .errors import DagwireError
from .rundir import RunDir
from .stats import ALPHA, ORDERING_FEATURES, holm, ordering_test, tau_b_many

# The columns of a trajectory table that are not features.
KEY_COLUMNS = ("dataset", "seed", "epoch", "step", "lr")


@dataclass(frozen=True)
class Schedule:
    """A run's schedule in SGD steps: steps per epoch, epochs, the steps where lr drops."""

    steps_per_epoch: int
    epochs: int
    milestones: tuple[int, ...]

    @property
    def steps(self) -> int:
        """Total SGD steps."""
        return self.steps_per_epoch * self.epochs

    def epoch_ending_at(self, step: int) -> int:
        """The epoch (from 1) after which exactly `step` steps are done (DagwireError when none)."""
        if step <= 0 or step > self.steps or step % self.steps_per_epoch:
            raise DagwireError(f"step {step}: no epoch ends there (epochs end every {self.steps_per_epoch} steps, "
                               f"up to {self.steps})")
        return step // self.steps_per_epoch


def run_schedule(config: TrainConfig) -> Schedule:
    """The schedule of a run trained on a subset (`limit_train`): its steps per epoch are in its config."""
    if not config.limit_train:
        raise DagwireError("a run over the whole training split does not record its steps per epoch")
    per_epoch = math.ceil(config.limit_train / config.batch_size)
    return Schedule(per_epoch, config.epochs, tuple(config.milestone_steps(per_epoch)))


def run_trajectory(run_dir: str | os.PathLike, tau: float = DEFAULT_TAU, every: int = 1,
                   epochs: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per k-th epoch (and the last), or per epoch of `epochs`: epoch, step, lr, edges kept, features at τ."""
    files = RunDir(run_dir)
    for path in (files.config, files.initial_graph, files.edge_history):
        if not path.is_file():
            raise DagwireError(f"{run_dir}: no {path.name} (a trajectory needs a run that has trained an epoch)")
    config = build_config(None, **read_yaml(files.config))
    schedule = run_schedule(config)
    # A run still training has no graph.json yet; its edges are the initial graph's, in the same order.
    initial = specs.load(files.initial_graph)
    learned = specs.load(files.graph) if files.graph.is_file() else initial
    history = np.atleast_2d(np.load(files.edge_history, allow_pickle=False))
    if history.shape[1] != learned.num_edges:
        raise DagwireError(f"{files.edge_history}: {history.shape[1]} edges, graph.json has {learned.num_edges}")
    channels = int(learned.meta.get("channels", config.channels))
    sizes = {"in_channels": int(learned.meta.get("in_channels", 3)),
             "num_classes": int(learned.meta.get("num_classes", 10))}
    if epochs is None:
        epochs = epochs_to_measure(len(history), every)
    elif not set(epochs) <= set(range(1, len(history) + 1)):
        raise DagwireError(f"{files.edge_history}: {len(history)} epochs recorded, "
                           f"asked for epochs {sorted(set(epochs))}")
    rows = []
    for epoch in sorted(set(epochs)):
        graph = learned.with_weights(history[epoch - 1])
        step = epoch * schedule.steps_per_epoch
        row = {"epoch": epoch, "step": step, "lr": config.learning_rate(step - 1, schedule.steps_per_epoch),
               "edges": graphs.prune(graph, tau).num_edges}
        row.update(graphs.features(graph, tau, channels, initial, layout=False, **sizes))
        row["disconnected"] = bool(row.get("disconnected", False))
        if row["disconnected"]:
            row["edges"] = 0
        rows.append(row)
    return rows


def epochs_to_measure(epochs: int, every: int) -> list[int]:
    """Epochs (from 1) every `every`-th, always with the last."""
    if every < 1:
        raise DagwireError(f"--every must be at least 1, got {every}")
    return sorted({*range(every, epochs + 1, every), epochs})


def sweep_trajectories(runs, tau: float = DEFAULT_TAU, every: int = 1, progress: bool = True,
                       epochs: Sequence[int] | None = None):
    """The trajectories of a runs table's done runs (run_dir absolute, as `compare.load_runs` gives),
    one long table: dataset, seed, epoch, step, lr, edges, features, then test_accuracy (final) and collapsed."""
    import pandas as pd
    from tqdm.auto import tqdm

    done = runs[runs["status"].astype(str).eq("done")]
    if not len(done):
        raise DagwireError("no finished runs: a trajectory needs at least one")
    frames = []
    for _, row in tqdm(list(done.iterrows()), desc="trajectory", unit="run", disable=not progress, leave=False):
        frame = pd.DataFrame(run_trajectory(row["run_dir"], tau, every, epochs))
        frame.insert(0, "seed", int(row["seed"]))
        frame.insert(0, "dataset", str(row["dataset"]))
        frame["test_accuracy"] = float(row["test_accuracy"])
        collapsed = row["collapsed"] if "collapsed" in row else None
        frame["collapsed"] = False if pd.isna(collapsed) else bool(collapsed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def trajectory_summary(trajectories, features: Sequence[str] = ("edges", "nodes", "sparsity", "mean_degree")):
    """Per dataset (easiest first, by final test accuracy) and step: runs, and mean ± std of each feature."""
    import pandas as pd

    usable = trajectories[~trajectories["collapsed"].astype(bool)]
    order = usable.groupby("dataset")["test_accuracy"].mean().sort_values(ascending=False).index
    rows = []
    for dataset in order:
        part = usable[usable["dataset"] == dataset]
        for step, at in part.groupby("step", sort=True):
            row = {"dataset": str(dataset), "step": int(step), "epoch": int(at["epoch"].iloc[0]), "runs": len(at)}
            for feature in features:
                values = pd.to_numeric(at.get(feature), errors="coerce").dropna()
                row[feature] = float(values.mean()) if len(values) else float("nan")
                row[feature + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def at_step(trajectories, step: int):
    """The trajectory rows of one step, shaped as a runs table (status done) for `stats.ordering_test`."""
    part = trajectories[trajectories["step"] == step]
    if not len(part):
        raise DagwireError(f"step {step}: not in the trajectories (measured steps: "
                           f"{', '.join(map(str, sorted(trajectories['step'].unique())[:8]))}, ...)")
    return part.assign(status="done")


def ordering_over_time(trajectories, permutations: int = 1999, seed: int = 0,
                       progress: bool = True) -> list[dict[str, Any]]:
    """The ordering test at every measured step: one row per (step, feature) with τ-b, p and Holm p."""
    from tqdm.auto import tqdm

    rows = []
    for step in tqdm(sorted(trajectories["step"].unique()), desc="ordering", unit="step", disable=not progress,
                     leave=False):
        result = ordering_test(at_step(trajectories, int(step)), "", permutations, 0, seed, pairs=False)
        if result is None:
            raise DagwireError("the ordering test needs finished runs of at least two datasets")
        for test in result.tests:
            rows.append({"step": int(step), "feature": test.feature, "direction": test.direction,
                         "tau_b": test.tau_b, "p": test.p, "p_holm": test.p_holm, "verdict": test.verdict})
    return rows


# --- does the difficulty effect grow with training length? -----------------------------------------

@dataclass
class LengthTest:
    """One feature: τ-b with difficulty at an early and a late step of the same runs, Δ and its test."""

    feature: str
    direction: str
    early_step: int
    late_step: int
    runs: int
    tau_b_early: float
    tau_b_late: float
    delta: float  # τ-b late minus τ-b early
    low: float  # bootstrap 95 % interval of Δ
    high: float
    p: float  # one-sided: the effect grows, in the paper's direction
    p_holm: float
    verdict: str  # "grows" (significant after Holm) or "does not grow"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def _tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """τ-b along the last axis (`stats.tau_b_many`), 0 where one variable is constant: a resample whose feature
    does not vary has no ordering."""
    return np.nan_to_num(tau_b_many(x, y), nan=0.0)


def length_test(trajectories, early_step: int, late_step: int, permutations: int = 9999, resamples: int = 9999,
                seed: int = 0, alpha: float = ALPHA) -> list[LengthTest]:
    """Per feature, whether the difficulty effect grows from `early_step` to `late_step` in the same runs.

    Δ = τ-b(late) − τ-b(early), each τ-b between the difficulty rank (datasets ranked by mean final
    test accuracy, easiest first, the same at both steps) and the feature over the runs that are
    usable (done, not collapsed) and connected at both steps. The two τ-b share their runs, so
    neither the interval nor the p-value treats them as independent samples:

    - the interval resamples *runs* within each dataset, each run taking its early and its late
      graph along (percentile bootstrap of Δ);
    - the p-value swaps, run by run with probability 1/2, which of the run's two graphs counts as
      early and which as late, after each feature is replaced by its rank among the runs at its
      own step. τ-b depends on those ranks alone, so a shift of every run alike between the two
      steps (every graph gets sparser) changes neither Δ nor the swaps; under the null hypothesis
      that where a run stands among the runs does not depend on the step, each run's two ranks are
      exchangeable, every swap pattern is as likely as the observed one, and the test is exact up
      to the Monte Carlo error. p = (1 + #{swapped Δ at least as far in the paper's direction}) /
      (1 + permutations). Holm's correction across the features.
    """
    import pandas as pd
    from scipy.stats import rankdata

    if late_step == early_step:
        raise DagwireError(f"the length test compares two different steps, got {early_step} twice")
    early, late = at_step(trajectories, early_step), at_step(trajectories, late_step)
    key = ["dataset", "seed"]
    both = early.merge(late, on=key, suffixes=("_early", "_late"))
    both = both[~both["collapsed_early"].astype(bool)]
    order = both.groupby("dataset")["test_accuracy_early"].mean().sort_values(ascending=False).index.tolist()
    if len(order) < 2:
        raise DagwireError("the length test needs finished runs of at least two datasets")
    rng = np.random.default_rng(seed)
    tests: list[LengthTest] = []
    for feature, direction in ORDERING_FEATURES:
        if f"{feature}_early" not in both.columns:
            continue
        part = both[["dataset", f"{feature}_early", f"{feature}_late"]].apply(
            lambda c: c if c.name == "dataset" else pd.to_numeric(c, errors="coerce")).dropna()
        if part["dataset"].nunique() < 2:
            continue
        ranks = part["dataset"].map({d: k for k, d in enumerate(order)}).to_numpy(float)
        a, b = part[f"{feature}_early"].to_numpy(float), part[f"{feature}_late"].to_numpy(float)
        tau_early, tau_late = float(_tau_b(ranks, a)), float(_tau_b(ranks, b))
        delta = tau_late - tau_early
        sign = 1.0 if direction == "up" else -1.0

        # Bootstrap: runs resampled within each dataset, each with both of its graphs.
        groups = [np.flatnonzero(part["dataset"].to_numpy(str) == d) for d in order
                  if (part["dataset"] == d).any()]
        picks = np.concatenate([g[rng.integers(0, len(g), (resamples, len(g)))] for g in groups], axis=1)
        deltas = _tau_b(ranks[picks], b[picks]) - _tau_b(ranks[picks], a[picks])
        low, high = (float(q) for q in np.percentile(deltas, [2.5, 97.5]))

        # Within-run swaps of the two steps' within-step ranks.
        position_a, position_b = rankdata(a) / len(a), rankdata(b) / len(b)
        swap = rng.random((permutations, len(a))) < 0.5
        swapped = (_tau_b(ranks, np.where(swap, position_a, position_b))
                   - _tau_b(ranks, np.where(swap, position_b, position_a)))
        p = float((1 + np.count_nonzero(sign * swapped >= sign * delta - 1e-12)) / (1 + permutations))
        tests.append(LengthTest(feature, direction, int(early_step), int(late_step), len(part), tau_early, tau_late,
                                delta, low, high, p, p, ""))
    for test, adjusted in zip(tests, holm([t.p for t in tests])):
        test.p_holm = adjusted
        test.verdict = "grows" if adjusted < alpha else "does not grow"
    return tests


def load_trajectories(target: str | os.PathLike, tau: float = DEFAULT_TAU, every: int = 1, progress: bool = True,
                      epochs: Sequence[int] | None = None):
    """The trajectory table of a sweep directory (every done run) or of one run directory, at every k-th
    epoch or at `epochs` (measuring a few epochs of long runs is far cheaper than all)."""
    import pandas as pd

    from .compare import load_runs
    from .tables import RUNS_CSV, RUNS_PARQUET

    path = Path(target)
    if not path.is_dir():
        raise DagwireError(f"{target}: not a run or sweep directory")
    if (path / RUNS_CSV).is_file() or (path / RUNS_PARQUET).is_file():
        return sweep_trajectories(load_runs(path), tau, every, progress, epochs)
    files = RunDir(path)
    if not files.edge_history.is_file():
        raise DagwireError(f"{target}: neither a sweep (no {RUNS_CSV}) nor a run (no {files.edge_history.name})")
    meta = specs.load(files.graph).meta if files.graph.is_file() else {}
    config = read_yaml(files.config) if files.config.is_file() else {}
    frame = pd.DataFrame(run_trajectory(path, tau, every, epochs))
    frame.insert(0, "seed", int(meta.get("seed", config.get("seed", 0))))
    frame.insert(0, "dataset", str(meta.get("dataset", config.get("dataset", path.name))))
    frame["test_accuracy"] = float(meta.get("test_accuracy", float("nan")))
    frame["collapsed"] = bool(meta.get("collapsed") or False)
    return frame


def schedule_of(target: str | os.PathLike) -> Schedule:
    """The schedule of a run directory, or of a sweep's first done run."""
    from .compare import load_runs
    from .tables import RUNS_CSV, RUNS_PARQUET

    path = Path(target)
    if (path / RUNS_CSV).is_file() or (path / RUNS_PARQUET).is_file():
        runs = load_runs(path)
        done = runs[runs["status"].astype(str).eq("done")]
        if not len(done):
            raise DagwireError(f"{target}: no finished runs")
        path = Path(done["run_dir"].iloc[0])
    return run_schedule(build_config(None, **read_yaml(RunDir(path).config)))
