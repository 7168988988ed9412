"""docs/front.md's study, checked on its committed runs: each retraining is the network its run and τ* give."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from dagwire import counts
from dagwire import spec as specs
from dagwire.controls import stage_edge_counts
from dagwire.graphs import is_connected
from dagwire.prune import connected_pruning, io_sizes, load_run, plan_controls, retrain_dir
from dagwire.rundir import RunDir
from dagwire.tables import read_runs_table
from dagwire.taustar import run_tau_star
from dagwire.train import load_run_config

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "front.md").read_text()
# The status line while the study runs; once all 85 trainings are done and front.json is written, it says so.
UNDER_WAY = re.search(r"(\d+) of its 85 trainings done", DOC)
FINISHED = "all 85 of its trainings are done" in DOC
C4, LAM = ROOT / "docs" / "capacity" / "sweep-c4", ROOT / "docs" / "front" / "lam"
# The runs docs/front/run.sh retrains, and the controls it trains for each.
STUDY_RUNS = ([C4 / "runs" / dataset / f"seed{seed}" for dataset in ("cfashionmnist", "cmnist") for seed in range(5)]
              + [LAM / "runs" / "cfashionmnist" / lam / f"seed{seed}" for lam in ("lam0", "lam0.02", "lam0.05")
                 for seed in range(3)])
CONTROL_KINDS, RANDOM_CONTROLS = ("random", "width"), 2
# What a retraining may change of its run's config; everything else is the run's regime.
CHANGED = {"graph", "channels", "seed", "tau_tolerance"}


def finished_retrainings(run: Path) -> list[Path]:
    """The run's retraining directories that finished training (graph.json written)."""
    return sorted(d for d in run.glob("retrain-*") if RunDir(d).graph.is_file())


RETRAINED_RUNS = [run for run in STUDY_RUNS if finished_retrainings(run)]


def edges_of(spec: specs.GraphSpec) -> tuple:
    """A graph's shape without its weights: nodes, stages and edges."""
    return spec.num_nodes, tuple(spec.stages), tuple(sorted(spec.edges))


def test_the_status_line_counts_the_committed_trainings():
    lam_done = int((read_runs_table(LAM)["status"] == "done").sum())
    retrainings = sum(len(finished_retrainings(run)) for run in STUDY_RUNS)
    assert UNDER_WAY or FINISHED, "docs/front.md says neither how far the study is nor that it is done"
    assert lam_done + retrainings == (int(UNDER_WAY.group(1)) if UNDER_WAY else 85)
    assert RETRAINED_RUNS, "no retraining committed yet: the check below would check nothing"


@pytest.mark.parametrize("run", RETRAINED_RUNS, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_each_retraining_is_the_network_its_run_and_tau_star_give(run):
    tau = run_tau_star(run)
    trained = load_run(run)
    pruned = connected_pruning(trained, tau)
    sizes = io_sizes(trained)
    expected = {retrain_dir(run, tau, False): ("learned", pruned, trained.config.channels)}
    for control in plan_controls(trained, tau, CONTROL_KINDS, RANDOM_CONTROLS):
        graph = control.graph or specs.load(RunDir(run).initial_graph)
        expected[RunDir(run).control(tau, control.name).path] = (control.record["family"], graph, control.channels)
    regime = {k: v for k, v in dataclasses.asdict(trained.config).items() if k not in CHANGED}

    for directory in finished_retrainings(run):
        assert directory in expected, f"{directory.name}: not a retraining of {run.name} at its τ* = {tau:g}"
        family, graph, channels = expected[directory]
        config = load_run_config(directory)
        assert {k: v for k, v in dataclasses.asdict(config).items() if k not in CHANGED} == regime
        assert config.channels == channels and config.seed == trained.config.seed + 1000
        architecture = specs.load(RunDir(directory).initial_graph)
        assert edges_of(architecture) == edges_of(graph)
        facts = json.loads(RunDir(directory).network.read_text())
        assert facts["family"] == family and facts["tau"] == tau
        assert facts["parameters"] == counts.parameter_count(architecture, channels, *sizes)
        assert facts["edges_per_stage"] == stage_edge_counts(architecture)
        assert facts["test_accuracy"] == specs.load(RunDir(directory).graph).meta["test_accuracy"]
        if family == "random":  # the learned graph's size: its live nodes, its edges per stage, every node on a path
            assert architecture.active_nodes() == pruned.active_nodes()
            assert stage_edge_counts(architecture) == stage_edge_counts(pruned) and is_connected(architecture)


FRONT_JSON = ROOT / "docs" / "front" / "front.json"
# docs/front/run.sh's last step: `dagwire front C4 LAM --datasets cfashionmnist,cmnist --json`, defaults otherwise.
FRONT_DATASETS = ("cfashionmnist", "cmnist")


def assert_close(got, want, where="front.json"):
    """`got` equals `want` key for key, floats to 1e-9 relative (a reduction's last bit may differ across CPUs)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), where
    else:
        assert got == want, where


@pytest.mark.skipif(bool(UNDER_WAY) and not FRONT_JSON.exists(),
                    reason="the front study is under way: front.json is written when its 85 trainings are done")
def test_front_json_is_what_the_committed_runs_give():
    from dagwire.front import front_result, network_rows, only_datasets
    from dagwire.sweep.worker import _clean

    assert FRONT_JSON.exists(), "the study is done but docs/front/front.json is missing"
    networks = only_datasets(network_rows([C4, LAM], progress=False), list(FRONT_DATASETS))
    derived = json.loads(json.dumps(_clean(front_result(networks))))
    assert_close(derived, json.loads(FRONT_JSON.read_text()))


def test_the_committed_speed_summary_is_that_of_the_committed_timings():
    """docs/front.md quotes docs/front/speed.json; it must be what `bench_front.py --from-csv speed.csv` prints."""
    import runpy

    import pandas as pd

    script = runpy.run_path(str(ROOT / "benchmarks" / "bench_front.py"))
    rows = pd.read_csv(ROOT / "docs" / "front" / "speed.csv").to_dict("records")
    assert len(rows) == 79 and {r["family"] for r in rows} == {"complete", "learned", "random", "width"}
    printed = script["summary"](rows, rows[0]["timed_on"], rows[0]["rounds"], rows[0]["steps"])
    committed = (ROOT / "docs" / "front" / "speed.json").read_text()
    assert printed + "\n" == committed
    assert committed.rstrip("\n") in DOC  # the page shows the summary as it is
