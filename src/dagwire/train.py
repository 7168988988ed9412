"""The training loop, top to bottom: data, network, SGD + L1 resources term, per-epoch records.

A run directory (`rundir.RunDir`) gets its config, initial graph, a checkpoint rewritten
atomically every epoch, metrics and edge history; at the end the learned graph and weights.

`--batch-seeds K` trains K runs that differ only in their seed as members of one network
(`train_seeds`): the same loop, with K batches per step side by side in the channel dimension, K
losses summed, and K ordinary run directories written.

Determinism: the data order and augmentation of epoch e come from a generator seeded by
(seed, e) alone, so a run resumed from the checkpoint after epoch e-1 takes exactly the steps an
uninterrupted run takes (same seed, same device; CUDA kernels with atomics can differ).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import graphs
from . import spec as specs
from .config import TrainConfig, read_yaml, build_config
from .dynamics import first_phase_epoch, is_collapsed
from .data import Dataset, augment_batch, load_dataset_for, normalize_batch
from .errors import DagwireError, TrainingDiverged
from .files import atomic_write, atomic_write_text
from .machine import cpu_label
from .rundir import RunDir
from .model import DagNet, create_model, save_weights, split_members, split_state, stack_members, stack_state



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
def evaluate_members(model: DagNet, x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int = 1000) -> list[float]:
    """Test accuracy of each member network on uint8 images `x` (already on the model's device)."""
    was_training = model.training
    model.eval()
    members = model.members
    correct = torch.zeros(members, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        images = normalize_batch(x[start:start + batch_size], mean, std)
        logits = model(images.repeat(1, members, 1, 1) if members > 1 else images)
        predicted = logits.view(len(images), members, -1).argmax(2)
        correct += (predicted == y[start:start + batch_size, None]).sum(0).cpu()
    model.train(was_training)
    return [int(c) / max(len(x), 1) for c in correct]


def evaluate(model: DagNet, x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int = 1000) -> float:
    """Test accuracy of a single network on uint8 images `x` (already on the model's device)."""
    return evaluate_members(model, x, y, mean, std, batch_size)[0]


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    out: Path
    test_accuracy: float
    thresholded_accuracy: float
    spec: specs.GraphSpec
    train_eval_accuracy: float | None = None  # on the training subset, no augmentation: the fit
    collapsed: bool = False  # at chance after the first phase with most edges gone (dynamics.is_collapsed)


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
    return train_seeds([config], [out], resume=resume, progress=progress, dataset=dataset, on_epoch=on_epoch)[0]


def seed_configs(config: TrainConfig, batch_seeds: int) -> list[TrainConfig]:
    """`batch_seeds` configs equal to `config` but for their seeds: seed, seed + 1, ..."""
    if batch_seeds < 1:
        raise DagwireError(f"--batch-seeds must be at least 1, got {batch_seeds}")
    return [dataclasses.replace(config, seed=config.seed + k) for k in range(batch_seeds)]


def train_seeds(
    configs: Sequence[TrainConfig],
    outs: Sequence[str | os.PathLike],
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    before_training: Callable[[], None] | None = None,
) -> list[TrainResult]:
    """Train (or resume) K runs that differ only in their seed, as K members of one network.

    Each member keeps its own initialisation (from its seed), data order and augmentation (from
    (its seed, epoch)) and its own run directory, checkpoint included: the result is the K runs
    that K separate `train` calls would give (the same math; float sums may differ in the last
    bits). K = 1 is a plain run. `before_training` runs once the data are loaded, before anything
    is written (the CLI checks the machine's kernels there).
    """
    configs, outs = list(configs), [RunDir(o) for o in outs]
    config, members = configs[0], len(configs)
    _check_runs(configs, outs, resume)

    device = resolve_device(config.device)
    data = dataset or load_dataset_for(config)
    initial = initial_spec(config)
    if before_training is not None:
        before_training()

    # --- the network and its optimiser (SPEC §2) -------------------------------------------
    singles = []
    for member in configs:  # each member initialised exactly as its own run would be
        torch.manual_seed(member.seed)
        singles.append(create_model(initial, config.channels, data.train_x.shape[1], data.num_classes))
    model = (singles[0] if members == 1 else stack_members(singles)).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    start_epoch, metrics, history = 0, [[] for _ in configs], [[] for _ in configs]
    if resume and any(out.checkpoint.exists() for out in outs):
        start_epoch, metrics, history = _restore(model, optimizer, outs, device)
    for member, out in zip(configs, outs):
        if not resume or not out.config.exists():
            out.path.mkdir(parents=True, exist_ok=True)
            member.save(out.config)
            specs.save(initial, out.initial_graph, dataset=config.dataset)

    # The whole uint8 dataset lives on the device; batches are augmented there.
    train_x = torch.from_numpy(data.train_x).to(device)
    train_y = torch.from_numpy(data.train_y).to(device)
    test_x = torch.from_numpy(data.test_x).to(device)
    test_y = torch.from_numpy(data.test_y).to(device)
    mean, std = data.mean, data.std
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    # The learning rate is a function of the step alone (milestones may fall inside an epoch), so a
    # resumed run needs no scheduler state.
    rates = [config.learning_rate(step, steps_per_epoch) for step in range(config.epochs * steps_per_epoch)]
    # The compiled module shares its parameters with `model`, which is what gets saved.
    forward = torch.compile(model) if config.compile else model
    label = f"{members} seeds, " if members > 1 else ""
    collapse_epoch = first_phase_epoch(config.milestone_steps(steps_per_epoch), steps_per_epoch, config.epochs)

    # --- epochs ------------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs):
        model.train()
        generators = [epoch_generator(member.seed, epoch) for member in configs]
        orders = [torch.randperm(len(train_x), generator=g).to(device) for g in generators]
        started = time.perf_counter()
        loss_sums, corrects, seen = torch.zeros(members, dtype=torch.float64), torch.zeros(members, dtype=torch.long), 0
        bar = tqdm(total=steps_per_epoch, desc=f"{label}epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress, unit="batch")
        for step in range(steps_per_epoch):
            lr = rates[epoch * steps_per_epoch + step]
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Member k reads its own batch: its images sit in channel block k of the input.
            xs, ys = [], []
            for order, generator in zip(orders, generators):
                index = order[step * config.batch_size:(step + 1) * config.batch_size]
                x = train_x[index]
                if config.augment:
                    x = augment_batch(x, generator)
                xs.append(normalize_batch(x, mean, std))
                ys.append(train_y[index])
            x = xs[0] if members == 1 else torch.cat(xs, 1)
            with autocast(device, config.precision):
                logits = forward(x)
            logits = logits.float().view(len(x), members, -1)
            ce = torch.stack([F.cross_entropy(logits[:, k], y) for k, y in enumerate(ys)])
            # The members' losses add up: each member's gradient is that of its own run.
            loss = ce.sum() + config.lam_at(epoch * steps_per_epoch + step) * model.resources_loss()
            if not torch.isfinite(loss):
                bar.close()
                last = f"epoch {metrics[0][-1]['epoch']}" if metrics[0] else "none (no epoch finished)"
                raise TrainingDiverged(
                    f"loss became non-finite at epoch {epoch + 1}, step {step + 1}; "
                    f"stopped, last good checkpoint: {last} in {', '.join(map(str, outs))}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sums += ce.detach().double().cpu() * len(x)
            corrects += torch.stack([(logits[:, k].argmax(1) == y).sum() for k, y in enumerate(ys)]).cpu()
            seen += len(x)
            bar.update()
            bar.set_postfix(loss=f"{float(loss_sums.mean()) / seen:.3f}", acc=f"{float(corrects.float().mean()) / seen:.3f}")
        bar.close()
        train_seconds = time.perf_counter() - started
        test_accuracies = evaluate_members(model, test_x, test_y, mean, std, config.eval_batch_size)
        magnitudes = _per_member(model.edge_magnitudes(), members)
        for k in range(members):
            history[k].append(magnitudes[k])
            metrics[k].append({
                "epoch": epoch + 1,
                "train_loss": float(loss_sums[k]) / seen,
                "train_accuracy": int(corrects[k]) / seen,
                "resources_loss": float(sum(magnitudes[k])),
                "test_accuracy": test_accuracies[k],
                "lr": lr,  # of the epoch's last step
                "seconds": train_seconds,  # K members: the seconds of the epoch that trained them all
                "edges_above_threshold": int(sum(m >= config.threshold for m in magnitudes[k])),
                "cpu": cpu_label(),  # a resumed run may continue on another machine
            })
            if epoch + 1 == collapse_epoch:
                metrics[k][-1]["collapsed"] = is_collapsed(metrics[k][-1]["train_accuracy"], magnitudes[k],
                                                           data.num_classes)
                if metrics[k][-1]["collapsed"]:
                    tqdm.write(f"dagwire: {outs[k]} collapsed: training accuracy "
                               f"{metrics[k][-1]['train_accuracy']:.3f} (chance {1 / data.num_classes:.2f}) after the "
                               f"first lr phase while the L1 term shrank most edges; its graph says nothing of the task",
                               file=sys.stderr)
        _save_checkpoints(outs, model, optimizer, epoch + 1, metrics, history)
        for k, record in enumerate(metrics[k][-1] for k in range(members)):
            if progress:
                tqdm.write(
                    f"{f'seed {configs[k].seed}  ' if members > 1 else ''}epoch {epoch + 1}/{config.epochs}  "
                    f"loss {record['train_loss']:.4f}  resources {record['resources_loss']:.2f}  "
                    f"test acc {record['test_accuracy']:.4f}  "
                    f"edges≥τ {record['edges_above_threshold']}/{initial.num_edges}  {train_seconds:.1f}s"
                )
            if on_epoch is not None:
                on_epoch(record)

    # --- the learned graphs ----------------------------------------------------------------
    return _finish(model, configs, outs, initial, data, metrics, (train_x, train_y), (test_x, test_y))


def _check_runs(configs: list[TrainConfig], outs: list[RunDir], resume: bool) -> None:
    """DagwireError unless the runs can train together into these directories (new, or resumed)."""
    config, members = configs[0], len(configs)
    if len(outs) != members:
        raise ValueError(f"{members} configs for {len(outs)} run directories")
    if any(dataclasses.replace(c, seed=config.seed) != config for c in configs):
        raise DagwireError("runs trained together (--batch-seeds) must differ in their seed only")
    if len({c.seed for c in configs}) < members or len(set(outs)) < members:
        raise DagwireError("runs trained together (--batch-seeds) need distinct seeds and run directories")
    for out in outs:
        if resume:
            if not out.started():
                raise DagwireError(f"--resume {out}: no run there (no {out.config.name} or {out.checkpoint.name})")
        elif out.checkpoint.exists() or out.graph.exists():
            raise DagwireError(f"{out} already holds a run; use --resume {out} or another --out")


def _restore(model: DagNet, optimizer: torch.optim.Optimizer, outs: list[RunDir],
             device: torch.device) -> tuple[int, list, list]:
    """Load the members' checkpoints into the model and optimiser; (epochs done, metrics, edge histories)."""
    states = [_load_checkpoint(out.checkpoint, device) for out in outs]
    epochs_done = {int(state["epoch"]) for state in states}
    if len(epochs_done) > 1:
        raise DagwireError(f"runs trained together must resume from the same epoch; their checkpoints "
                           f"are at epochs {sorted(epochs_done)} (resume them one at a time)")
    parameter_names = [name for name, _ in model.named_parameters()]
    model.load_state_dict(_stack([state["model"] for state in states]))
    optimizer.load_state_dict(_stack_optimizer([state["optimizer"] for state in states], parameter_names))
    metrics = [json.loads(state["metrics"]) for state in states]
    history = [state["edge_history"].tolist() for state in states]
    return epochs_done.pop(), metrics, history


def _finish(model: DagNet, configs: list[TrainConfig], outs: list[RunDir], initial: specs.GraphSpec, data: Dataset,
            metrics: list, train: tuple[torch.Tensor, torch.Tensor],
            test: tuple[torch.Tensor, torch.Tensor]) -> list[TrainResult]:
    """The learned graphs: thresholded accuracy, the fit, graph.json and weights.pt of every member."""
    config, members = configs[0], len(configs)
    test_x, test_y = test
    # Accuracy on the images trained on, without augmentation: whether the network fits its task.
    train_eval_accuracies = evaluate_members(model, *train, data.mean, data.std, config.eval_batch_size)
    learned = [initial.with_weights(m) for m in _per_member(model.edge_magnitudes(), members)]
    pruned = [graphs.prune(g, config.threshold) for g in learned]
    connected = [graphs.is_connected(p) for p in pruned]
    keep = [graphs.edge_mask(g, p) if ok else [True] * initial.num_edges for g, p, ok in zip(learned, pruned, connected)]
    model.set_edge_mask(keep[0] if members == 1 else keep)
    masked_accuracies = evaluate_members(model, test_x, test_y, data.mean, data.std, config.eval_batch_size)
    model.set_edge_mask(None)
    results = []
    member_models = [model] if members == 1 else split_members(model)
    for k, (member, out) in enumerate(zip(configs, outs)):
        final_accuracy = metrics[k][-1]["test_accuracy"]
        thresholded_accuracy = masked_accuracies[k] if connected[k] else 1.0 / data.num_classes
        collapsed = any(bool(m.get("collapsed")) for m in metrics[k])
        save_weights(member_models[k], out.weights)
        specs.save(
            learned[k], out.graph, dataset=config.dataset, seed=member.seed, channels=config.channels,
            test_accuracy=final_accuracy, threshold=config.threshold, thresholded_accuracy=thresholded_accuracy,
            in_channels=int(data.train_x.shape[1]), num_classes=data.num_classes,
            train_eval_accuracy=train_eval_accuracies[k], collapsed=collapsed,
        )
        results.append(TrainResult(out.path, final_accuracy, thresholded_accuracy, learned[k],
                                   train_eval_accuracies[k], collapsed))
    return results


def _per_member(magnitudes: list, members: int) -> list[list[float]]:
    """edge_magnitudes() as one list per member (a single network gives one flat list)."""
    return [magnitudes] if members == 1 else magnitudes


def _stack(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return states[0] if len(states) == 1 else stack_state(states)


def _stack_optimizer(states: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One SGD state for K members from theirs: each per-parameter buffer stacked like its parameter."""
    if len(states) == 1:
        return states[0]
    per_parameter = {
        i: {key: stack_state([{names[i]: s["state"][i][key]} for s in states])[names[i]] for key in entry}
        for i, entry in states[0]["state"].items()
    }
    return {"state": per_parameter, "param_groups": states[0]["param_groups"]}


def _split_optimizer(state: dict[str, Any], names: list[str], members: int) -> list[dict[str, Any]]:
    """K members' SGD states from one (the inverse of `_stack_optimizer`)."""
    if members == 1:
        return [state]
    parts: list[dict[str, Any]] = [{"state": {}, "param_groups": state["param_groups"]} for _ in range(members)]
    for i, entry in state["state"].items():
        for key, value in entry.items():
            for k, piece in enumerate(split_state({names[i]: value}, members)):
                parts[k]["state"].setdefault(i, {})[key] = piece[names[i]]
    return parts


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise DagwireError(f"cannot read {path}: {str(exc).splitlines()[0][:200]}") from None


def _save_checkpoints(outs: list[RunDir], model, optimizer, epoch: int, metrics, history) -> None:
    """One checkpoint per member run, as its own run would write it; then the files derived from it."""
    members = len(outs)
    model_states = split_state(model.state_dict(), members) if members > 1 else [model.state_dict()]
    names = [name for name, _ in model.named_parameters()]
    member_optimizer_states = _split_optimizer(optimizer.state_dict(), names, members)
    for k, out in enumerate(outs):
        history_array = np.asarray(history[k], dtype=np.float32)
        state = {
            "model": model_states[k],
            "optimizer": member_optimizer_states[k],
            "epoch": epoch,
            "metrics": json.dumps(metrics[k]),
            "edge_history": torch.from_numpy(history_array),
        }
        atomic_write(out.checkpoint, lambda f: torch.save(state, f))
        atomic_write_text(out.metrics, "".join(json.dumps(m) + "\n" for m in metrics[k]))
        atomic_write(out.edge_history, lambda f: np.save(f, history_array))


def load_run_config(run: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """The config a run directory was started with, with optional overrides (e.g. device)."""
    path = RunDir(run).config
    if not path.exists():
        raise DagwireError(f"{run} is not a run directory (no {path.name})")
    return build_config(None, **{**read_yaml(path), **{k: v for k, v in overrides.items() if v is not None}})
