"""Closed-form sizes of the network built from a spec: parameters and FLOPs, without torch.

Every op of the network (SPEC §1) is `BN(Conv3x3(ReLU(x))) + BN(Conv1x1(x))` from c_in to c_out
channels, which holds 10·c_in·c_out conv weights and 4·c_out BN weights. Nodes of stage s work at
C·2^s channels; reduce block (i, k) maps stage(i) to stage(i)+k with stride 2^k; the head is
Linear(C·2^(S-1), classes) with bias; every edge holds one scalar.
"""

from __future__ import annotations

import math

from .spec import GraphSpec


def op_parameters(c_in: int, c_out: int) -> int:
    """Trainable parameters of one node or reduce op (3x3 and 1x1 convs, two BNs)."""
    return 10 * c_in * c_out + 4 * c_out


def stage_channels(channels: int, stage: int) -> int:
    """Channel count of a stage."""
    return channels * 2**stage


def reduce_blocks(spec: GraphSpec) -> list[tuple[int, int]]:
    """The (source node, stage jump k) reduce blocks that some edge of `spec` uses, sorted."""
    blocks = set()
    for i, j in spec.edges:
        k = spec.stage_of(j) - spec.stage_of(i)
        if k > 0:
            blocks.add((i, k))
    return sorted(blocks)


def parameter_count(spec: GraphSpec, channels: int, in_channels: int = 3, num_classes: int = 10) -> int:
    """Trainable parameters of the network built from `spec` (the module's count equals this)."""
    total = 0
    for node in spec.active_nodes():
        c = stage_channels(channels, spec.stage_of(node))
        total += op_parameters(in_channels if node == 0 else c, c)
    for i, k in reduce_blocks(spec):
        s = spec.stage_of(i)
        total += op_parameters(stage_channels(channels, s), stage_channels(channels, s + k))
    head_in = stage_channels(channels, spec.stage_of(spec.output))
    total += head_in * num_classes + num_classes
    return total + spec.num_edges


def parameter_quadratic(spec: GraphSpec, in_channels: int = 3, num_classes: int = 10) -> tuple[int, int, int]:
    """Coefficients (a, b, c) with parameter_count(spec, C) = a·C² + b·C + c for every C."""
    p1 = parameter_count(spec, 1, in_channels, num_classes)
    p2 = parameter_count(spec, 2, in_channels, num_classes)
    p3 = parameter_count(spec, 3, in_channels, num_classes)
    a2 = p3 - 2 * p2 + p1  # second difference = 2a
    a = a2 // 2
    b = p2 - p1 - 3 * a
    c = p1 - a - b
    return a, b, c


def fit_channels(spec: GraphSpec, target: int, in_channels: int = 3, num_classes: int = 10) -> int:
    """The C >= 1 whose parameter count is nearest to `target` (ties go to the smaller C)."""
    a, b, c = parameter_quadratic(spec, in_channels, num_classes)
    root = (-b + math.sqrt(max(b * b - 4 * a * (c - target), 0.0))) / (2 * a) if a else 1.0
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    return min(sorted(candidates), key=lambda ch: abs(parameter_count(spec, ch, in_channels, num_classes) - target))


def _op_macs(c_in: int, c_out: int, out_hw: int) -> int:
    return 10 * c_in * c_out * out_hw * out_hw


def flops_per_image(
    spec: GraphSpec, channels: int, image_size: int = 32, in_channels: int = 3, num_classes: int = 10
) -> int:
    """Forward FLOPs of one image (2 × multiply-adds of convolutions, edge sums and head)."""
    macs = 0
    for node in spec.active_nodes():
        s = spec.stage_of(node)
        c, hw = stage_channels(channels, s), image_size // 2**s
        macs += _op_macs(in_channels if node == 0 else c, c, hw)
    for i, k in reduce_blocks(spec):
        s = spec.stage_of(i)
        macs += _op_macs(stage_channels(channels, s), stage_channels(channels, s + k), image_size // 2 ** (s + k))
    for _, j in spec.edges:  # each edge scales and adds its input once
        s = spec.stage_of(j)
        macs += stage_channels(channels, s) * (image_size // 2**s) ** 2
    macs += stage_channels(channels, spec.stage_of(spec.output)) * num_classes
    return 2 * macs
