"""The network's gradients against float64 NCHW on this machine's kernels, over the whole size range.

Every case runs in a child process with a deadline (dagwire.doctor.run_cases): a kernel that hangs
or corrupts memory fails its case by name instead of stopping the suite.
"""

import pytest

from dagwire import doctor, doctor_cases
from dagwire.cli import main

# The strided 1×1 convolution the network used before, which oneDNN gets wrong below 8 channels on
# AVX2: put back into a child to show a wrong or crashing kernel is settled, never a hang.
BROKEN_POINTWISE = """
import torch.nn.functional as F
import dagwire.model as m
m.pointwise = lambda conv, x: F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, groups=conv.groups)
"""


@pytest.mark.slow
def test_every_size_agrees_with_float64_in_a_child_process():
    cases = doctor_cases.full_cases()
    assert {c.channels for c in cases} == set(range(1, 17))
    assert {c.stages for c in cases} == {1, 2, 3} and {c.members for c in cases} == {1, 2}
    outcomes = doctor.run_cases(cases, timeout=60)
    assert [o.case for o in outcomes] == cases  # every case was settled, in order
    failed = [o.line() for o in outcomes if not o.ok]
    assert not failed, "\n".join(failed)


# A kernel bug planted where the real one was: strided 1×1 weight gradients halved in float32 only
# (the float64 truth stays right), the same on every CPU, so the check's verdict is a known answer.
WRONG_STRIDED_GRADIENT = """
import torch
import torch.nn.functional as F
import dagwire.model as m

class HalveGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):
        return g * 0.5

original = m.pointwise
def pointwise(conv, x):
    if conv.stride == (1, 1) or x.dtype != torch.float32:
        return original(conv, x)
    s = conv.stride
    return F.conv2d(x[:, :, ::s[0], ::s[1]], HalveGradient.apply(conv.weight), conv.bias, groups=conv.groups)
m.pointwise = pointwise
"""

# C = 6, 3 stages: stage-0 outputs (6 channels) meet stride 2 and 4 in the reduce blocks; one stage
# has no strided convolution at all.
STRIDED_CASES = [doctor_cases.Case(6, 3), doctor_cases.Case(5, 2), doctor_cases.Case(8, 1)]


def test_a_wrong_strided_gradient_is_caught():
    outcomes = doctor.run_cases(STRIDED_CASES, timeout=30, preamble=WRONG_STRIDED_GRADIENT)
    assert [o.case for o in outcomes] == STRIDED_CASES
    assert [o.status for o in outcomes] == ["wrong", "wrong", "ok"]


def test_the_upstream_strided_kernel_put_back_is_settled_not_hung():
    """oneDNN's own strided 1×1 kernel, back in a child: every case settled, in order, never a hang.

    Whether it is wrong depends on the CPU: on an AMD EPYC with AVX2 (2026-11-25, 5929a61) these
    shapes crashed or gave weight gradients 37-98 % off; on an Intel Xeon with AVX-512 (2026-12-01,
    b3b5139) they were right.
    """
    outcomes = doctor.run_cases(STRIDED_CASES, timeout=30, preamble=BROKEN_POINTWISE)
    assert [o.case for o in outcomes] == STRIDED_CASES
    assert all(o.status in ("ok", "wrong", "crashed", "hung") for o in outcomes)
    assert outcomes[2].ok  # one stage: no strided convolution, nothing to break
    if doctor.kernel_facts()["cpu_isa"] == "AVX2":
        assert [o.ok for o in outcomes[:2]] == [False, False]


@pytest.mark.slow
def test_a_hanging_case_is_named_and_the_rest_still_run():
    hang_on_c3 = """
import dagwire.doctor as d
original = d.compare_with_float64
def compare(case, *args, **kwargs):
    if case.channels == 3:
        import time; time.sleep(600)
    return original(case, *args, **kwargs)
d.compare_with_float64 = compare
"""
    cases = [doctor_cases.Case(2, 2), doctor_cases.Case(3, 2), doctor_cases.Case(4, 2)]
    outcomes = doctor.run_cases(cases, timeout=5, preamble=hang_on_c3)
    assert [(o.case.channels, o.status) for o in outcomes] == [(2, "ok"), (3, "hung"), (4, "ok")]


def test_a_crashing_case_is_named_with_its_signal():
    crash_on_c2 = """
import os, signal
import dagwire.doctor as d
original = d.compare_with_float64
def compare(case, *args, **kwargs):
    if case.channels == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
    return original(case, *args, **kwargs)
d.compare_with_float64 = compare
"""
    outcomes = doctor.run_cases([doctor_cases.Case(2, 1), doctor_cases.Case(3, 1)], timeout=30, preamble=crash_on_c2)
    assert [o.status for o in outcomes] == ["crashed", "ok"]
    assert "signal 11" in outcomes[0].detail


def test_relative_error_floors_gradients_that_are_zero_in_exact_arithmetic():
    import torch

    want = torch.tensor([1e-9, -2e-9])
    got = torch.tensor([3e-9, 0.0])
    assert doctor_cases.relative_error(got, want) == pytest.approx(1.0)  # noise over noise
    assert doctor_cases.relative_error(got, want, floor=1e-3) == pytest.approx(2e-9 / 1e-3)
    assert doctor_cases.relative_error(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")


def test_doctor_command_prints_facts_and_one_line_per_check(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DAGWIRE_CACHE", str(tmp_path))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    keys = [line.split(":")[0] for line in out[:6]]
    assert keys == ["torch", "device", "cpu", "cpu_isa", "onednn", "threads"]
    checks = [line for line in out if line.startswith(("ok", "FAIL"))]
    assert len(checks) == len(doctor_cases.quick_cases())
    assert out[-1].startswith(f"{len(checks)}/{len(checks)} checks passed")
    assert list((tmp_path / "doctor").glob("*.json"))  # the verdict is cached for train and sweep


def test_failed_doctor_verdict_stops_training_with_one_line(capsys, monkeypatch, tmp_path, tiny_npz):
    import json

    monkeypatch.setenv("DAGWIRE_CACHE", str(tmp_path))
    facts = doctor.kernel_facts("cpu")
    path = doctor._cache_file(facts)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"facts": facts, "ok": False,
                                "failed": [doctor.Outcome(doctor_cases.Case(6, 3), "hung", detail="killed").line()]}))
    code = main(["train", "--dataset", tiny_npz, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "C=6 stages=3" in err[0] and "--skip-doctor" in err[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written
