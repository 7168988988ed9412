"""`dagwire doctor`: is the network's math right on this machine's kernels?

A result that depends on an upstream kernel must not be silently wrong. oneDNN's strided 1×1
convolution, for one, corrupts memory and weight gradients below its channel block on AVX2 CPUs
(see `model.pointwise`); a kernel can also hang or crash the process. So every check here runs in
a child process with a deadline: the parent names the case that hung or crashed and goes on with
the rest in a fresh child.

Each check (doctor_cases.py) compares a small network on the device's kernels with its plain math
in float64. The quick form runs once per machine, device and code version; `train` and `sweep`
call it before their first epoch and cache the verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .doctor_cases import TOLERANCE, Case, compare_with_float64, full_cases, quick_cases
from .errors import DagwireError
from .files import atomic_write_text
from .machine import cpu_name

CASE_TIMEOUT_S = 60.0


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
        "cpu": cpu_name(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "onednn": _onednn_version(),
        "threads": str(threads if threads > 0 else torch.get_num_threads()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
        facts["cudnn"] = str(torch.backends.cudnn.version())
    return facts


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
    for name in ("model.py", "kernels.py", "doctor.py", "doctor_cases.py", "spec.py", "counts.py"):
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
