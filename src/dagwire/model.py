"""The torch network built from a graph spec (SPEC §1), and its one factory `create_model`.

A spec with every edge of the initial DAG gives the full network; a pruned spec (after threshold
and dead-path removal) gives a physically smaller one holding only surviving nodes, edges and
reduce blocks. Module names carry the original node indices (`nodes.<j>`, `reduces.<i>_<k>`), so
weights move between the full and the pruned network by name, and a saved model is just its
graph.json plus a plain state_dict (no pickled classes).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import counts, kernels
from .errors import SpecError
from .spec import GraphSpec

EDGE_INIT = math.atanh(0.5)  # tanh(w) = 0.5 for every edge: no a-priori topology bias


class NodeOp(nn.Module):
    """`BN(Conv3x3(ReLU(x))) + BN(Conv1x1(x))`, the op of every node and reduce block.

    With `members` K > 1 it holds K independent copies side by side in the channel dimension:
    grouped convolutions (groups = K) and batch norm over K·c_out channels, which normalises each
    copy's channels on their own, as K separate modules would.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, members: int = 1):
        super().__init__()
        k = members
        self.conv3 = nn.Conv2d(k * c_in, k * c_out, 3, stride=stride, padding=1, bias=False, groups=k)
        self.bn3 = nn.BatchNorm2d(k * c_out)
        self.conv1 = nn.Conv2d(k * c_in, k * c_out, 1, stride=stride, bias=False, groups=k)
        self.bn1 = nn.BatchNorm2d(k * c_out)
        self.fast_kernels = True  # the hand-written batch-norm pair of kernels.py (DagNet sets it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the op."""
        a, b = self.conv3(F.relu(x)), pointwise(self.conv1, x)
        if self.fast_kernels and self.training and a.device.type == "cpu" and not torch.compiler.is_compiling():
            return kernels.batch_norm_pair(a, b, self.bn3, self.bn1)
        return self.bn3(a) + self.bn1(b)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The 1×1 convolution `conv` of x, its stride taken by slicing: conv1x1(x[..., ::s, ::s]).

    Never oneDNN's strided 1×1 kernel: on AVX2 CPUs, with channels-last inputs of fewer than 8
    channels (its channel block there), its weight gradient writes past its workspace (oneDNN
    issue 6035): hangs, heap corruption, or gradients off by 40-100 %. (On an Intel Xeon with
    AVX-512, on 2026-12-01, it was right for C = 1-32.) Slicing first is the same math and less work on every CPU;
    `dagwire doctor` and tests/test_kernels.py check the network on every C.
    """
    s = conv.stride
    if s != (1, 1):
        x = x[:, :, ::s[0], ::s[1]]
    return F.conv2d(x, conv.weight, conv.bias, groups=conv.groups)


class MemberLinear(nn.Module):
    """K independent linear layers on [B, K·F] inputs; weight [K·out, F] (K = 1: nn.Linear's layout)."""

    def __init__(self, features: int, out: int, members: int):
        super().__init__()
        self.members, self.out = members, out
        heads = [nn.Linear(features, out) for _ in range(members)]  # nn.Linear's initialisation
        self.weight = nn.Parameter(torch.cat([h.weight.detach() for h in heads]))
        self.bias = nn.Parameter(torch.cat([h.bias.detach() for h in heads]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K·F] to [B, K·out]."""
        k = self.members
        w = self.weight.view(k, self.out, -1)
        return (torch.einsum("bkf,kof->bko", x.view(x.shape[0], k, -1), w) + self.bias.view(k, self.out)).flatten(1)


class StagePlan(NamedTuple):
    """One stage of the forward pass: reduce blocks (source, jump) feeding it, their target nodes, and
    its nodes in order with their in-stage sources (index tensors: DagNet buffers plan_gather_<s>,
    plan_inner_<j>)."""

    blocks: list[tuple[int, int]]
    targets: list[int]
    nodes: list[tuple[int, list[int]]]


class DagNet(nn.Module):
    """The staged-DAG CNN of SPEC §1 for one graph spec.

    Edges inside a stage are summed node by node (each node needs its predecessors' outputs).
    Edges that enter a stage from earlier stages are known when the stage starts, so all of them
    are summed at once as one matrix product of the stage's edge weights with the stacked reduce
    outputs: each reduce output is read once instead of once per target node.

    `members` K > 1 builds K independent networks of the same graph in one module (`--batch-seeds`):
    member k owns channel block k of every activation (input [B, K·in_channels, H, W], logits
    [B, K·num_classes]) and row k of the [K, E] edge weights. `stack_members` and `split_members`
    move states between it and K single networks.
    """

    def __init__(self, spec: GraphSpec, channels: int = 11, in_channels: int = 3, num_classes: int = 10,
                 members: int = 1):
        super().__init__()
        self.spec = spec
        self.channels, self.in_channels, self.num_classes = channels, in_channels, num_classes
        self.members = members
        inner: dict[int, list[tuple[int, int]]] = {}  # node -> [(edge, source)] inside its stage
        inner_out: dict[int, list[tuple[int, int]]] = {}  # node -> [(edge, target)] inside its stage
        cross: dict[int, list[tuple[int, int, int]]] = {}  # stage -> [(edge, source, target)] entering it
        for e, (i, j) in enumerate(spec.edges):
            if spec.stage_of(i) == spec.stage_of(j):
                inner.setdefault(j, []).append((e, i))
                inner_out.setdefault(i, []).append((e, j))
            else:
                cross.setdefault(spec.stage_of(j), []).append((e, i, j))
        active = spec.active_nodes()
        has_cross = {j for edges in cross.values() for _, _, j in edges}
        for j in active[1:]:
            if j not in inner and j not in has_cross:
                raise SpecError(f"node {j} has no input edge; remove dead paths from the graph first")

        def width(node: int) -> int:
            return counts.stage_channels(channels, spec.stage_of(node))

        self.nodes = nn.ModuleDict(
            {str(j): NodeOp(in_channels if j == 0 else width(j), width(j), members=members) for j in active}
        )
        self.reduces = nn.ModuleDict(
            {f"{i}_{k}": NodeOp(width(i), width(i) * 2**k, stride=2**k, members=members)
             for i, k in counts.reduce_blocks(spec)}
        )
        self.head = (nn.Linear(width(spec.output), num_classes) if members == 1
                     else MemberLinear(width(spec.output), num_classes, members))
        shape = (spec.num_edges,) if members == 1 else (members, spec.num_edges)
        self.edge_weights = nn.Parameter(torch.full(shape, EDGE_INIT))
        # 1 keeps an edge, 0 cuts it; used to evaluate a thresholded network without rebuilding it.
        self.register_buffer("edge_mask", torch.ones(shape), persistent=False)

        # Execution plan, stage by stage (StagePlan). Its index tensors are buffers, so they move
        # with the module to its device once, not on every forward.
        self.plan: list[StagePlan] = []
        for s in range(len(spec.stages)):
            entering = cross.get(s, [])
            blocks = sorted({(i, s - spec.stage_of(i)) for _, i, _ in entering})
            targets = sorted({j for _, _, j in entering})
            gather = torch.full((len(targets), len(blocks)), spec.num_edges, dtype=torch.long)
            for e, i, j in entering:
                gather[targets.index(j), blocks.index((i, s - spec.stage_of(i)))] = e
            self.register_buffer(f"plan_gather_{s}", gather, persistent=False)
            nodes = []
            for j in (j for j in active if j > 0 and spec.stage_of(j) == s):
                edges = inner.get(j, [])
                self.register_buffer(f"plan_inner_{j}", torch.tensor([e for e, _ in edges], dtype=torch.long),
                                     persistent=False)
                nodes.append((j, [i for _, i in edges]))
            self.plan.append(StagePlan(blocks, targets, nodes))
        # Sources of in-stage edges: the targets of each (the edges' indices are buffers plan_out_<i>).
        self.out_targets = {i: [j for _, j in out] for i, out in inner_out.items()}
        for i, out in inner_out.items():
            self.register_buffer(f"plan_out_{i}", torch.tensor([e for e, _ in out], dtype=torch.long), persistent=False)
        self.use_fast_kernels(True)

    def use_fast_kernels(self, on: bool = True) -> "DagNet":
        """Switch the hand-written CPU paths of kernels.py on (default) or off (autograd's own ops, same math)."""
        self.fast_kernels = on
        for op in [*self.nodes.values(), *self.reduces.values()]:
            op.fast_kernels = on
        return self

    def edge_strengths(self) -> torch.Tensor:
        """tanh(w) of every edge, times the edge mask (spec edge order)."""
        return torch.tanh(self.edge_weights) * self.edge_mask

    def resources_loss(self) -> torch.Tensor:
        """L_resources = Σ_e |tanh w_e| over the kept edges (paper eq. 2)."""
        return self.edge_strengths().abs().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images: SPEC §1, stage by stage."""
        # slot num_edges of the padded strengths is "no edge", always zero
        strengths = F.pad(self.edge_strengths(), (0, 1))
        # The in-stage sums; under torch.compile always autograd's own ops, which inductor fuses
        # (the hand-written backward passes gradients through Python state it cannot trace).
        fast = self.fast_kernels and not torch.compiler.is_compiling()
        sums = kernels.FastSums() if fast else kernels.PlainSums()
        # Channels-last throughout: mkldnn's convolutions with 11-22 channels are about 2x faster in it.
        outputs = {0: self.nodes["0"](x.contiguous(memory_format=torch.channels_last))}
        published: dict[int, torch.Tensor] = {}  # y_i as the in-stage sums read it

        def publish(i: int) -> None:
            if i in self.out_targets:
                published[i] = sums.publish(outputs[i], strengths[..., self.get_buffer(f"plan_out_{i}")],
                                            self.out_targets[i])

        publish(0)
        for s, stage in enumerate(self.plan):
            # Edges entering the stage from earlier stages: one matrix product of the edge strengths
            # [targets × reduce blocks] with the stacked reduce outputs.
            entering: dict[int, torch.Tensor] = {}
            if stage.blocks:
                reduced = [self.reduces[f"{i}_{k}"](outputs[i]) for i, k in stage.blocks]
                stacked = torch.stack([kernels.member_rows(r, self.members) for r in reduced])  # [blocks, B·H·W, K, c]
                weights = strengths[..., self.get_buffer(f"plan_gather_{s}")]  # [targets, blocks] or [K, …]
                if self.members == 1:
                    mixed = weights @ stacked.flatten(1)
                else:
                    mixed = torch.einsum("ktn,nmkc->tmkc", weights, stacked)
                mixed = mixed.reshape(len(stage.targets), stacked.shape[1], -1)
                entering = {j: kernels.image(m, reduced[0].shape) for j, m in zip(stage.targets, mixed.unbind(0))}
            # Then node by node: its in-stage predecessors' outputs, weighted, added to what entered.
            for j, sources in stage.nodes:
                if sources:
                    weights = strengths[..., self.get_buffer(f"plan_inner_{j}")]
                    total = sums.inner(j, weights, entering.get(j), [published[i] for i in sources])
                else:
                    total = entering[j]
                outputs[j] = self.nodes[str(j)](total)
                publish(j)
        return self.head(outputs[self.spec.output].mean(dim=(2, 3)))

    def set_edge_mask(self, keep: Sequence | None) -> None:
        """Cut the edges whose entry is False (None keeps every edge; K members: one list per member)."""
        mask = torch.ones(self.edge_mask.shape) if keep is None else torch.tensor(keep, dtype=torch.bool).float()
        if mask.shape != self.edge_mask.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} for edge weights of shape {tuple(self.edge_mask.shape)}")
        self.edge_mask.copy_(mask.to(self.edge_mask.device))

    def edge_magnitudes(self) -> list:
        """|tanh w| of every edge (unmasked), the weights written to graph.json (K members: one list each)."""
        return torch.tanh(self.edge_weights.detach()).abs().cpu().tolist()


def create_model(spec: GraphSpec, channels: int = 11, in_channels: int = 3, num_classes: int = 10,
                 members: int = 1) -> DagNet:
    """Build the network for `spec` (the single factory every command uses); members > 1: K side by side."""
    if channels < 1:
        raise SpecError(f"channels must be at least 1, got {channels}")
    if members < 1:
        raise SpecError(f"members must be at least 1, got {members}")
    return DagNet(spec, channels, in_channels, num_classes, members)


def _split_tensor(name: str, value: torch.Tensor, members: int) -> list[torch.Tensor]:
    """Member k's part of one state entry: row k of edge weights, block k of dim 0, scalars shared."""
    if name.endswith("edge_weights"):
        return list(value.unbind(0))
    if value.dim() == 0:
        return [value] * members
    return list(value.chunk(members, 0))


def split_state(state: dict[str, torch.Tensor], members: int) -> list[dict[str, torch.Tensor]]:
    """K single-network state dicts (or per-parameter optimiser entries) from a K-member one."""
    parts = {name: _split_tensor(name, value, members) for name, value in state.items()}
    return [{name: parts[name][k].clone() for name in state} for k in range(members)]


def stack_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One K-member state dict from K single-network ones (the inverse of `split_state`)."""
    stacked = {}
    for name, value in states[0].items():
        values = [s[name] for s in states]
        if name.endswith("edge_weights"):
            stacked[name] = torch.stack(values)
        elif value.dim() == 0:
            stacked[name] = value.clone()  # num_batches_tracked: the same count for every member
        else:
            stacked[name] = torch.cat(values)
    return stacked


def stack_members(models: Sequence[DagNet]) -> DagNet:
    """One K-member DagNet holding K single networks of the same graph (their weights copied)."""
    first = models[0]
    stacked = create_model(first.spec, first.channels, first.in_channels, first.num_classes, members=len(models))
    stacked.to(first.edge_weights.device, first.edge_weights.dtype)
    stacked.load_state_dict(stack_state([m.state_dict() for m in models]))
    return stacked


def split_members(model: DagNet) -> list[DagNet]:
    """K single DagNets with the weights of a K-member one."""
    singles = []
    for state in split_state(model.state_dict(), model.members):
        single = create_model(model.spec, model.channels, model.in_channels, model.num_classes)
        single.to(model.edge_weights.device, model.edge_weights.dtype)
        single.load_state_dict(state)
        singles.append(single)
    return singles


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def materialise(model: DagNet, pruned: GraphSpec) -> DagNet:
    """A physically smaller DagNet for `pruned` (a subgraph of model.spec) with the model's weights."""
    small = create_model(pruned, model.channels, model.in_channels, model.num_classes)
    index = {edge: e for e, edge in enumerate(model.spec.edges)}
    missing = [edge for edge in pruned.edges if edge not in index]
    if missing:
        raise SpecError(f"edge {missing[0]} of the pruned graph is not in the trained graph")
    small_keys = small.state_dict().keys()  # once: a state_dict walks every module
    small_state = {k: v for k, v in model.state_dict().items() if k in small_keys and k != "edge_weights"}
    small_state["edge_weights"] = model.edge_weights.detach()[[index[e] for e in pruned.edges]].clone()
    small.load_state_dict(small_state)
    return small.to(model.edge_weights.device)


def save_weights(model: DagNet, path: str | os.PathLike) -> None:
    """Save the model's state_dict atomically (load it with `load_model`)."""
    from .files import atomic_write

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: torch.save(state, f))


def load_model(
    spec: GraphSpec, weights_path: str | os.PathLike, channels: int, in_channels: int = 3, num_classes: int = 10
) -> DagNet:
    """Rebuild a model from its graph spec and a weights file (no pickled classes)."""
    model = create_model(spec, channels, in_channels, num_classes)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise SpecError(f"weights file not found: {weights_path}") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        raise SpecError(f"weights in {weights_path} do not fit the graph: {str(exc).splitlines()[0]}") from None
    return model
