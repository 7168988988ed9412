"""The training loop, top to bottom: data, network, SGD + L1 resources term, per-epoch records.

A run directory holds:
    config.yaml         the full TrainConfig
    initial_graph.json  the initial DAG (before training)
    checkpoint.pt       model + optimiser + scheduler + records, rewritten atomically every epoch
    metrics.jsonl       one JSON line per epoch
    edge_history.npy    epochs × edges, |tanh w| after each epoch, edge order = graph.json's
    graph.json          the learned graph (written at the end)
    weights.pt          the final state_dict (plain tensors)

Determinism: the data order and augmentation of epoch e come from a generator seeded by
(seed, e) alone, so a run resumed from the checkpoint after epoch e-1 takes exactly the steps an
uninterrupted run takes (same seed, same device; CUDA kernels with atomics can differ).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import graphs
from . import spec as specs
from .config import TrainConfig, read_yaml, build_config
from .data import Dataset, augment_batch, load_dataset, normalize_batch
from .errors import DagwireError, TrainingDiverged
from .files import atomic_write, atomic_write_text
from .model import DagNet, create_model, save_weights

CHECKPOINT = "checkpoint.pt"


def initial_spec(config: TrainConfig) -> specs.GraphSpec:
    """The initial DAG a run starts from: complete, local, or a graph file."""
    if config.graph == "complete":
        return specs.complete(config.nodes, config.stages)
    if config.graph == "local":
        return specs.local(config.nodes, config.stages, config.local_window)
    given = specs.load(config.graph)
    live = graphs.remove_dead_paths(given.with_weights(None))
    if not live.edges:
        raise DagwireError(f"graph {config.graph}: the output node is not reachable from the input")
    return live


def resolve_device(name: str) -> torch.device:
    """The torch device for a --device value, with a clear error when it is not there."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DagwireError(f"--device {name}: no CUDA GPU is available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DagwireError("--device mps: MPS is not available on this machine")
    return torch.device(name)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch (data order and augmentation), a function of (seed, epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bfloat16 autocast for --precision bf16, a no-op context for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.inference_mode()
def evaluate(model: DagNet, x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int = 1000) -> float:
    """Test accuracy of `model` on uint8 images `x` (already on the model's device)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(normalize_batch(x[start:start + batch_size], mean, std))
        correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    out: Path
    test_accuracy: float
    thresholded_accuracy: float
    spec: specs.GraphSpec


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train (or resume) one run into the directory `out`."""
    out = Path(out)
    checkpoint_path = out / CHECKPOINT
    if resume:
        if not checkpoint_path.exists() and not (out / "config.yaml").exists():
            raise DagwireError(f"--resume {out}: no run there (no config.yaml or {CHECKPOINT})")
    elif checkpoint_path.exists() or (out / "graph.json").exists():
        raise DagwireError(f"{out} already holds a run; use --resume {out} or another --out")

    device = resolve_device(config.device)
    data = dataset or load_dataset(
        config.dataset, config.data_dir, limit_train=config.limit_train, limit_test=config.limit_test,
        carve_test=config.carve_test, data_seed=config.data_seed,
    )
    initial = initial_spec(config)

    # --- the network and its optimiser (SPEC §2) -------------------------------------------
    torch.manual_seed(config.seed)
    model = create_model(initial, config.channels, data.train_x.shape[1], data.num_classes).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones(), gamma=config.lr_gamma)
    metrics: list[dict[str, Any]] = []
    history: list[list[float]] = []
    start_epoch = 0
    if resume and checkpoint_path.exists():
        try:
            state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        except Exception as exc:  # a truncated or foreign file: torch raises several kinds
            raise DagwireError(f"cannot read {checkpoint_path}: {str(exc).splitlines()[0][:200]}") from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        metrics = json.loads(state["metrics"])
        history = state["edge_history"].tolist()
        start_epoch = int(state["epoch"])
    if not resume or not (out / "config.yaml").exists():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.yaml")
        specs.save(initial, out / "initial_graph.json", dataset=config.dataset)

    # The whole uint8 dataset lives on the device; batches are augmented there.
    train_x = torch.from_numpy(data.train_x).to(device)
    train_y = torch.from_numpy(data.train_y).to(device)
    test_x = torch.from_numpy(data.test_x).to(device)
    test_y = torch.from_numpy(data.test_y).to(device)
    mean, std = data.mean, data.std
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    # The compiled module shares its parameters with `model`, which is what gets saved.
    forward = torch.compile(model) if config.compile else model

    # --- epochs ------------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs):
        model.train()
        generator = epoch_generator(config.seed, epoch)
        order = torch.randperm(len(train_x), generator=generator).to(device)
        started = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress, unit="batch")
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            x = train_x[index]
            if config.augment:
                x = augment_batch(x, generator)
            x, y = normalize_batch(x, mean, std), train_y[index]
            with autocast(device, config.precision):
                logits = forward(x)
            ce = F.cross_entropy(logits.float(), y)
            loss = ce + config.lam * model.resources_loss()
            if not torch.isfinite(loss):
                bar.close()
                last = f"epoch {metrics[-1]['epoch']}" if metrics else "none (no epoch finished)"
                raise TrainingDiverged(
                    f"loss became non-finite at epoch {epoch + 1}, step {step + 1}; "
                    f"stopped, last good checkpoint: {last} in {out}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(ce.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_seconds = time.perf_counter() - started
        test_accuracy = evaluate(model, test_x, test_y, mean, std, config.eval_batch_size)
        magnitudes = model.edge_magnitudes()
        history.append(magnitudes)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "resources_loss": float(sum(magnitudes)),
            "test_accuracy": test_accuracy,
            "lr": lr,
            "seconds": train_seconds,
            "edges_above_threshold": int(sum(m >= config.threshold for m in magnitudes)),
        }
        metrics.append(record)
        _save_checkpoint(out, model, optimizer, scheduler, epoch + 1, metrics, history)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss']:.4f}  "
                f"resources {record['resources_loss']:.2f}  test acc {test_accuracy:.4f}  "
                f"edges≥τ {record['edges_above_threshold']}/{initial.num_edges}  {train_seconds:.1f}s"
            )
        if on_epoch is not None:
            on_epoch(record)

    # --- the learned graph -----------------------------------------------------------------
    learned = initial.with_weights(model.edge_magnitudes())
    pruned = graphs.prune(learned, config.threshold)
    final_accuracy = metrics[-1]["test_accuracy"]
    if graphs.is_connected(pruned):
        model.set_edge_mask(graphs.edge_mask(learned, pruned))
        thresholded_accuracy = evaluate(model, test_x, test_y, mean, std, config.eval_batch_size)
        model.set_edge_mask(None)
    else:
        thresholded_accuracy = 1.0 / data.num_classes
    save_weights(model, out / "weights.pt")
    specs.save(
        learned, out / "graph.json", dataset=config.dataset, seed=config.seed, channels=config.channels,
        test_accuracy=final_accuracy, threshold=config.threshold, thresholded_accuracy=thresholded_accuracy,
        in_channels=int(data.train_x.shape[1]), num_classes=data.num_classes,
    )
    return TrainResult(out, final_accuracy, thresholded_accuracy, learned)


def _save_checkpoint(out: Path, model, optimizer, scheduler, epoch: int, metrics, history) -> None:
    """Checkpoint first, then the files derived from it, each atomically."""
    history_array = np.asarray(history, dtype=np.float32)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "metrics": json.dumps(metrics),
        "edge_history": torch.from_numpy(history_array),
    }
    atomic_write(out / CHECKPOINT, lambda f: torch.save(state, f))
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    atomic_write(out / "edge_history.npy", lambda f: np.save(f, history_array))


def load_run_config(run: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """The config a run directory was started with, with optional overrides (e.g. device)."""
    path = Path(run) / "config.yaml"
    if not path.exists():
        raise DagwireError(f"{run} is not a run directory (no config.yaml)")
    return build_config(None, **{**read_yaml(path), **{k: v for k, v in overrides.items() if v is not None}})
