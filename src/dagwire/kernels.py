"""The network's hand-written fast paths for the CPU, beside the plain math of `model.py` and tested against it.

Two hot spots of a training step are written by hand here; everything else is plain autograd:
- `batch_norm_pair`: BN(a) + BN(b) of a node's two branches on channels-last tensors, one fused
  pass with its own backward (ATen's CPU batch norm is about 3× slower on channels-last tensors
  with 11-44 channels, which would cancel the 2× of mkldnn's channels-last convolutions);
- `FastSums`: the in-stage edge sums, accumulated in place with a backward that does one
  multiply-add per edge (autograd's `sum(w * y)` allocates two tensors per edge).
`model.DagNet` uses them when its `fast_kernels` switch is on (the default) and it is not being
compiled; with the switch off it runs the same math with autograd's own ops. tests/test_model.py
checks both paths against each other, and `dagwire doctor` the fast path against float64.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def image(rows: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A [B, H·W·C] or [B·H·W, C] matrix as the channels-last image it holds (the inverse of `wide`)."""
    b, c, h, w = shape
    return rows.view(b, h, w, c).permute(0, 3, 1, 2)


class BatchNormPair(torch.autograd.Function):
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
        for x, weight in ((wide(a).to(dtype), weight_a), (wide(b).to(dtype), weight_b)):
            mean = channel_sums(x, per_row) / (x.shape[0] * per_row)
            centred = x - mean.repeat(per_row)
            var = channel_sums(centred * centred, per_row) / (x.shape[0] * per_row)
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
        return (image(out, a.shape), *stats)

    @staticmethod
    def backward(ctx, grad, *_):  # type: ignore[override]
        centred_a, invstd_a, centred_b, invstd_b, weight_a, weight_b = ctx.saved_tensors
        per_row = grad.shape[2] * grad.shape[3]
        g = wide(grad)
        count = g.shape[0] * per_row
        sum_g = channel_sums(g, per_row)
        grads = []
        for centred, invstd, weight in ((centred_a, invstd_a, weight_a), (centred_b, invstd_b, weight_b)):
            sum_gc = channel_sums(g * centred, per_row)
            scale = weight * invstd
            # d/dx of BN: scale · (g − mean(g) − x̂ · mean(g · x̂)), with x̂ = centred · invstd
            dx = torch.addcmul((-scale * sum_g / count).repeat(per_row), g, scale.repeat(per_row))
            dx.addcmul_(centred, (-scale * invstd * invstd * sum_gc / count).repeat(per_row))
            grads += [image(dx, grad.shape), invstd * sum_gc, sum_g]
        dx_a, dweight_a, dbias_a, dx_b, dweight_b, dbias_b = grads
        return dx_a, dx_b, dweight_a, dbias_a, dweight_b, dbias_b, None


def wide(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] as [B, H·W·C]: a view when x is channels-last, a copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def channel_sums(wide: torch.Tensor, per_row: int) -> torch.Tensor:
    """Per-channel sums of a [B, H·W·C] matrix: over rows first (long, vectorised), then over H·W."""
    return wide.sum(0).view(per_row, -1).sum(0)


@torch.no_grad()
def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, rows: int) -> None:
    """What nn.BatchNorm2d does to its running statistics in a training step (unbiased variance)."""
    if not bn.track_running_stats:
        return
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    bn.running_var.mul_(1 - momentum).add_(var * (rows / max(rows - 1, 1)), alpha=momentum)


def member_rows(x: torch.Tensor, members: int) -> torch.Tensor:
    """[B, K·c, H, W] as [B·H·W, K, c]: member k's channels in column block k (a view when channels-last)."""
    return wide(x).view(-1, members, x.shape[1] // members)


def sum_inputs(weights: torch.Tensor, base: torch.Tensor | None, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """base + Σ_e w_e · y_e, accumulated in place on the [B·H·W, K, c] views (weights [E] or [K, E])."""
    k = 1 if weights.dim() == 1 else weights.shape[0]
    w = weights.view(k, -1).t().unsqueeze(-1)  # w[e]: [K, 1], broadcast over [B·H·W, K, c]
    out = member_rows(inputs[0], k) * w[0] if base is None else member_rows(base, k).clone()
    for e in range(0 if base is not None else 1, len(inputs)):
        out.addcmul_(member_rows(inputs[e], k), w[e])
    return image(out.view(out.shape[0], -1), inputs[0].shape)


class InnerSum(torch.autograd.Function):
    """Node j's input, base + Σ_i w_ij · y_i over its in-stage sources i, accumulated in place.

    Autograd's `sum(w * y)` would allocate two tensors per edge and `torch.stack` would copy every
    input. The backward is split the other way round: this function only files the gradient g_j of
    the sum in `grads` (and passes it on to `base`); each source's `Publish` then computes
    dL/dy_i = Σ_j w_ij · g_j into one buffer and the weight gradients <g_j, y_i>, once every target
    has filed its g_j. That is one multiply-add per edge instead of a multiply, a temporary and an
    add. Weights are [E] for one network, or [K, E] for K member networks side by side in the
    channel dimension; tensors are handled as their [B·H·W, K, c] views, so channels-last
    activations are never copied.
    """

    @staticmethod
    def forward(ctx, weights, base, grads, node, *inputs):  # type: ignore[override]
        ctx.grads, ctx.node, ctx.has_base, ctx.sources = grads, node, base is not None, len(inputs)
        return sum_inputs(weights, base, inputs)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.grads[ctx.node] = grad
        return (None, grad if ctx.has_base else None, None, None, *[None] * ctx.sources)


class Publish(torch.autograd.Function):
    """y_i as the in-stage sums see it; its backward is those sums' share of dL/dy_i and dL/dw_i·.

    `weights` are the strengths of i's in-stage out-edges (to `targets`), [E_i] or [K, E_i].
    Autograd runs this backward only after every target's `InnerSum` backward (they take its
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
        target_grads = [member_rows(ctx.grads[j], k) for j in ctx.targets]
        total = None if grad is None else member_rows(grad, k).clone()
        for e, g in enumerate(target_grads):
            total = g * w[e] if total is None else total.addcmul_(g, w[e])
        grad_w = None
        if ctx.needs_input_grad[1]:
            rows = member_rows(y, k)  # under bf16 autocast, gradients and activations may differ in dtype
            if k == 1:
                flat = rows.reshape(-1)
                grad_w = torch.stack([torch.dot(g.reshape(-1).to(flat.dtype), flat) for g in target_grads])
            else:
                grad_w = torch.stack([torch.einsum("mkc,mkc->k", g.to(rows.dtype), rows) for g in target_grads], 1)
            grad_w = grad_w.to(weights.dtype)
        return image(total.view(total.shape[0], -1), y.shape).to(y.dtype), grad_w, None, None


def batch_norm_pair(a: torch.Tensor, b: torch.Tensor, bn_a: nn.BatchNorm2d, bn_b: nn.BatchNorm2d) -> torch.Tensor:
    """bn_a(a) + bn_b(b) in training mode, with the running statistics updated as nn.BatchNorm2d does."""
    out, *stats = BatchNormPair.apply(a, b, bn_a.weight, bn_a.bias, bn_b.weight, bn_b.bias, bn_a.eps)
    rows = a.numel() // a.shape[1]
    update_running_stats(bn_a, stats[0], stats[1], rows)
    update_running_stats(bn_b, stats[2], stats[3], rows)
    return out


class PlainSums:
    """The in-stage edge sums with autograd's own ops (what torch.compile fuses by itself)."""

    def publish(self, y: torch.Tensor, weights: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """y_i as the sums read it: y_i itself."""
        return y

    def inner(self, node: int, weights: torch.Tensor, base: torch.Tensor | None,
              inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """base + Σ_e w_e · y_e."""
        return sum_inputs(weights, base, inputs)


class FastSums(PlainSums):
    """The in-stage edge sums with the hand-written backward of `InnerSum` and `Publish` (one per forward)."""

    def __init__(self) -> None:
        self.node_grads: dict[int, torch.Tensor] = {}  # filled in backward by InnerSum, read by Publish

    def publish(self, y: torch.Tensor, weights: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """y_i wrapped so that its backward gathers dL/dy_i from the targets' filed gradients."""
        return Publish.apply(y, weights, self.node_grads, targets)

    def inner(self, node: int, weights: torch.Tensor, base: torch.Tensor | None,
              inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """base + Σ_e w_e · y_e, accumulated in place; its backward files g_node for the Publishes."""
        return InnerSum.apply(weights, base, self.node_grads, node, *inputs)
