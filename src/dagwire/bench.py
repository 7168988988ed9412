"""`dagwire bench`: training-step time of the complete DAG against a straightforward implementation.

The reference network here is the obvious way to write SPEC §1 (one module per node, a Python
loop over edges, scale-and-add). It lives in the benchmark on purpose: it is the yardstick the
fast `DagNet` is measured and tested against, not a code path users run.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import counts
from . import spec as specs
from .model import EDGE_INIT, NodeOp, create_model, pointwise
from .train import autocast


class ReferenceNodeOp(NodeOp):
    """The node op written the obvious way: NCHW tensors, ATen's batch norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BN(Conv3x3(ReLU(x))) + BN(Conv1x1(x))."""
        return self.bn3(self.conv3(F.relu(x))) + self.bn1(pointwise(self.conv1, x))


class ReferenceDagNet(nn.Module):
    """SPEC §1 written straightforwardly: per-edge scale-and-add, reduce blocks shared per (i, k)."""

    def __init__(self, spec: specs.GraphSpec, channels: int, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.spec = spec

        def width(node: int) -> int:
            return counts.stage_channels(channels, spec.stage_of(node))

        self.nodes = nn.ModuleDict({str(j): ReferenceNodeOp(in_channels if j == 0 else width(j), width(j)) for j in spec.active_nodes()})
        self.reduces = nn.ModuleDict(
            {f"{i}_{k}": ReferenceNodeOp(width(i), width(i) * 2**k, 2**k) for i, k in counts.reduce_blocks(spec)}
        )
        self.head = nn.Linear(width(spec.output), num_classes)
        self.edge_weights = nn.Parameter(torch.full((spec.num_edges,), EDGE_INIT))

    def resources_loss(self) -> torch.Tensor:
        """Σ |tanh w|."""
        return torch.tanh(self.edge_weights).abs().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        g = self.spec
        out = {0: self.nodes["0"](x)}
        reduced: dict = {}
        for j in g.active_nodes()[1:]:
            total = None
            for e, (i, jj) in enumerate(g.edges):
                if jj != j:
                    continue
                k = g.stage_of(j) - g.stage_of(i)
                if k:
                    if (i, k) not in reduced:
                        reduced[(i, k)] = self.reduces[f"{i}_{k}"](out[i])
                    source = reduced[(i, k)]
                else:
                    source = out[i]
                term = torch.tanh(self.edge_weights[e]) * source
                total = term if total is None else total + term
            out[j] = self.nodes[str(j)](total)
        return self.head(out[g.output].mean(dim=(2, 3)))


def cmnist_like_graph(num_nodes: int = 60, stages: int = 3, seed: int = 0) -> specs.GraphSpec:
    """A sparse graph like the paper's CMNIST networks: 12 live nodes, about 25 edges."""
    rng = random.Random(seed)
    per_stage = num_nodes // stages
    picks = [0]
    for s in range(stages):  # 3 inner nodes per stage, 4 in the last (fewer where a stage is smaller)
        inner = [j for j in range(s * per_stage, (s + 1) * per_stage) if 0 < j < num_nodes - 1]
        picks += sorted(rng.sample(inner, min(4 if s == stages - 1 else 3, len(inner))))
    picks.append(num_nodes - 1)
    edges = {(a, b) for a, b in zip(picks, picks[1:])}  # a chain keeps every node live
    while len(edges) < min(25, len(picks) * (len(picks) - 1) // 2):
        a, b = sorted(rng.sample(picks, 2))
        edges.add((a, b))
    return specs.from_edge_list(num_nodes, (per_stage,) * stages, edges)


def _train_step(model: nn.Module, batch: int, image: int, device: torch.device, lam: float,
                precision: str) -> Callable[[], None]:
    """One SGD step (forward, backward, step, λ term) of `model` on a fixed synthetic batch, as a function."""
    model.to(device).train()
    members = getattr(model, "members", 1)  # K networks in one (--batch-seeds): K batches, K losses
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    in_channels = getattr(model, "in_channels", 3)
    x = torch.randn(batch, in_channels * members, image, image, generator=generator).to(device)
    y = torch.randint(0, 10, (batch * members,), generator=generator).to(device)

    def step() -> None:
        with autocast(device, precision):
            logits = model(x).view(batch, members, -1).transpose(0, 1).reshape(batch * members, -1)
            # Mean over each member's batch, summed over members: what `train_seeds` minimises.
            loss = F.cross_entropy(logits, y) * members + lam * model.resources_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _seconds(work: Callable[[], None], device: torch.device) -> float:
    """Wall-clock seconds of `work`, the device synchronised before and after."""
    _sync(device)
    started = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - started


def time_train_steps(models: dict[str, nn.Module], batch: int, image: int, device: torch.device, steps: int = 5,
                     warmup: int = 3, lam: float = 1e-3, precision: str = "fp32") -> dict[str, float]:
    """Median seconds of one SGD step (forward, backward, step, λ term) of each model, after warm-up.

    Each model is timed on its own, all its steps in a row, as a training run uses the machine:
    when the networks took their steps in turn, the channels-last network lost most of its lead
    over the others on this CPU. Warm-up matters too: a network's first two or three steps are up
    to 3× slower while the allocator's heap grows to the step's size.
    """
    seconds = {}
    for name, model in models.items():
        step = _train_step(model, batch, image, device, lam, precision)
        times = [_seconds(step, device) for _ in range(warmup + steps)]
        seconds[name] = statistics.median(times[warmup:])
    return seconds


def time_side_by_side(models: dict[str, nn.Module], batch: int, image: int, device: torch.device, rounds: int = 3,
                      steps: int = 5, warmup: int = 3, seed: int = 0) -> dict[str, list[float]]:
    """Each model's median seconds a step in each of `rounds` rounds, the models in a fresh random order every round.

    Within a round a model takes its warm-up and timed steps in a row (`time_train_steps`); the
    order is shuffled each round so that what drifts on the machine (another process, the clock)
    falls on every network alike rather than on the ones timed last.
    """
    order = random.Random(seed)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        names = list(models)
        order.shuffle(names)
        for name in names:
            seconds[name] += time_train_steps({name: models[name]}, batch, image, device, steps, warmup).values()
    return seconds


def time_epoch(model: nn.Module, images: int, batch: int, image: int, device: torch.device, warmup: int = 3,
               lam: float = 1e-3, precision: str = "fp32") -> float:
    """Seconds of ceil(images / batch) training steps in a row after warm-up: one epoch's training.

    Synthetic batches already on the device: no data loading, augmentation or evaluation.
    """
    step = _train_step(model, batch, image, device, lam, precision)
    for _ in range(warmup):
        step()

    def epoch() -> None:
        for _ in range(math.ceil(images / batch)):
            step()

    return _seconds(epoch, device)


def time_inference(model: nn.Module, batch: int = 100, image: int = 32, in_channels: int = 3, repeats: int = 5,
                   warmup: int = 2, threads: int = 1) -> float:
    """Median CPU seconds per image of eval-mode forward passes on a synthetic batch, on `threads` torch threads.

    One thread by default, so that networks measured on a busy machine, or on machines with
    different core counts, compare by their work rather than by the cores they were given.
    """
    device = torch.device("cpu")
    model = model.to(device).eval()
    x = torch.randn(batch, in_channels, image, image, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            times = [_seconds(lambda: model(x), device) for _ in range(warmup + repeats)]
    finally:
        torch.set_num_threads(before)
    return statistics.median(times[warmup:]) / batch


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a square matmul on `device`, its best of `repeats`: the machine's ceiling."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / min(times) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_benchmark(
    nodes: int = 60, stages: int = 3, channels: int = 11, batch: int = 128, image: int = 32,
    device: str = "cpu", steps: int = 5, reference: bool = True, log: Callable[[str], None] | None = None,
    batch_seeds: int = 1, precision: str = "fp32", epoch_images: int = 0,
) -> dict:
    """Every number of `dagwire bench` as one dict."""
    dev = torch.device(device)
    torch.manual_seed(0)
    full = specs.complete(nodes, stages)
    flops_per_step = 3 * batch * counts.flops_per_image(full, channels, image)  # backward ≈ 2 × forward
    say = log or (lambda message: None)
    result: dict = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "nodes": nodes, "stages": stages, "channels": channels, "batch": batch, "image": image,
                    "precision": precision}
    say("matmul ceiling")
    result["matmul_gflops"] = matmul_gflops(dev)
    sparse = cmnist_like_graph(nodes, stages)
    result["pruned_edges"], result["pruned_nodes"] = sparse.num_edges, len(sparse.active_nodes())
    models = {"full": create_model(full, channels), "pruned": create_model(sparse, channels)}
    if reference:
        models["reference"] = ReferenceDagNet(full, channels)
    say(f"{', '.join(models)} steps")
    seconds = time_train_steps(models, batch, image, dev, steps, precision=precision)
    del models
    result["full_step_s"] = seconds["full"]
    result["images_per_s"] = batch / result["full_step_s"]
    result["flops_per_step"] = flops_per_step
    result["flop_floor_s"] = flops_per_step / (result["matmul_gflops"] * 1e9)
    result["achieved_gflops"] = flops_per_step / result["full_step_s"] / 1e9
    result["pruned_step_s"] = seconds["pruned"]
    result["pruned_speedup"] = result["full_step_s"] / result["pruned_step_s"]
    if reference:
        result["reference_step_s"] = seconds["reference"]
        result["speedup_vs_reference"] = result["reference_step_s"] / result["full_step_s"]
    if batch_seeds > 1:
        # Throughput of K seeds trained as one network against K runs one after another. Timed on
        # its own: at full size K members need most of a small machine's memory.
        say(f"{batch_seeds} seeds in one network")
        result["batch_seeds"] = batch_seeds
        stacked = create_model(full, channels, members=batch_seeds)
        result["batch_seeds_step_s"] = time_train_steps({"stacked": stacked}, batch, image, dev, max(2, steps // 2),
                                                        precision=precision)["stacked"]
        result["batch_seeds_speedup"] = batch_seeds * result["full_step_s"] / result["batch_seeds_step_s"]
        del stacked
    if epoch_images:
        say(f"one epoch of {epoch_images} images")
        result["epoch_images"] = epoch_images
        result["epoch_s"] = time_epoch(create_model(full, channels), epoch_images, batch, image, dev, precision=precision)
    return result
