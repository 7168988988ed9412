"""τ* of a run (taustar.py): the tolerance a run or a sweep chooses it with, on planted threshold curves."""

import json

import numpy as np
import pytest

from dagwire import graphs, spec as specs, taustar
from dagwire.cli import main
from dagwire.config import TrainConfig, build_config
from dagwire.errors import DagwireError
from dagwire.prune import write_rows_csv
from dagwire.rundir import RunDir
from dagwire.sweep.plan import SWEEP_FILE, SWEEP_FORMAT
from dagwire.sweep.table import with_tau_star
from dagwire.tables import runs_frame

from conftest import snapshot, write_npz

# A hold-out curve on which the rule's tolerance decides τ*: 0.8 unpruned, then 0.3, 0.8 and 1.5
# points below. At 0.5 points τ* stops at 0.01 (0.792 is 0.8 points down), at 1 point at 0.1
# (0.785 is 1.5 points down).
HOLDOUT = {0.0: 0.800, 0.01: 0.797, 0.1: 0.792, 0.2: 0.785, 0.3: 0.700}
AT_HALF_POINT, AT_ONE_POINT = 0.01, 0.1


def known_graph():
    """6 nodes, 8 edges; the weights put some edges on each side of 0.01 and 0.1."""
    edges = [(0, 1), (0, 2), (1, 3), (1, 5), (2, 3), (2, 4), (3, 5), (4, 5)]
    weights = [0.5, 0.3, 0.4, 0.02, 0.005, 0.2, 0.6, 0.05]
    return specs.from_edge_list(6, (2, 2, 2), edges).with_weights(weights)


def planted_run(path, tau_tolerance=None):
    """A run directory with a learned graph, a config and the planted hold-out threshold curve (no weights)."""
    files = RunDir(path)
    path.mkdir(parents=True)
    config = TrainConfig(nodes=6, stages=3, channels=2, holdout=1000)
    if tau_tolerance is not None:
        config.tau_tolerance = tau_tolerance
    config.save(files.config)
    specs.save(known_graph(), files.graph, dataset="planted", seed=0, channels=2)
    rows = [{"threshold": tau, "test_accuracy": accuracy, "holdout_accuracy": accuracy, "sparsity": 0.0, "nodes": 6,
             "edges": 8, "disconnected": False} for tau, accuracy in HOLDOUT.items()]
    write_rows_csv(rows, files.thresholds_csv)
    return path


def test_the_tolerance_decides_tau_star_on_a_planted_curve(tmp_path):
    run = planted_run(tmp_path / "run")
    assert taustar.own_tau_star(run, 0.5) == AT_HALF_POINT
    assert taustar.own_tau_star(run, 1) == AT_ONE_POINT
    assert taustar.own_tau_star(run, 0) == 0.0
    assert taustar.own_tau_star(run, 10) == 0.3
    assert taustar.own_tau_star(run) == AT_HALF_POINT  # a config without tau_tolerance: the paper's 0.5


def test_star_uses_the_runs_tolerance(tmp_path, capsys):
    run = planted_run(tmp_path / "run", tau_tolerance=1)
    graph = str(RunDir(run).graph)
    assert taustar.run_tolerance(run) == 1.0  # the config's
    assert taustar.run_tau_star(run) == AT_ONE_POINT
    assert main(["features", graph, "--threshold", "star"]) == 0
    assert json.loads(capsys.readouterr().out) == graphs.recorded_features(known_graph(), AT_ONE_POINT, 2)
    taustar.record_tolerance(run, 0.5)  # what `dagwire thresholds --tolerance 0.5` leaves: it wins over the config
    assert json.loads(RunDir(run).tau_tolerance.read_text()) == {"tau_tolerance": 0.5}
    assert taustar.run_tolerance(run) == 0.5 and taustar.run_tau_star(run) == AT_HALF_POINT
    assert main(["features", graph, "--threshold", "star"]) == 0
    assert json.loads(capsys.readouterr().out) == graphs.recorded_features(known_graph(), AT_HALF_POINT, 2)


def test_a_sweeps_tau_star_keeps_the_papers_tolerance_unless_its_sweep_sets_one(tmp_path):
    sweep = tmp_path / "sweep"
    planted_run(sweep / "runs" / "planted" / "seed0", tau_tolerance=1)  # a run's own tolerance is not the sweep's
    row = {"dataset": "planted", "seed": 0, "status": "done", "run_dir": "runs/planted/seed0"}
    for config, expected in [("{}", AT_HALF_POINT), ("{tau_tolerance: 1}", AT_ONE_POINT)]:
        (sweep / SWEEP_FILE).write_text(f"format: {SWEEP_FORMAT}\ndatasets: [planted]\nseeds: [0]\nconfig: {config}\n")
        assert taustar.sweep_tolerance(sweep) == (1.0 if "tau" in config else 0.5)
        table = with_tau_star(runs_frame([row]), sweep)
        assert list(table["tau_star"]) == [expected]
        assert list(table["nodes_at_tau_star"]) == [graphs.recorded_features(known_graph(), expected)["nodes"]]


def test_bad_tolerances_are_one_line_errors(tmp_path, capsys):
    run = planted_run(tmp_path / "run")
    before = snapshot(run)
    for value in ["-1", "nan", "inf"]:
        assert main(["thresholds", str(run), "--tolerance", value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("dagwire: error: --tolerance must be a number"), err
    assert snapshot(run) == before  # checked before the run is read, so nothing is written
    with pytest.raises(DagwireError, match="--tau-tolerance must be a number"):
        build_config(None, tau_tolerance=-0.5)
    RunDir(run).tau_tolerance.write_text("{half a point}")
    assert main(["features", str(RunDir(run).graph), "--threshold", "star"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a tolerance record" in err


def test_thresholds_chooses_tau_star_at_the_tolerance_it_is_given(tmp_path, capsys):
    """A real tiny run with a hold-out: the printed τ* and what 'star' then prunes at follow --tolerance."""
    dataset = write_npz(tmp_path / "tiny.npz", classes=3, images=120)
    run = tmp_path / "run"
    assert main(["train", "--dataset", dataset, "--nodes", "6", "--stages", "2", "--channels", "2", "--holdout", "20",
                 "--batch-size", "16", "--epochs", "2", "--lam", "0.5", "--tau-tolerance", "2", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    learned = specs.load(RunDir(run).graph)
    for given, points in [(["--tolerance", "40"], 40.0), ([], 2.0)]:  # none given: the run's config's
        assert main(["thresholds", str(run), "--quiet", *given]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        tau = taustar.own_tau_star(run, points)
        assert out[-1].startswith(f"τ* (the largest τ whose accuracy on the 20 hold-out images stays within "
                                  f"{points:g} points of the unpruned network's): ")
        assert f"τ* = {tau:g}," in out[-1]
        assert json.loads(RunDir(run).tau_tolerance.read_text()) == {"tau_tolerance": points}
        assert main(["features", str(RunDir(run).graph), "--threshold", "star"]) == 0
        assert json.loads(capsys.readouterr().out) == graphs.recorded_features(learned, tau)
    rows = RunDir(run).threshold_rows()
    held = np.array([r["holdout_accuracy"] for r in rows])
    # τ* at 2 points is the last τ before the hold-out accuracy first falls more than 2 points.
    below = np.flatnonzero(held < held[0] - 0.02 - 1e-12)
    expected = rows[below[0] - 1]["threshold"] if len(below) else rows[-1]["threshold"]
    assert taustar.own_tau_star(run) == expected
