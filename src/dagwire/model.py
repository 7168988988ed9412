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
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import counts
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the op."""
        a, b = self.conv3(F.relu(x)), pointwise(self.conv1, x)
        if not (self.training and a.device.type == "cpu") or torch.compiler.is_compiling():
            return self.bn3(a) + self.bn1(b)
        out, *stats = _BatchNormPair.apply(a, b, self.bn3.weight, self.bn3.bias, self.bn1.weight, self.bn1.bias,
                                           self.bn3.eps)
        rows = a.numel() // a.shape[1]
        _update_running_stats(self.bn3, stats[0], stats[1], rows)
        _update_running_stats(self.bn1, stats[2], stats[3], rows)
        return out


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The 1×1 convolution `conv` of x, its stride taken by slicing: conv1x1(x[..., ::s, ::s]).

    Never oneDNN's strided 1×1 kernel: on channels-last inputs with fewer input channels than its
    channel block (8 with AVX2, 16 with AVX-512) its weight gradient writes past its workspace
    (oneDNN issue 6035): hangs, heap corruption, or gradients off by 40-100 %. Slicing first is
    the same math and less work; `dagwire doctor` and tests/test_kernels.py check it on every C.
    """
    s = conv.stride
    if s != (1, 1):
        x = x[:, :, ::s[0], ::s[1]]
    return F.conv2d(x, conv.weight, conv.bias, groups=conv.groups)


def _image(rows: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A [B, H·W·C] or [B·H·W, C] matrix as the channels-last image it holds (the inverse of `_wide`)."""
    b, c, h, w = shape
    return rows.view(b, h, w, c).permute(0, 3, 1, 2)


class _BatchNormPair(torch.autograd.Function):
    """BN(a) + BN(b) in training mode, for channels-last a and b on the CPU.

    Written by hand because ATen's CPU batch norm is about 3× slower on channels-last tensors with
    few channels (11–44 here) than on NCHW ones, while mkldnn's convolutions are about 2× faster in
    channels-last: this keeps the fast convolutions without the slow batch norm. It works on the
    [B, H·W·C] view, where per-channel vectors repeated H·W times broadcast along rows only (on the
    [B·H·W, C] view ATen's loops would run 11 elements at a time), and fuses the two norms and
    their sum. Returns the output and, for the running statistics, each norm's batch mean and
    biased variance.
    """

    @staticmethod
    def forward(ctx, a, b, weight_a, bias_a, weight_b, bias_b, eps):  # type: ignore[override]
        per_row = a.shape[2] * a.shape[3]  # H·W copies of each channel in a row of the wide view
        dtype = torch.promote_types(a.dtype, weight_a.dtype)  # statistics in fp32 under bf16 autocast
        out, saved, stats = None, [], []
        for x, weight in ((_wide(a).to(dtype), weight_a), (_wide(b).to(dtype), weight_b)):
            mean = _channel_sums(x, per_row) / (x.shape[0] * per_row)
            centred = x - mean.repeat(per_row)
            var = _channel_sums(centred * centred, per_row) / (x.shape[0] * per_row)
            invstd = torch.rsqrt(var + eps)
            scale = (weight * invstd).repeat(per_row)
            if out is None:
                out = torch.addcmul((bias_a + bias_b).repeat(per_row), centred, scale)
            else:
                out.addcmul_(centred, scale)
            saved += [centred, invstd]
            stats += [mean, var]
        ctx.save_for_backward(*saved, weight_a, weight_b)
        ctx.mark_non_differentiable(*stats)
        return (_image(out, a.shape), *stats)

    @staticmethod
    def backward(ctx, grad, *_):  # type: ignore[override]
        centred_a, invstd_a, centred_b, invstd_b, weight_a, weight_b = ctx.saved_tensors
        per_row = grad.shape[2] * grad.shape[3]
        g = _wide(grad)
        count = g.shape[0] * per_row
        sum_g = _channel_sums(g, per_row)
        grads = []
        for centred, invstd, weight in ((centred_a, invstd_a, weight_a), (centred_b, invstd_b, weight_b)):
            sum_gc = _channel_sums(g * centred, per_row)
            scale = weight * invstd
            # d/dx of BN: scale · (g − mean(g) − x̂ · mean(g · x̂)), with x̂ = centred · invstd
            dx = torch.addcmul((-scale * sum_g / count).repeat(per_row), g, scale.repeat(per_row))
            dx.addcmul_(centred, (-scale * invstd * invstd * sum_gc / count).repeat(per_row))
            grads += [_image(dx, grad.shape), invstd * sum_gc, sum_g]
        dx_a, dweight_a, dbias_a, dx_b, dweight_b, dbias_b = grads
        return dx_a, dx_b, dweight_a, dbias_a, dweight_b, dbias_b, None


def _wide(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] as [B, H·W·C]: a view when x is channels-last, a copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _channel_sums(wide: torch.Tensor, per_row: int) -> torch.Tensor:
    """Per-channel sums of a [B, H·W·C] matrix: over rows first (long, vectorised), then over H·W."""
    return wide.sum(0).view(per_row, -1).sum(0)


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, rows: int) -> None:
    """What nn.BatchNorm2d does to its running statistics in a training step (unbiased variance)."""
    if not bn.track_running_stats:
        return
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    bn.running_var.mul_(1 - momentum).add_(var * (rows / max(rows - 1, 1)), alpha=momentum)


def _member_rows(x: torch.Tensor, members: int) -> torch.Tensor:
    """[B, K·c, H, W] as [B·H·W, K, c]: member k's channels in column block k (a view when channels-last)."""
    return _wide(x).view(-1, members, x.shape[1] // members)


def _sum_inputs(weights: torch.Tensor, base: torch.Tensor | None, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """base + Σ_e w_e · y_e, accumulated in place on the [B·H·W, K, c] views (weights [E] or [K, E])."""
    k = 1 if weights.dim() == 1 else weights.shape[0]
    w = weights.view(k, -1).t().unsqueeze(-1)  # w[e]: [K, 1], broadcast over [B·H·W, K, c]
    out = _member_rows(inputs[0], k) * w[0] if base is None else _member_rows(base, k).clone()
    for e in range(0 if base is not None else 1, len(inputs)):
        out.addcmul_(_member_rows(inputs[e], k), w[e])
    return _image(out.view(out.shape[0], -1), inputs[0].shape)


class _InnerSum(torch.autograd.Function):
    """Node j's input, base + Σ_i w_ij · y_i over its in-stage sources i, accumulated in place.

    Autograd's `sum(w * y)` would allocate two tensors per edge and `torch.stack` would copy every
    input. The backward is split the other way round: this function only files the gradient g_j of
    the sum in `grads` (and passes it on to `base`); each source's `_Publish` then computes
    dL/dy_i = Σ_j w_ij · g_j into one buffer and the weight gradients <g_j, y_i>, once every target
    has filed its g_j. That is one multiply-add per edge instead of a multiply, a temporary and an
    add. Weights are [E] for one network, or [K, E] for K member networks side by side in the
    channel dimension; tensors are handled as their [B·H·W, K, c] views, so channels-last
    activations are never copied.
    """

    @staticmethod
    def forward(ctx, weights, base, grads, node, *inputs):  # type: ignore[override]
        ctx.grads, ctx.node, ctx.has_base, ctx.sources = grads, node, base is not None, len(inputs)
        return _sum_inputs(weights, base, inputs)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.grads[ctx.node] = grad
        return (None, grad if ctx.has_base else None, None, None, *[None] * ctx.sources)


class _Publish(torch.autograd.Function):
    """y_i as the in-stage sums see it; its backward is those sums' share of dL/dy_i and dL/dw_i·.

    `weights` are the strengths of i's in-stage out-edges (to `targets`), [E_i] or [K, E_i].
    Autograd runs this backward only after every target's `_InnerSum` backward (they take its
    output as input), so all the g_j it needs are filed in `grads` by then.
    """

    @staticmethod
    def forward(ctx, y, weights, grads, targets):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y, weights)
        ctx.grads, ctx.targets = grads, targets
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        y, weights = ctx.saved_tensors
        k = 1 if weights.dim() == 1 else weights.shape[0]
        w = weights.view(k, -1).t().unsqueeze(-1)
        target_grads = [_member_rows(ctx.grads[j], k) for j in ctx.targets]
        total = None if grad is None else _member_rows(grad, k).clone()
        for e, g in enumerate(target_grads):
            total = g * w[e] if total is None else total.addcmul_(g, w[e])
        grad_w = None
        if ctx.needs_input_grad[1]:
            rows = _member_rows(y, k)  # under bf16 autocast, gradients and activations may differ in dtype
            if k == 1:
                flat = rows.reshape(-1)
                grad_w = torch.stack([torch.dot(g.reshape(-1).to(flat.dtype), flat) for g in target_grads])
            else:
                grad_w = torch.stack([torch.einsum("mkc,mkc->k", g.to(rows.dtype), rows) for g in target_grads], 1)
            grad_w = grad_w.to(weights.dtype)
        return _image(total.view(total.shape[0], -1), y.shape).to(y.dtype), grad_w, None, None


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

        # Execution plan, stage by stage. For the edges entering stage s: the reduce blocks
        # (source, jump) to stack, the target nodes, and a [targets × sources] matrix of edge
        # indices (spec.num_edges, an always-zero slot, where there is no edge).
        self._stages = []
        for s in range(len(spec.stages)):
            nodes = [j for j in active if j > 0 and spec.stage_of(j) == s]
            entering = cross.get(s, [])
            blocks = sorted({(i, s - spec.stage_of(i)) for _, i, _ in entering})
            targets = sorted({j for _, _, j in entering})
            gather = torch.full((len(targets), len(blocks)), spec.num_edges, dtype=torch.long)
            for e, i, j in entering:
                gather[targets.index(j), blocks.index((i, s - spec.stage_of(i)))] = e
            node_plan = [
                (j, torch.tensor([e for e, _ in inner.get(j, [])], dtype=torch.long), [i for _, i in inner.get(j, [])])
                for j in nodes
            ]
            self._stages.append((blocks, targets, gather, node_plan))
        # Sources of in-stage edges: the edges leaving each, and their targets (see _Publish).
        self._publish = {
            i: (torch.tensor([e for e, _ in out], dtype=torch.long), [j for _, j in out]) for i, out in inner_out.items()
        }

    def edge_strengths(self) -> torch.Tensor:
        """tanh(w) of every edge, times the edge mask (spec edge order)."""
        return torch.tanh(self.edge_weights) * self.edge_mask

    def resources_loss(self) -> torch.Tensor:
        """L_resources = Σ_e |tanh w_e| over the kept edges (paper eq. 2)."""
        return self.edge_strengths().abs().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images."""
        strengths = self.edge_strengths()
        padded = F.pad(strengths, (0, 1))  # slot num_edges: "no edge", always zero
        # Channels-last throughout: mkldnn's convolutions with 11-22 channels are about 2x faster in it.
        outputs: dict[int, torch.Tensor] = {0: self.nodes["0"](x.contiguous(memory_format=torch.channels_last))}
        published: dict[int, torch.Tensor] = {}  # what the in-stage sums read of each source
        node_grads: dict[int, torch.Tensor] = {}  # filled in backward by _InnerSum, read by _Publish

        # Under torch.compile the sums are plain autograd ops, which inductor fuses itself: the
        # hand-written backward below passes gradients through Python state it cannot trace.
        compiling = torch.compiler.is_compiling()

        def publish(i: int) -> None:
            if compiling:
                published[i] = outputs[i]
            elif i in self._publish:
                edge_index, targets = self._publish[i]
                weights = padded[..., edge_index.to(x.device)]
                published[i] = _Publish.apply(outputs[i], weights, node_grads, targets)

        publish(0)
        for blocks, targets, gather, node_plan in self._stages:
            entering: dict[int, torch.Tensor] = {}
            if blocks:
                reduced = [self.reduces[f"{i}_{k}"](outputs[i]) for i, k in blocks]
                stacked = torch.stack([_member_rows(r, self.members) for r in reduced])  # [blocks, B·H·W, K, c]
                weights = padded[..., gather.to(x.device)]  # [targets, blocks], or [K, targets, blocks]
                if self.members == 1:
                    mixed = weights @ stacked.flatten(1)
                else:
                    mixed = torch.einsum("ktn,nmkc->tmkc", weights, stacked)
                mixed = mixed.reshape(len(targets), stacked.shape[1], -1)
                entering = {j: _image(m, reduced[0].shape) for j, m in zip(targets, mixed.unbind(0))}
            for j, edge_index, sources in node_plan:
                if sources:
                    weights = padded[..., edge_index.to(x.device)]
                    inputs = [published[i] for i in sources]
                    total = (_sum_inputs(weights, entering.get(j), inputs) if compiling
                             else _InnerSum.apply(weights, entering.get(j), node_grads, j, *inputs))
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
    state = model.state_dict()
    small_state = {k: v for k, v in state.items() if k in small.state_dict() and k != "edge_weights"}
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
