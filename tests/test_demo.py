"""`make demo`: its own recipe, shortened on small data, goes through every step; the line that says what it kept."""

import json
import re
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dagwire import graphs, spec as specs
from dagwire.cli import main
from dagwire.config import build_config
from dagwire.errors import DagwireError
from dagwire.rundir import RunDir
from dagwire.taustar import own_tau_star

ROOT = Path(__file__).resolve().parents[1]


def known_graph():
    """6 nodes; pruned at τ = 0.1, only the path 0 → 1 → 3 → 5 is left (2 and 4 lead nowhere)."""
    edges = [(0, 1), (0, 2), (1, 3), (1, 5), (2, 3), (2, 4), (3, 5), (4, 5)]
    weights = [0.5, 0.3, 0.4, 0.02, 0.01, 0.2, 0.6, 0.005]
    return specs.from_edge_list(6, (2, 2, 2), edges).with_weights(weights)


def test_pruning_summary_of_a_known_graph():
    g = known_graph()
    assert graphs.pruning_summary(g, 0.1, 0.74, 0.738, "τ*") == (
        "kept 3 of 8 edges, 4 of 6 nodes, τ* = 0.1, accuracy 0.740 → 0.738")
    assert graphs.pruning_summary(g, 0.0) == "kept 8 of 8 edges, 6 of 6 nodes, τ = 0"
    assert graphs.pruning_summary(g, 0.7) == "kept 0 of 8 edges, disconnected (output unreachable), τ = 0.7"


def test_draw_pruning_writes_both_panels(tmp_path):
    from dagwire.draw import draw_pruning

    draw_pruning(known_graph(), 0.1, tmp_path / "g.png", title="known")
    data = (tmp_path / "g.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1.6 * height  # the arcs and the learned graph side by side
    draw_pruning(known_graph(), 0.7, tmp_path / "cut.svg")  # disconnected: every edge drawn as cut
    assert "<svg" in (tmp_path / "cut.svg").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.svg", "g.png"]


def test_demo_config_is_a_valid_train_config():
    config = build_config(ROOT / "configs" / "demo.yaml")
    assert config.holdout > 0  # τ* is chosen on held-out training images
    assert config.lr_milestones and all(str(m).endswith("s") for m in config.lr_milestones)


def write_images(path: Path, classes: int = 3, per_class: int = 40, seed: int = 0) -> None:
    """A tiny npz with class-dependent brightness (mechanics only, never a result)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    x = np.clip(rng.normal(60 + 60 * y[:, None, None, None], 30, size=(len(y), 3, 32, 32)), 0, 255).astype(np.uint8)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    cut = len(y) * 3 // 4
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])


@pytest.mark.slow
def test_make_demo_recipe_runs_every_step(tmp_path):
    """The Makefile's own demo recipe, on a tiny npz and a 6-node DAG for 2 epochs: train, τ*, picture, features."""
    write_images(tmp_path / "tiny.npz")
    run = tmp_path / "demo"
    flags = (f"--dataset npz:{tmp_path / 'tiny.npz'} --holdout 18 --nodes 6 --stages 2 --channels 2 "
             "--batch-size 16 --epochs 2 --lr-milestones 4s,6s --lam-warmup 2 --quiet")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = ["make", "-s", "-C", str(ROOT), "-o", "setup", "-o", "data", "demo", f"RUN={run}",
               f"DAGWIRE={shlex.quote(sys.executable)} -m dagwire", f"DEMO_FLAGS={flags}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    features = json.loads(lines[-1])  # the last line is the features, one JSON object
    assert {"sparsity", "nodes"} <= set(features)
    summary = next(line for line in lines if line.startswith("τ*"))
    learned = specs.load(run / "graph.json")
    rows = {r["threshold"]: r for r in RunDir(run).threshold_rows()}
    tau = own_tau_star(run)
    assert summary.endswith(graphs.pruning_summary(learned, tau, rows[0.0]["test_accuracy"],
                                                   rows[tau]["test_accuracy"], "τ*"))
    assert features == graphs.recorded_features(learned, tau)
    assert (run / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_star_outside_a_sweep_needs_a_hold_out_curve(trained_run, capsys):
    graph = str(trained_run / "graph.json")
    assert main(["features", graph, "--threshold", "star"]) == 2  # trained without --holdout
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no hold-out threshold curve" in err
    assert main(["draw", graph, "--threshold", "nine", "-o", str(trained_run / "x.png")]) == 2
    assert "τ must be a number" in capsys.readouterr().err
    assert not (trained_run / "x.png").exists()
    with pytest.raises(DagwireError, match="no hold-out threshold curve"):
        own_tau_star(trained_run)


AFTER_SEED_0 = ("w300_l2e2", "h5000_w300_l2e2", "h5000_n18c6_w300_l2e2")  # the shipped design and the two after seed 0


def pilot_rows(capsys, tolerance=None, candidates=AFTER_SEED_0):
    """docs/demo/pilot.py's lines for the given pilot candidates, as doc rows (seed, accuracy, τ*, counts)."""
    import runpy

    pilot = ROOT / "docs" / "demo" / "pilot"
    runpy.run_path(str(ROOT / "docs" / "demo" / "pilot.py"), run_name="pilot")["main"](
        *(str(pilot / c) for c in candidates), tolerance=tolerance)
    rows = []
    for line in capsys.readouterr().out.strip().splitlines():
        seed = int(line.split()[1].removeprefix("seed"))
        edges, of_edges, nodes, of_nodes, tau, before, after = re.match(
            r".*kept (\d+) of (\d+) edges, (\d+) of (\d+) nodes, τ\* = ([\d.]+), accuracy ([\d.]+) → ([\d.]+)$", line).groups()
        row = f"| {seed} | {float(before):.3f} → {float(after):.3f} | {float(tau):g} |"
        rows.append((line, row, {f" {edges} | {nodes} |", f" {edges} of {of_edges} | {nodes} of {of_nodes} |"}))
    return rows


def test_the_design_pilots_numbers_are_its_runs(capsys):
    """docs/demo.md's rows for the chosen design and the candidates after seed 0 re-derived from the committed pilot runs."""
    doc = (ROOT / "docs" / "demo.md").read_text()
    rows = pilot_rows(capsys, candidates=AFTER_SEED_0 + ("h5000_x2", "cmnist_h2000"))
    assert len(rows) == 15
    for line, row, counts in rows:
        assert any(row + c in doc for c in counts), line


def test_the_one_point_tolerance_table_is_the_same_runs_re_read(capsys):
    """The section on a 1-point tolerance: its nine rows are pilot.py --tolerance 0.01, and they differ from the rule's."""
    doc = (ROOT / "docs" / "demo.md").read_text()
    start = doc.index("## A tolerance matched")
    section = doc[start:doc.index("\n## ", start)]
    rows = pilot_rows(capsys, tolerance=1)
    assert len(rows) == 9 and section.count("\n| ") == 11  # header, rule, nine runs
    for line, row, counts in rows:
        assert any(row + c in section for c in counts), line
    assert [r[1] for r in rows] != [r[1] for r in pilot_rows(capsys)]  # the tolerance changed some τ*


def test_readme_shows_the_demo_choosing_tau_star_at_its_configs_tolerance():
    """The README's `make demo` output: its τ* is the rule at configs/demo.yaml's tolerance on the curve it prints."""
    import pandas as pd

    from dagwire.taustar import tau_star_of

    points = build_config(ROOT / "configs" / "demo.yaml").tau_tolerance
    assert points == 1.0
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```console\n$ make demo\n")
    lines = readme[start:readme.index("```\n", start + 10)].strip().splitlines()
    rows = [line.split() for line in lines if re.fullmatch(r"\s*\d\.\d{4}(\s+\d\.\d{4}){3}\s+\d+(\s+disconnected)?", line)]
    curve = pd.DataFrame({"threshold": [float(r[0]) for r in rows], "holdout_accuracy": [float(r[2]) for r in rows]})
    star = next(line for line in lines if line.startswith("τ* ("))
    assert "within 1 point of the unpruned network's" in star
    tau = float(re.search(r"τ\* = ([\d.]+),", star).group(1))
    assert tau_star_of(curve, points) == tau
    at_tau = next(r for r in rows if float(r[0]) == tau)
    features = json.loads(lines[-1])  # the last line: the features at τ*
    assert features["nodes"] == int(at_tau[4]) and round(features["sparsity"], 4) == float(at_tau[3])
    assert features["sparsity"] >= 0.5 and features["nodes"] < 15
