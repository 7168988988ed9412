"""`dagwire doctor`: is the network's math right on this machine's kernels?

A result that depends on an upstream kernel must not be silently wrong. oneDNN's strided 1×1
convolution, for one, corrupts memory and weight gradients below its channel block on AVX2 CPUs
(see `model.pointwise`); a kernel can also hang or crash the process. So every check here runs in
a child process with a deadline: the parent names the case that hung or crashed and goes on with
the rest in a fresh child.

A check trains nothing: it builds a small complete DAG in float32 on the device, exactly as
training runs it (channels-last, the hand-written fast paths, `--batch-seeds` members), and
compares the logits and the gradient of every parameter (edge weights included) with the same
network's plain math in float64 NCHW on the CPU (`plain_forward`), which shares none of the fast
kernels. The quick form runs once per machine, device and code version; `train` and `sweep`
call it before their first epoch and cache the verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from . import spec as specs
from .errors import DagwireError
from .files import atomic_write_text

# fp32 against float64 on a tiny network is about 1e-6; the kernel bug gives 0.4-1.0.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
CASE_TIMEOUT_S = 60.0
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


@dataclass
class Outcome:
    """A case's verdict: ok, wrong (numbers off), crashed or hung; `error` is the worst relative error."""

    case: Case
    status: str
    error: float | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the case ran and agreed with float64."""
        return self.status == "ok"

    def line(self) -> str:
        """One line for people."""
        err = "" if self.error is None else f"  max rel. error {self.error:.1e}"
        tail = f"  ({self.detail})" if self.detail else ""
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.case.name:<32}{err}{tail}"


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


# --- children, deadlines ----------------------------------------------------------------------------

def _child_main(argv: Sequence[str]) -> None:
    """In the child: run each case given as JSON on argv, announcing it first, then its errors."""
    device, threads, cases = argv[0], int(argv[1]), [Case(**c) for c in json.loads(argv[2])]
    if threads > 0:
        torch.set_num_threads(threads)
    for index, case in enumerate(cases):
        print(f"START {index}", flush=True)
        errors = compare_with_float64(case, device)
        print(f"RESULT {index} {json.dumps(errors)}", flush=True)


def run_cases(cases: Sequence[Case], device: str = "cpu", threads: int = 0, timeout: float = CASE_TIMEOUT_S,
              on_outcome: Callable[[Outcome], None] | None = None, preamble: str = "") -> list[Outcome]:
    """Run every case in child processes; a case that crashes or outlives `timeout` is named and skipped.

    `preamble` is Python the child runs first (the tests use it to put a broken kernel back).
    """
    outcomes: list[Outcome] = []
    pending = list(cases)
    while pending:
        done = _run_child(pending, device, threads, timeout, outcomes, on_outcome, preamble)
        pending = pending[done:]
    return outcomes


def _run_child(cases: Sequence[Case], device: str, threads: int, timeout: float, outcomes: list[Outcome],
               on_outcome: Callable[[Outcome], None] | None, preamble: str) -> int:
    """One child over `cases` until it ends or fails; returns how many cases it settled."""
    payload = json.dumps([asdict(c) for c in cases])
    code = f"{preamble}\nimport sys\nfrom dagwire.doctor import _child_main\n_child_main(sys.argv[1:])"
    command = [sys.executable, "-c", code, device, str(threads), payload]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    errors_file = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child can never block on it
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors_file, env=env)
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    settled, current, pending = 0, None, b""
    deadline = time.monotonic() + timeout + 30  # the first case also pays for importing torch

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                child.kill()
                child.wait()
                index = current if current is not None else settled
                record(Outcome(cases[index], "hung", detail=f"no answer in {timeout:.0f} s; killed"))
                return index + 1
            if not selector.select(timeout=min(left, 1.0)):
                continue
            # Raw reads, not readline: a buffered reader could hold a line the selector never reports.
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:  # the child is gone
                code = child.wait()
                if settled == len(cases):
                    return settled
                index = current if current is not None else settled
                errors_file.seek(0)
                stderr = errors_file.read().decode(errors="replace").strip().splitlines()
                why = f"signal {-code}" if code < 0 else f"exit code {code}"
                last = stderr[-1][:160] if stderr else ""
                record(Outcome(cases[index], "crashed", detail=f"{why}{': ' + last if last else ''}"))
                return index + 1
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                kind, _, rest = line.decode().strip().partition(" ")
                if kind == "START":
                    current = int(rest)
                    deadline = time.monotonic() + timeout + (30 if current == 0 else 0)
                elif kind == "RESULT":
                    index, _, errors_json = rest.partition(" ")
                    errors = json.loads(errors_json)
                    case = cases[int(index)]
                    worst = max(errors.values())
                    where = max(errors, key=errors.get)
                    status = "ok" if worst <= TOLERANCE[case.precision] else "wrong"
                    record(Outcome(case, status, worst, "" if status == "ok" else f"worst: {where}"))
                    settled, current = int(index) + 1, None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        errors_file.close()
        selector.close()


# --- facts, cache -----------------------------------------------------------------------------------

def kernel_facts(device: str = "cpu", threads: int = 0) -> dict[str, str]:
    """What decides which kernels run: torch, device, CPU ISA, oneDNN / cuDNN versions, threads."""
    facts = {
        "torch": torch.__version__,
        "device": device,
        "cpu": _cpu_name(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "onednn": _onednn_version(),
        "threads": str(threads if threads > 0 else torch.get_num_threads()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
        facts["cudnn"] = str(torch.backends.cudnn.version())
    return facts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _onednn_version() -> str:
    for line in torch.__config__.show().splitlines():  # "  - Intel(R) MKL-DNN v3.12.0 (Git Hash …)"
        if "MKL-DNN" in line or "oneDNN" in line:
            words = [w for w in line.split() if w.startswith("v") and w[1:2].isdigit()]
            return words[0] if words else line.strip(" -")
    return "none" if not torch.backends.mkldnn.is_available() else "unknown"


def _code_version() -> str:
    """A digest of the code a check exercises: a change to the network re-runs the doctor."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("model.py", "kernels.py", "doctor.py", "spec.py", "counts.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def _cache_file(facts: dict[str, str]) -> Path:
    from .data import cache_dir

    key = hashlib.sha256(json.dumps({**facts, "code": _code_version()}, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "doctor" / f"{key}.json"


def ensure_healthy(device: str = "cpu", threads: int = 0, say: Callable[[str], None] | None = None) -> None:
    """The quick form, once per machine, device, thread count and code version; DagwireError if it fails."""
    facts = kernel_facts(device, threads)
    path = _cache_file(facts)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if cached is None:
        if say is not None:
            say(f"dagwire doctor: checking the network's kernels on {device} (once per machine) ...")
        cached = _save_verdict(facts, run_cases(quick_cases(), device, threads))
    if not cached["ok"]:
        first = cached["failed"][0].split("  ", 1)[-1].strip()
        raise DagwireError(
            f"the network's kernels give wrong results on this machine ({first}); run 'dagwire doctor' for "
            f"details, or pass --skip-doctor to train anyway"
        )


def doctor(device: str = "cpu", full: bool = False, threads: int = 0,
           say: Callable[[str], None] = print) -> bool:
    """Print the facts and one line per check; True when every check passed (and cache that verdict)."""
    facts = kernel_facts(device, threads)
    for key, value in facts.items():
        say(f"{key + ':':<10}{value}")
    started = time.perf_counter()
    outcomes = run_cases(full_cases() if full else quick_cases(), device, threads, on_outcome=lambda o: say(o.line()))
    failed = [o for o in outcomes if not o.ok]
    say(f"{len(outcomes) - len(failed)}/{len(outcomes)} checks passed in {time.perf_counter() - started:.1f} s")
    if not full:  # the quick form's verdict serves train and sweep too
        _save_verdict(facts, outcomes)
    return not failed


def _save_verdict(facts: dict[str, str], outcomes: Sequence[Outcome]) -> dict:
    """Cache the quick form's verdict for these facts; return it."""
    failed = [o for o in outcomes if not o.ok]
    verdict = {"facts": facts, "ok": not failed, "failed": [o.line() for o in failed]}
    try:
        atomic_write_text(_cache_file(facts), json.dumps(verdict, indent=1))
    except OSError:
        pass  # an unwritable cache only costs a re-check next time
    return verdict


def check_before_training(device: str, skip: bool, threads: int = 0) -> None:
    """Before training: the quick form, once per machine and device (cached); `skip`: a warning instead."""
    import click

    from .train import resolve_device

    resolve_device(device)
    if skip:
        click.echo("dagwire: warning: --skip-doctor: the network's kernels were not checked on this machine", err=True)
        return
    ensure_healthy(device, threads, say=lambda message: click.echo(message, err=True))
