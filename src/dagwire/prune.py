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
from typing import Sequence

import torch
from tqdm.auto import tqdm

from . import counts, graphs
from . import spec as specs
from .config import TAU_GRID, TrainConfig
from .data import Dataset, load_dataset_for
from .errors import DagwireError
from .files import atomic_write_text
from .model import DagNet, load_model, materialise
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
    pruned = graphs.prune(trained.learned, tau)
    if not graphs.is_connected(pruned):
        raise DagwireError(f"at τ={tau} the learned graph of {trained.path} is disconnected: nothing to retrain")
    channels = trained.config.channels
    if fit_channels is not None:
        channels = counts.fit_channels(
            pruned, fit_channels, int(trained.learned.meta.get("in_channels", 3)),
            int(trained.learned.meta.get("num_classes", 10)),
        )
    out.mkdir(parents=True, exist_ok=True)
    graph_path = (out / "pruned_graph.json").resolve()
    specs.save(pruned, graph_path, source_run=str(trained.path), threshold=tau)
    return replace(
        trained.config,
        graph=str(graph_path),
        channels=channels,
        seed=trained.config.seed + 1000 if seed is None else seed,
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
    files = RunDir(out_dir)
    finished = files.trained()
    present = files.checkpoint.exists() or files.graph.exists()
    if resume is None:
        if finished:
            return load_run_config(out_dir, device=overrides.get("device")), _finished_result(out_dir)
        resume = present or files.config.exists()
    if resume:
        config = load_run_config(out_dir, device=overrides.get("device"))
    else:
        if present:
            raise DagwireError(f"{out_dir} already holds a retraining; add --resume or give another --out")
        if fit and target is None:
            target = full_parameter_count(trained)
        config = retrain_config(trained, tau, out_dir, seed=seed, fit_channels=target if fit else None, **overrides)
        if fit:
            reused = _reuse_same_channels(trained, tau, config, out_dir)
            if reused is not None:
                return config, reused
    return config, train(config, out_dir, resume=resume, progress=progress, dataset=dataset)


def _reuse_same_channels(trained: TrainedRun, tau: float, config: TrainConfig, out_dir: Path) -> TrainResult | None:
    """A fitted-C retraining whose C came out as the run's own is the same-C retraining: copy it when finished.

    Happens when pruning cut too little to free a channel (small graphs, short runs); training it
    again would repeat the same steps (same config, seed and device) for the same weights.
    """
    import shutil

    same_dir = retrain_dir(trained.path, tau, False)
    if config.channels != trained.config.channels or not RunDir(same_dir).graph.exists():
        return None
    try:
        same_config = load_run_config(same_dir)
    except DagwireError:
        return None
    if replace(same_config, graph=config.graph, device=config.device) != config:
        return None
    staging = out_dir.with_name(out_dir.name + ".copying")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(same_dir, staging)
    config.save(RunDir(staging).config)  # its own graph path; the copied pruned_graph.json is that graph
    shutil.rmtree(out_dir, ignore_errors=True)  # holds only the pruned graph retrain_config just wrote
    os.replace(staging, out_dir)
    return _finished_result(out_dir)


def _finished_result(out_dir: Path) -> TrainResult:
    """The TrainResult of a finished run directory, read from its graph.json."""
    learned = specs.load(RunDir(out_dir).graph)
    return TrainResult(out_dir, float(learned.meta["test_accuracy"]), float(learned.meta["thresholded_accuracy"]),
                       learned)
