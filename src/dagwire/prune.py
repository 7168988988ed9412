"""From a trained run to pruned networks: threshold curves (Fig. 2) and retraining set-ups (App. B–C).

The graph math (threshold, dead paths) lives in `dagwire.graphs`; this module applies it to a
trained torch model: evaluation without fine-tuning on the materialised pruned network, and the
configuration of a retraining run from scratch.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import counts, graphs
from . import spec as specs
from .config import TAU_GRID, TrainConfig
from .data import Dataset, load_dataset_for
from .errors import DagwireError
from .files import atomic_write_text
from .model import DagNet, load_model, materialise
from .portable import recorded_path
from .rundir import RunDir
from .train import TrainResult, evaluate, load_run_config, resolve_device, train


@dataclass
class TrainedRun:
    """A finished run: its config, learned graph (all initial edges, |tanh w|) and model."""

    path: Path
    config: TrainConfig
    learned: specs.GraphSpec
    model: DagNet


def load_run(run: str | os.PathLike, device: str | None = None) -> TrainedRun:
    """Load a finished run directory (config.yaml, graph.json, weights.pt)."""
    files = RunDir(run)
    config = load_run_config(run, device=device)
    if not files.trained():
        raise DagwireError(f"{run} has not finished training (no {files.graph.name}/{files.weights.name}); "
                           f"resume it first")
    learned = specs.load(files.graph)
    architecture = specs.load(files.initial_graph).with_weights(None)
    model = load_model(
        architecture, files.weights, config.channels,
        int(learned.meta.get("in_channels", 3)), int(learned.meta.get("num_classes", 10)),
    ).to(resolve_device(config.device))
    return TrainedRun(files.path, config, learned, model)


def threshold_curve(
    trained: TrainedRun, grid: Sequence[float] = TAU_GRID, dataset: Dataset | None = None,
    progress: bool = True,
) -> list[dict]:
    """Test accuracy (no fine-tuning), sparsity and nodes of the pruned network for each τ.

    With a hold-out set (config.holdout) each row also has `holdout_accuracy`, on training images
    the network never saw: what τ* is chosen on, so the test set stays out of every choice.
    """
    config = trained.config
    data = dataset or load_dataset_for(config)
    device = trained.model.edge_weights.device
    test_x = torch.from_numpy(data.test_x).to(device)
    test_y = torch.from_numpy(data.test_y).to(device)
    splits = {"test_accuracy": (test_x, test_y)}
    if data.holdout_x is not None:
        splits["holdout_accuracy"] = (torch.from_numpy(data.holdout_x).to(device),
                                      torch.from_numpy(data.holdout_y).to(device))
    initial_edges = trained.learned.num_edges
    rows = []
    for tau in tqdm(sorted(grid), desc="thresholds", disable=not progress, leave=False):
        pruned = graphs.prune(trained.learned, tau)
        connected = graphs.is_connected(pruned)
        small = materialise(trained.model, pruned.with_weights(None)) if connected else None
        accuracies = {  # no path to the output: chance level
            column: evaluate(small, x, y, data.mean, data.std, config.eval_batch_size) if connected
            else 1.0 / data.num_classes
            for column, (x, y) in splits.items()
        }
        kept = pruned.num_edges if connected else graphs.threshold(trained.learned, tau).num_edges
        rows.append({
            "threshold": float(tau),
            **accuracies,
            "sparsity": 1.0 - kept / initial_edges,
            "nodes": len(pruned.active_nodes()) if connected else 0,
            "edges": kept,
            "disconnected": not connected,
        })
    return rows


def write_rows_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write a list of flat dicts as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def retrain_config(
    trained: TrainedRun, tau: float, out: Path, *, seed: int | None = None,
    fit_channels: int | None = None, **overrides,
) -> TrainConfig:
    """Write the pruned graph into `out` and return the config that trains it from scratch."""
    pruned = connected_pruning(trained, tau)
    channels = trained.config.channels
    if fit_channels is not None:
        channels = counts.fit_channels(pruned, fit_channels, *io_sizes(trained))
    return architecture_config(trained, pruned, channels, out, seed=seed,
                               meta={"source_run": recorded_path(trained.path), "threshold": tau}, **overrides)


def connected_pruning(trained: TrainedRun, tau: float) -> specs.GraphSpec:
    """The learned graph pruned at τ; DagwireError when that cuts the output off (nothing to retrain)."""
    pruned = graphs.prune(trained.learned, tau)
    if not graphs.is_connected(pruned):
        raise DagwireError(f"at τ={tau:g} the learned graph of {trained.path} is disconnected: nothing to retrain")
    return pruned


def io_sizes(trained: TrainedRun) -> tuple[int, int]:
    """(input channels, classes) of the run's network, as its graph.json recorded them."""
    return int(trained.learned.meta.get("in_channels", 3)), int(trained.learned.meta.get("num_classes", 10))


def architecture_config(trained: TrainedRun, graph: specs.GraphSpec | None, channels: int, out: Path, *,
                        seed: int | None = None, meta: dict[str, Any] | None = None, **overrides) -> TrainConfig:
    """The config that trains `graph` (None: the run's own initial DAG) at C = `channels` from scratch, in the run's regime.

    A graph is written into `out` as pruned_graph.json first, with `meta`'s keys added.
    """
    changes: dict = {}
    if graph is not None:
        out.mkdir(parents=True, exist_ok=True)
        graph_path = (out / "pruned_graph.json").resolve()
        specs.save(graph, graph_path, **(meta or {}))
        changes["graph"] = str(graph_path)
    return replace(
        trained.config, channels=channels, seed=trained.config.seed + 1000 if seed is None else seed, **changes,
        **{k: v for k, v in overrides.items() if v is not None},
    ).validate()


def full_parameter_count(trained: TrainedRun) -> int:
    """Parameters of the run's complete initial network (the default --fit-channels target)."""
    initial = specs.load(RunDir(trained.path).initial_graph)
    return counts.parameter_count(
        initial, trained.config.channels, int(trained.learned.meta.get("in_channels", 3)),
        int(trained.learned.meta.get("num_classes", 10)),
    )


def retrain_dir(run: str | os.PathLike, tau: float, fit: bool) -> Path:
    """The default directory of a retraining: RUN/retrain-<τ:g> (same C) or RUN/retrain-<τ:g>-fitC."""
    return RunDir(run).retrain(tau, fit).path


def retrain_run(
    trained: TrainedRun, tau: float, fit: bool = False, target: int | None = None, *,
    seed: int | None = None, out: str | os.PathLike | None = None, resume: bool | None = None,
    progress: bool = False, dataset: Dataset | None = None, **overrides,
) -> tuple[TrainConfig, TrainResult]:
    """Retrain the pruned architecture of `trained` at τ from scratch (App. B–C); (its config, its result).

    fit: C fitted to `target` parameters (default: the complete network's, `full_parameter_count`);
    a `target` implies fit. out: default `retrain_dir(trained.path, tau, fit)`. resume: True
    continues the retraining in `out` (DagwireError when there is none); False starts one
    (DagwireError when `out` already holds one); None continues it when there is one, reuses it
    without training when it is finished, and starts it otherwise. overrides (epochs, device, ...)
    apply to a new retraining; a continued one keeps its config.yaml, but for the device.
    """
    fit = fit or target is not None
    out_dir = Path(out) if out is not None else retrain_dir(trained.path, tau, fit)

    def make_config() -> TrainConfig:
        goal = full_parameter_count(trained) if fit and target is None else target
        return retrain_config(trained, tau, out_dir, seed=seed, fit_channels=goal if fit else None, **overrides)

    reuse = (lambda config: _reuse_equal_retraining(trained, tau, config, out_dir)) if fit else None
    return _train_in(out_dir, make_config, resume, progress, dataset, overrides.get("device"), reuse)


def _train_in(out_dir: Path, make_config: Callable[[], TrainConfig], resume: bool | None, progress: bool,
              dataset: Dataset | None, device: str | None,
              reuse: Callable[[TrainConfig], TrainResult | None] | None = None) -> tuple[TrainConfig, TrainResult]:
    """Train a retraining into `out_dir`, continued, reused or new as `retrain_run` documents `resume`.

    `make_config` sets up a new one; `reuse` may return the result of an equal finished retraining instead.
    """
    files = RunDir(out_dir)
    present = files.checkpoint.exists() or files.graph.exists()
    if resume is None:
        if files.trained():
            return load_run_config(out_dir, device=device), _finished_result(out_dir)
        resume = present or files.config.exists()
    if resume:
        config = load_run_config(out_dir, device=device)
    else:
        if present:
            raise DagwireError(f"{out_dir} already holds a retraining; add --resume or give another --out")
        config = make_config()
        reused = reuse(config) if reuse is not None else None
        if reused is not None:
            return config, reused
    return config, train(config, out_dir, resume=resume, progress=progress, dataset=dataset)


def _reuse_equal_retraining(trained: TrainedRun, tau: float, config: TrainConfig, out_dir: Path) -> TrainResult | None:
    """A retraining of the same network in the same regime as the finished same-C retraining: copy that one.

    Happens when pruning cut too little to free a channel or to leave a control another graph
    (λ = 0, small graphs, short runs): the fitted C is the run's own, the random family holds only
    the pruned graph, the width control is the pruned graph. Training it again would repeat the
    same steps (same architecture, config, seed and device) for the same weights.
    """
    import shutil

    from .train import initial_spec

    same_dir = retrain_dir(trained.path, tau, False)
    if out_dir.resolve() == same_dir.resolve() or not RunDir(same_dir).graph.exists():
        return None
    try:
        same_config = load_run_config(same_dir)
        if replace(same_config, graph=config.graph, device=config.device) != config:
            return None
        if initial_spec(same_config) != initial_spec(config):  # specs hold edges sorted; meta is not compared
            return None
    except DagwireError:
        return None
    staging = out_dir.with_name(out_dir.name + ".copying")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(same_dir, staging)
    RunDir(staging).network.unlink(missing_ok=True)  # the copy's own network.json names its own family
    own_graph, copied_graph = out_dir / "pruned_graph.json", staging / "pruned_graph.json"
    if own_graph.exists():  # the graph file written for this retraining (its meta names its family)
        shutil.copyfile(own_graph, copied_graph)
    else:  # trained from the run's own initial DAG (the width control): no graph file of its own
        copied_graph.unlink(missing_ok=True)
    config.save(RunDir(staging).config)  # its own graph path
    shutil.rmtree(out_dir, ignore_errors=True)  # holds only the graph file architecture_config wrote
    os.replace(staging, out_dir)
    return _finished_result(out_dir)


def _finished_result(out_dir: Path) -> TrainResult:
    """The TrainResult of a finished run directory, read from its graph.json."""
    learned = specs.load(RunDir(out_dir).graph)
    return TrainResult(out_dir, float(learned.meta["test_accuracy"]), float(learned.meta["thresholded_accuracy"]),
                       learned)


# --------------------------------------------------------------------------------------------
# Controls: is the learned wiring better than any graph of its size?

CONTROL_KINDS = ("random", "width")


@dataclass(frozen=True)
class Control:
    """One control of a run's pruned network: its directory name, graph (None: the run's initial DAG), C, records."""

    name: str  # random<k> or width
    graph: specs.GraphSpec | None
    channels: int
    record: dict[str, Any]  # what network.json adds: family, control index, graph seed, residual


def plan_controls(trained: TrainedRun, tau: float, kinds: Sequence[str], count: int = 2,
                  graph_seed: int | None = None) -> list[Control]:
    """The controls of the run's graph pruned at τ: `count` random graphs of its size, and/or the width control.

    Random control k is drawn from the generator seeded with [graph_seed, k] (default graph_seed:
    the retraining's default seed, the run's + 1000); see `controls.random_controls`.
    """
    from .controls import random_controls, width_channels

    pruned = connected_pruning(trained, tau)
    channels = trained.config.channels
    seed = trained.config.seed + 1000 if graph_seed is None else graph_seed
    planned: list[Control] = []
    for kind in dict.fromkeys(kinds):
        if kind == "random":
            if count < 1:
                raise DagwireError(f"--controls must be at least 1, got {count}")
            for k, graph in enumerate(random_controls(pruned, count, seed)):
                record = {"family": "random", "control": k, "graph_seed": [seed, k]}
                planned.append(Control(f"random{k}", graph, channels, record))
        elif kind == "width":
            initial = specs.load(RunDir(trained.path).initial_graph)
            width, residual = width_channels(initial, pruned, channels, *io_sizes(trained))
            planned.append(Control("width", None, width, {"family": "width", "residual": residual}))
        else:
            raise DagwireError(f"unknown control {kind!r}; available: {', '.join(CONTROL_KINDS)}")
    return planned


def retrain_control(trained: TrainedRun, tau: float, control: Control, *, seed: int | None = None,
                    resume: bool | None = None, progress: bool = False, dataset: Dataset | None = None,
                    **overrides) -> tuple[TrainConfig, TrainResult]:
    """Train a control from scratch in the run's regime into RUN/retrain-<τ>-<name>, and record its network.json.

    `resume` as in `retrain_run`; a control already there keeps its own graph and config.
    """
    out_dir = RunDir(trained.path).control(tau, control.name).path

    def make_config() -> TrainConfig:
        return architecture_config(trained, control.graph, control.channels, out_dir, seed=seed,
                                   meta={"source_run": recorded_path(trained.path), "threshold": tau, **control.record},
                                   **overrides)

    copied = []

    def reuse(config: TrainConfig) -> TrainResult | None:
        result = _reuse_equal_retraining(trained, tau, config, out_dir)
        if result is not None:
            copied.append({"same_network_as": retrain_dir(trained.path, tau, False).name})
        return result

    config, result = _train_in(out_dir, make_config, resume, progress, dataset, overrides.get("device"), reuse)
    network_facts(out_dir, {"tau": tau, **control.record, **(copied[0] if copied else {})})
    return config, result


def network_facts(out_dir: str | os.PathLike, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished retraining's network.json: `record` (family, τ, ...), seed, C, nodes, edges per stage,
    parameters, FLOPs and measured CPU seconds per image (`bench.time_inference`); computed once, then read."""
    from .bench import time_inference
    from .controls import stage_edge_counts
    from .files import atomic_write_json
    from .machine import cpu_label
    from .model import create_model

    files = RunDir(out_dir)
    if files.network.is_file():
        import json

        return json.loads(files.network.read_text())
    config = load_run_config(out_dir)
    architecture, learned = specs.load(files.initial_graph), specs.load(files.graph)
    sizes = int(learned.meta.get("in_channels", 3)), int(learned.meta.get("num_classes", 10))
    facts = {**(record or {}), "seed": config.seed, "channels": config.channels,
             "nodes": len(architecture.active_nodes()), "edges": architecture.num_edges,
             "edges_per_stage": stage_edge_counts(architecture),
             "parameters": counts.parameter_count(architecture, config.channels, *sizes),
             "flops_per_image": counts.flops_per_image(architecture, config.channels, 32, *sizes),
             "test_accuracy": float(learned.meta["test_accuracy"]),
             "cpu_seconds_per_image": time_inference(create_model(architecture, config.channels, *sizes),
                                                     in_channels=sizes[0]),
             "cpu": cpu_label(), "threads": 1}
    atomic_write_json(files.network, facts)
    return facts
