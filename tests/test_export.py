"""`dagwire.load` and `dagwire export`: the pruned network of a run, as a module and as .pt2 / .onnx files."""

import json
import operator
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx  # the export extra, part of the test extra: these tests run, never skip
import onnxruntime as ort
import pytest
import torch

import dagwire
from dagwire import counts, graphs, spec as specs
from dagwire.cli import main
from dagwire.data import load_dataset_for, normalize_batch
from dagwire.errors import DagwireError
from dagwire.export import export, sidecar_path
from dagwire.model import count_parameters
from dagwire.prune import load_run

# A child interpreter in which dagwire cannot be imported: isolated mode (-I: no PYTHONPATH, no
# user site, no current directory on sys.path), and dagwire's import blocked, so that an editable
# install of it in the environment does not count either.
WITHOUT_DAGWIRE = "import sys; sys.modules['dagwire'] = None\n"


def run_without_dagwire(code: str, cwd) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where `import dagwire` fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    return subprocess.run([sys.executable, "-I", "-c", WITHOUT_DAGWIRE + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def taus(trained_run):
    """τ = 0 (the full network) and the smallest τ that removes a node and keeps input and output connected."""
    learned = specs.load(trained_run / "graph.json")
    full = len(learned.active_nodes())
    for w in sorted(learned.weights):
        pruned = graphs.prune(learned, w)
        if graphs.is_connected(pruned) and len(pruned.active_nodes()) < full:
            return {"full": 0.0, "pruned": w}
    raise AssertionError("no τ of the tiny run removes a node")


@pytest.fixture(scope="module")
def exports(trained_run, taus, tmp_path_factory):
    """Both files at both τ, written by the command line: {(kind, suffix): path}."""
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for kind, tau in taus.items():
        for suffix in (".pt2", ".onnx"):
            path = out / f"{kind}{suffix}"
            assert main(["export", str(trained_run), "--tau", repr(tau), "-o", str(path)]) == 0
            paths[kind, suffix] = path
    return paths


@pytest.fixture(scope="module")
def batches(trained_run):
    """A random batch and a real one (test images, normalised as in training)."""
    data = load_dataset_for(load_run(trained_run).config)
    generator = torch.Generator().manual_seed(0)
    return {"random": torch.randn(5, 3, 32, 32, generator=generator),
            "real": normalize_batch(torch.from_numpy(data.test_x[:8]), data.mean, data.std)}


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def test_load_is_the_pruned_trained_network_in_eval_mode(trained_run, taus):
    run = load_run(trained_run)
    learned, c = run.learned, run.config.channels
    full = dagwire.load(trained_run, tau=0.0)
    small = dagwire.load(trained_run, tau=taus["pruned"])
    pruned = graphs.prune(learned, taus["pruned"])
    assert not full.training and not small.training
    assert full.spec.edges == learned.edges
    assert small.spec.edges == pruned.edges and len(small.nodes) == len(pruned.active_nodes()) < len(full.nodes)
    assert count_parameters(small) == counts.parameter_count(pruned, c, 3, 3) < count_parameters(full)
    assert count_parameters(full) == counts.parameter_count(learned, c, 3, 3)
    # The trained weights: the full network is the run's own; None means the run's own τ.
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        run.model.eval()
        assert torch.equal(full(x), run.model(x))
        own = graphs.prune(learned, run.config.threshold)
        assert dagwire.load(trained_run).spec.edges == own.edges


@pytest.mark.slow  # the module's four exports take about 20 s on 2 cores
@pytest.mark.parametrize("kind", ["full", "pruned"])
@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
@pytest.mark.parametrize("batch", ["random", "real"])
def test_exported_logits_equal_load(exports, taus, batches, trained_run, kind, suffix, batch):
    x = batches[batch]
    reference = dagwire.load(trained_run, tau=taus[kind])  # the fast path (kernels.py's in-stage sums)
    plain = dagwire.load(trained_run, tau=taus[kind]).use_fast_kernels(False)
    path = exports[kind, suffix]
    with torch.no_grad():
        expected, expected_plain = reference(x), plain(x)
        got = torch.export.load(path).module()(x) if suffix == ".pt2" else run_onnx(path, x)
    assert got.shape == (len(x), 3)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)
    assert torch.allclose(expected_plain, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_any_batch_size_runs(exports, trained_run):
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = dagwire.load(trained_run, tau=0.0)(x)
        assert torch.allclose(torch.export.load(exports["full", ".pt2"]).module()(x), expected, atol=1e-5)
    assert torch.allclose(run_onnx(exports["full", ".onnx"], x), expected, atol=1e-5)
    assert torch.allclose(run_onnx(exports["full", ".onnx"], x.repeat(7, 1, 1, 1)), expected.repeat(7, 1), atol=1e-5)


@pytest.mark.slow
def test_exported_program_holds_only_aten_ops_and_the_pruned_parameters(exports, trained_run, taus):
    run = load_run(trained_run)
    allowed = (operator.getitem, operator.mul)  # shape arithmetic on the dynamic batch
    sizes = {}
    for kind in taus:
        program = torch.export.load(exports[kind, ".pt2"])
        targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
        assert targets and all(isinstance(t, torch._ops.OpOverload) and t.namespace == "aten" or t in allowed
                               for t in targets)
        sizes[kind] = sum(p.numel() for p in program.module().parameters())
        pruned = graphs.prune(run.learned, taus[kind])
        assert sizes[kind] == counts.parameter_count(pruned, run.config.channels, 3, 3)
    assert sizes["pruned"] < sizes["full"]
    weights = {kind: sum(int(np.prod(t.dims)) for t in onnx.load(str(exports[kind, ".onnx"])).graph.initializer)
               for kind in taus}
    assert weights["pruned"] < weights["full"]


@pytest.mark.slow
def test_onnx_file_passes_the_checker_with_a_named_dynamic_batch(exports):
    model = onnx.load(str(exports["pruned", ".onnx"]))
    onnx.checker.check_model(model, full_check=True)
    (image,), (logits,) = model.graph.input, model.graph.output
    assert (image.name, logits.name) == ("images", "logits")
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", 3, 32, 32]
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == ["batch", 3]


@pytest.mark.slow
def test_pt2_runs_in_a_fresh_interpreter_without_dagwire(exports, trained_run, taus, tmp_path):
    x = torch.randn(4, 3, 32, 32)
    np.save(tmp_path / "x.npy", x.numpy())
    shutil.copy(exports["pruned", ".pt2"], tmp_path / "m.pt2")
    code = textwrap.dedent("""
        import numpy, torch
        try:
            import dagwire
        except ImportError:
            pass
        else:
            raise SystemExit("dagwire was importable")
        model = torch.export.load("m.pt2").module()
        numpy.save("y.npy", model(torch.from_numpy(numpy.load("x.npy"))).detach().numpy())
        assert not [m for m in sys.modules if m.startswith("dagwire") and sys.modules[m] is not None]
    """)
    done = run_without_dagwire(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = dagwire.load(trained_run, tau=taus["pruned"])(x)
    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "y.npy")), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_sidecar_says_how_to_feed_the_file(exports, trained_run, taus):
    run = load_run(trained_run)
    data = load_dataset_for(run.config)
    path = exports["pruned", ".onnx"]
    info = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path).name == "pruned.onnx.json"
    assert info["format"] == "dagwire-export/1" and info["file"] == "pruned.onnx"
    assert info["input"]["shape"] == ["batch", 3, 32, 32]
    assert info["input"]["mean"] == list(data.mean) and info["input"]["std"] == list(data.std)
    assert info["output"]["shape"] == ["batch", 3] and info["classes"] == data.classes == ["0", "1", "2"]
    assert info["tau"] == taus["pruned"] and info["channels"] == 2
    assert info["features"] == graphs.recorded_features(run.learned, taus["pruned"])
    pruned = graphs.prune(run.learned, taus["pruned"])
    assert specs.from_dict(info["graph"]) == pruned
    assert info["parameters"] == counts.parameter_count(pruned, 2, 3, 3)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        f"{kind}{suffix}{json_}" for kind in taus for suffix in (".pt2", ".onnx") for json_ in ("", ".json"))


@pytest.mark.slow
def test_tau_star_is_the_sweeps(trained_run, taus, tmp_path):
    from dagwire.sweep.plan import SWEEP_FILE, SWEEP_FORMAT
    from dagwire.tables import runs_frame, write_runs_table

    sweep = tmp_path / "sweep"
    member = sweep / "runs" / "tiny" / "seed0"
    shutil.copytree(trained_run, member, ignore=shutil.ignore_patterns("re*"))
    with pytest.raises(DagwireError, match="not a run of a sweep"):
        dagwire.load(member, tau="star")
    (sweep / SWEEP_FILE).write_text(f"format: {SWEEP_FORMAT}\ndatasets: [tiny]\nseeds: [0]\nconfig: {{}}\n")
    row = {"dataset": "tiny", "seed": 0, "status": "done", "run_dir": "runs/tiny/seed0"}
    write_runs_table(runs_frame([row]), sweep)
    with pytest.raises(DagwireError, match="has no τ\\*"):
        dagwire.load(member, tau="star")
    write_runs_table(runs_frame([{**row, "tau_star": taus["pruned"]}]), sweep)
    assert dagwire.load(member, tau="star").spec.edges == dagwire.load(member, tau=taus["pruned"]).spec.edges
    out = tmp_path / "star.pt2"
    assert main(["export", str(member), "--tau", "star", "-o", str(out)]) == 0
    assert json.loads(sidecar_path(out).read_text())["tau"] == taus["pruned"]


def test_bad_runs_and_taus_are_one_line_errors(trained_run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.yaml", "initial_graph.json", "checkpoint.pt"):
        shutil.copy(trained_run / name, unfinished / name)
    (tmp_path / "not-a-run").mkdir()
    learned = specs.load(trained_run / "graph.json")
    cut_all = max(learned.weights) + 0.01
    for run, tau, message in [(unfinished, None, "has not finished training"),
                              (tmp_path / "not-a-run", None, "is not a run directory"),
                              (tmp_path / "missing", None, "is not a run directory"),
                              (trained_run, cut_all, "disconnected"),
                              (trained_run, -1.0, "τ must be"), (trained_run, float("nan"), "τ must be"),
                              (trained_run, "half", "τ must be"), (trained_run, "star", "not a run of a sweep")]:
        with pytest.raises(DagwireError, match=message):
            dagwire.load(run, tau=tau)
    out = tmp_path / "m.pt2"
    for args in [[str(unfinished)], [str(tmp_path / "not-a-run")], [str(trained_run), "--tau", repr(cut_all)],
                 [str(trained_run), "--tau", "half"], [str(trained_run), "--tau", "-0.1"],
                 [str(trained_run), "--tau", "star"]]:
        assert main(["export", *args, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("dagwire: error: ") and "Traceback" not in err
    assert main(["export", str(trained_run), "-o", str(tmp_path / "m.tflite")]) == 2
    assert "must end in .pt2 or .onnx" in capsys.readouterr().err
    assert list(tmp_path.glob("m.*")) == []


def test_onnx_without_the_extra_names_it(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(DagwireError, match=r"dagwire\[export\]"):
        export(trained_run, tmp_path / "m.onnx", tau=0.0)
    assert list(tmp_path.iterdir()) == []


# --- README, "From Python": its code runs here, on the tiny run, and prints what the README shows ---------

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_RUN = "runs/demo"
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def readme_blocks(section: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced block in the README section `section`."""
    text = README.read_text()
    start = text.index(f"### {section}\n")
    end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start + 1)) if i > 0)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


def same_shape(got: str, shown: str) -> None:
    """`got` has the lines of `shown`, every number in `shown` standing for any number (another run's)."""
    got_lines, shown_lines = got.strip().splitlines(), shown.strip().splitlines()
    assert len(got_lines) == len(shown_lines), f"printed:\n{got}\nREADME shows:\n{shown}"
    for line, expected in zip(got_lines, shown_lines):
        pattern = NUMBER.join(re.escape(part) for part in re.split(NUMBER, expected))
        assert re.fullmatch(pattern, line), f"printed {line!r}, README shows {expected!r}"


@pytest.mark.slow
def test_readme_from_python_runs_as_shown(trained_run, tmp_path, capsys, monkeypatch):
    blocks = readme_blocks("From Python")
    assert [language for language, _ in blocks] == ["python", "text", "console", "python", "text"]
    (_, in_dagwire), (_, shown), (_, console), (_, fresh), (_, shown_fresh) = blocks
    assert DEMO_RUN in in_dagwire
    done = subprocess.run([sys.executable, "-c", in_dagwire.replace(DEMO_RUN, str(trained_run))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    same_shape(done.stdout, shown)
    commands = re.split(r"^\$ ", console, flags=re.M)[1:]
    assert commands
    monkeypatch.chdir(tmp_path)
    for command in commands:
        line, _, output = command.partition("\n")
        argv = shlex.split(line.replace(DEMO_RUN, str(trained_run)))
        assert argv[0] == "dagwire"
        assert main(argv[1:]) == 0
        same_shape(capsys.readouterr().out.replace(str(trained_run), DEMO_RUN), output)
    done = run_without_dagwire(fresh, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    same_shape(done.stdout, shown_fresh)
