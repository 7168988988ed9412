"""The doctor's cases: which networks `dagwire doctor` checks, and how one case is checked.

A check trains nothing: it builds a small complete DAG in float32 on the device, exactly as
training runs it (channels-last, the hand-written fast paths, `--batch-seeds` members), and
compares the logits and the gradient of every parameter (edge weights included) with the same
network's plain math in float64 NCHW on the CPU (`plain_forward`), which shares none of the fast
kernels. doctor.py runs the cases in child processes and caches the verdict.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from . import spec as specs

# fp32 against float64 on a tiny network is about 1e-6; the kernel bug gives 0.4-1.0.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
# A gradient is measured against its own largest entry, or this fraction of the largest gradient
# of the network where that is larger (see `relative_error`).
GRADIENT_FLOOR = 1e-2


@dataclass(frozen=True)
class Case:
    """One network to check: C, stage count (strides 1, 2, 4 … appear with 2+ stages), members, precision."""

    channels: int
    stages: int
    members: int = 1
    precision: str = "fp32"

    @property
    def name(self) -> str:
        """A label a person can read: 'C=6 stages=3 members=2 fp32'."""
        return f"C={self.channels} stages={self.stages} members={self.members} {self.precision}"


def quick_cases() -> list[Case]:
    """The quick form: C below, at and above both oneDNN channel blocks (8, 16), 3 stages, 1 and 2 members."""
    return [Case(c, 3, m) for c in (1, 3, 6, 8, 11) for m in (1, 2)] + [Case(6, 3, 1, "bf16")]


def full_cases() -> list[Case]:
    """Every C from 1 to 16 at 1, 2 and 3 stages, with and without a second member."""
    return [Case(c, s, m) for c in range(1, 17) for s in (1, 2, 3) for m in (1, 2)]


# --- the plain math ---------------------------------------------------------------------------------

def plain_forward(model: torch.nn.Module, x: torch.Tensor,
                  relu_masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """SPEC §1 written edge by edge with functional ops on a single network's own parameters.

    No fast path, no channels-last, no hand-written backward: strided convolutions with their
    stride argument, as the SPEC states them. Run it in float64, where no oneDNN kernel is used.
    `relu_masks` (op name, e.g. "nodes.6" or "reduces.6_1" → where its input was > 0) makes every
    ReLU take the branch another run took (`recording_relu_masks`): see there why.
    """
    p = dict(model.named_parameters())
    g = model.spec

    def op(prefix: str, h: torch.Tensor, stride: int) -> torch.Tensor:
        rectified = F.relu(h) if relu_masks is None else h * relu_masks[prefix].to(h)
        a = F.conv2d(rectified, p[f"{prefix}.conv3.weight"], stride=stride, padding=1)
        a = F.batch_norm(a, None, None, p[f"{prefix}.bn3.weight"], p[f"{prefix}.bn3.bias"], training=True)
        b = F.conv2d(h, p[f"{prefix}.conv1.weight"], stride=stride)
        b = F.batch_norm(b, None, None, p[f"{prefix}.bn1.weight"], p[f"{prefix}.bn1.bias"], training=True)
        return a + b

    strengths = torch.tanh(p["edge_weights"]) * model.edge_mask
    out = {0: op("nodes.0", x, 1)}
    for j in g.active_nodes()[1:]:
        total = 0
        for e, (i, jj) in enumerate(g.edges):
            if jj != j:
                continue
            k = g.stage_of(j) - g.stage_of(i)
            source = out[i] if k == 0 else op(f"reduces.{i}_{k}", out[i], 2**k)
            total = total + strengths[e] * source
        out[j] = op(f"nodes.{j}", total, 1)
    return F.linear(out[g.output].mean(dim=(2, 3)), p["head.weight"], p["head.bias"])


@contextmanager
def recording_relu_masks(model: torch.nn.Module) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Record, per member, where each op's ReLU input was > 0 while `model` runs forward.

    A gradient through ReLU jumps where its input crosses 0, and an input within float32 rounding
    of 0 (a node's output is a sum of two batch norms, so one of its thousands of entries can be
    2e-6) can fall on the other side in float64. The float64 truth then differs from a correct
    float32 gradient by several per cent: seen in a 12-node C = 3 network, where one such entry of
    node 6 put 2 % (12 % on another CPU) into every gradient behind it, taken at first for a
    kernel bug. Giving the float64 math the float32 run's branches compares the kernels, not the
    kink. Member k's masks are channel block k of the K-member network's.
    """
    recorded: dict[str, torch.Tensor] = {}
    hooks = []
    for group in ("nodes", "reduces"):
        for key, op in getattr(model, group).items():
            hooks.append(op.register_forward_pre_hook(
                lambda _op, inputs, name=f"{group}.{key}": recorded.__setitem__(name, (inputs[0] > 0).detach().cpu())))
    per_member: list[dict[str, torch.Tensor]] = []
    try:
        yield per_member
    finally:
        for hook in hooks:
            hook.remove()
    k = getattr(model, "members", 1)
    per_member.extend({name: m.chunk(k, 1)[i] for name, m in recorded.items()} for i in range(k))


def relative_error(got: torch.Tensor, want: torch.Tensor, floor: float = 0.0) -> float:
    """max |got − want| / max(max |want|, floor); inf when got holds a NaN.

    The floor matters for gradients that are zero in exact arithmetic: batch norm makes a node
    blind to the scale of its convolution's weights, so with one channel that weight's gradient
    is rounding noise, and noise over noise is no measure of a kernel.
    """
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if want.numel() == 0:
        return 0.0
    diff = float((got - want).abs().max())
    if diff != diff:
        return float("inf")
    scale = max(float(want.abs().max()), floor)
    return diff / scale if scale > 0 else diff


def compare_with_float64(case: Case, device: str = "cpu", batch: int = 4, image: int = 16) -> dict[str, float]:
    """Relative errors against float64: the whole network in fp32, each convolution in bf16.

    In bf16 the whole network's gradients differ from float64 by 20-40 % through rounding alone
    (8 mantissa bits, compounded through batch norms), so no tolerance there would tell a broken
    kernel from rounding; each convolution on its own stays within 1 %.
    """
    if case.precision == "bf16":
        return _convolution_errors(case, device, batch, image)
    return _network_errors(case, device, batch, image)


def _convolution_errors(case: Case, device: str, batch: int, image: int) -> dict[str, float]:
    """Each convolution of the case's network, as the network calls it, against float64 NCHW."""
    from .model import create_model, pointwise
    from .train import autocast

    torch.manual_seed(case.channels * 100 + case.stages * 10 + case.members)
    model = create_model(specs.complete(3 * case.stages, case.stages), case.channels, members=case.members)
    dev = torch.device(device)
    errors: dict[str, float] = {}
    for name, op in [*model.nodes.items(), *(("r" + k, v) for k, v in model.reduces.items())]:
        x = torch.randn(batch, op.conv3.in_channels, image, image)
        for label, conv in (("conv3", op.conv3), ("conv1", op.conv1)):
            stride, pad = conv.stride[0], conv.padding[0]
            ref_w = conv.weight.detach().double().requires_grad_()
            ref_x = x.double().requires_grad_()
            want = F.conv2d(ref_x, ref_w, stride=stride, padding=pad, groups=conv.groups)
            probe = torch.randn_like(want)
            want_grads = torch.autograd.grad((want * probe).sum(), [ref_x, ref_w])
            dev_conv = conv.to(dev)
            dx = x.to(dev).contiguous(memory_format=torch.channels_last).requires_grad_()
            with autocast(dev, case.precision):
                got = dev_conv(dx) if label == "conv3" else pointwise(dev_conv, dx)
            got_grads = torch.autograd.grad((got.float() * probe.float().to(dev)).sum(), [dx, dev_conv.weight])
            key = f"{name}.{label}"
            errors[key] = relative_error(got, want)
            errors[key + ".input_grad"] = relative_error(got_grads[0], want_grads[0])
            errors[key + ".weight_grad"] = relative_error(got_grads[1], want_grads[1])
    return errors


def _network_errors(case: Case, device: str, batch: int, image: int) -> dict[str, float]:
    """The logits and every parameter's gradient of the fp32 network against the float64 plain math."""
    from .model import create_model, split_members, stack_state
    from .train import autocast

    torch.manual_seed(case.channels * 100 + case.stages * 10 + case.members)
    nodes = 3 * case.stages  # three nodes a stage: in-stage sums and a reduce block of every jump
    spec = specs.complete(nodes, case.stages)
    model = create_model(spec, case.channels, members=case.members)
    with torch.no_grad():  # distinct edge weights, so a swapped edge would show
        model.edge_weights.copy_(torch.linspace(-1.5, 1.5, model.edge_weights.numel()).view_as(model.edge_weights))
    x = torch.randn(batch, 3 * case.members, image, image)
    probe = torch.randn(batch, 10 * case.members)
    singles = [m.double() for m in split_members(model)] if case.members > 1 else [_double_copy(model)]

    dev = torch.device(device)
    model.to(dev).train()
    with autocast(dev, case.precision), recording_relu_masks(model) as masks:
        logits = model(x.to(dev))
    loss = (logits.float() * probe.to(dev)).sum() + model.resources_loss()
    grads = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))

    errors: dict[str, float] = {}
    want_logits, want_grads = [], []
    for k, single in enumerate(singles):
        xk = x[:, 3 * k:3 * (k + 1)].double()
        out = plain_forward(single, xk, masks[k])
        lossk = (out * probe[:, 10 * k:10 * (k + 1)].double()).sum() + torch.tanh(single.edge_weights).abs().sum()
        want_logits.append(out)
        want_grads.append(dict(zip([n for n, _ in single.named_parameters()],
                                   torch.autograd.grad(lossk, list(single.parameters())))))
    errors["logits"] = relative_error(logits.float(), torch.cat(want_logits, 1))
    stacked = want_grads[0] if case.members == 1 else stack_state(want_grads)
    floor = GRADIENT_FLOOR * max(float(g.abs().max()) for g in stacked.values())
    for name, got in grads.items():
        errors[name] = relative_error(got, stacked[name], floor)
    return errors


def _double_copy(model: torch.nn.Module) -> torch.nn.Module:
    from .model import create_model

    copy = create_model(model.spec, model.channels, model.in_channels, model.num_classes)
    copy.load_state_dict(model.state_dict())
    return copy.double()
