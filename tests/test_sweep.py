"""Sweeps through a real local Ray: the runs table, resume after a kill, failed runs, bad input.

Datasets are tiny synthetic npz files: they test mechanics only, never a result.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import session_pids, snapshot, write_npz
import torch

from dagwire import graphs
from dagwire import spec as specs
from dagwire import sweep as sweep_module
from dagwire import tables
from dagwire.cli import cli, main
from dagwire.errors import DagwireError
from dagwire.config import TAU_GRID
from dagwire.machine import cpu_label
from dagwire.model import create_model

TINY = ["--nodes", "6", "--stages", "2", "--channels", "2", "--batch-size", "16", "--quiet"]
RUN_FILES = ("graph.json", "thresholds.csv", "features.json", "dynamics.json", "status.json", "metrics.jsonl",
             "edge_history.npy", "weights.pt")


def sweep(*args) -> int:
    """`dagwire sweep ARGS` in this process; its exit code (1 when some run failed)."""
    return main(["sweep", *[str(a) for a in args]])


def mtimes(run_dirs, names=("status.json", "graph.json")) -> dict:
    return {(str(d), n): (Path(d) / n).stat().st_mtime_ns for d in run_dirs for n in names}


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session this test started, and wait until they are gone."""
    deadline = time.monotonic() + 30
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    assert not session_pids(sid), "processes of the killed sweep survived"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance for the module; sweeps in this process reuse it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    root = root.resolve()  # the sweep stores datasets by absolute, resolved path
    return {"a": write_npz(root / "a.npz", 0), "b": write_npz(root / "b.npz", 1), "root": root}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, data):
    """A finished sweep: 2 datasets × 2 seeds, 1 epoch each."""
    out = tmp_path_factory.mktemp("sweeps") / "tiny"
    args = ["--datasets", f"{data['a']},{data['b']}", "--seeds", "0-1", *TINY, "--epochs", "1", "--out", out]
    assert sweep(*args) == 0
    return out, args


# ---------------------------------------------------------------------------------------------
# Parsing and planning (no Ray)


@pytest.mark.parametrize("text, seeds", [("0-9", list(range(10))), ("0,3,5", [0, 3, 5]), ("0-2,7", [0, 1, 2, 7]),
                                         (" 4 ", [4]), ("5-5", [5])])
def test_seed_syntax(text, seeds):
    assert sweep_module.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "3-1", "1,1", "0-2,2", "-1", "1-", "1;2"])
def test_bad_seed_syntax(text):
    with pytest.raises(DagwireError):
        sweep_module.parse_seeds(text)


def test_run_dir_names_are_safe_and_unique():
    names = sweep_module.run_dir_names(["cmnist", "npz:/x/a b.npz", "npz:/y/a b.npz", "folder:/d/imgs"])
    assert names["cmnist"] == "cmnist" and names["folder:/d/imgs"] == "folder-imgs"
    assert names["npz:/x/a b.npz"].startswith("npz-a_b-") and names["npz:/y/a b.npz"].startswith("npz-a_b-")
    assert len(set(names.values())) == 4
    assert all("/" not in v and ":" not in v and " " not in v for v in names.values())


def test_mini_preset_and_what_overrides_it(tmp_path):
    plan = sweep_module.make_plan(preset="mini")
    assert plan.datasets == ["cmnist", "cfashionmnist", "cfashionmnist_t8"] and plan.seeds == [0, 1, 2]
    cm, fa = plan.run_config("cmnist", 1), plan.run_config("cfashionmnist", 1)
    assert (cm.nodes, cm.stages, cm.channels, cm.epochs, cm.lam, cm.limit_train) == (12, 3, 6, 30, 5e-3, 5000)
    assert cm.carve_test == 0.2 and fa.carve_test is None and fa.limit_test == 2000 and fa.seed == 1
    # sweep.yaml records the shared data by its place beside the checkout; runs get it resolved here.
    assert plan.config["data_dir"] == sweep_module._shared_data_dir() == "<checkout>/../shared/data"
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"  # <repo>/../shared/data
    assert cm.data_dir == str(beside.resolve())
    if beside.is_dir():
        assert (beside / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    # YAML beats the preset, flags beat both, a flag beats a per-dataset preset value too.
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 7\nlam: 0.01\n")
    plan = sweep_module.make_plan(datasets="cmnist", preset="mini", config_path=str(yaml_file), lam=0.02,
                                  carve_test=0.5, seeds="4")
    config = plan.run_config("cmnist", 4)
    assert (config.epochs, config.lam, config.carve_test, config.nodes) == (7, 0.02, 0.5, 12)
    assert plan.datasets == ["cmnist"] and plan.seeds == [4]


def test_plan_errors():
    with pytest.raises(DagwireError, match="unknown preset"):
        sweep_module.make_plan(preset="nope")
    with pytest.raises(DagwireError, match="unknown dataset 'mnist2'"):
        sweep_module.make_plan(datasets="cmnist,mnist2")
    with pytest.raises(DagwireError, match="given twice"):
        sweep_module.make_plan(datasets="cmnist,CMNIST")
    with pytest.raises(DagwireError, match="--datasets is required"):
        sweep_module.make_plan()
    with pytest.raises(DagwireError, match="does not divide"):
        sweep_module.make_plan(datasets="cmnist", nodes=7, stages=2)
    with pytest.raises(DagwireError, match="no such file"):
        sweep_module.make_plan(datasets="npz:/nonexistent/x.npz")


def test_first_difference_names_the_key():
    a = sweep_module.make_plan(preset="mini").identity()
    assert sweep_module.first_difference(a, sweep_module.make_plan(preset="mini").identity()) is None
    assert sweep_module.first_difference(a, sweep_module.make_plan(preset="mini", lam=0.01).identity()) \
        .startswith("lam (0.005 there, 0.01 now)")
    assert sweep_module.first_difference(a, sweep_module.make_plan(preset="mini", seeds="0-3").identity()) \
        .startswith("seeds")
    changed = sweep_module.make_plan(preset="mini")
    changed.per_dataset["cmnist"]["carve_test"] = 0.3
    assert sweep_module.first_difference(a, changed.identity()).startswith("carve_test for cmnist")
    # The device is not part of the identity: a sweep may continue on another device.
    assert sweep_module.first_difference(a, sweep_module.make_plan(preset="mini", device="cuda").identity()) is None
    # A sweep.yaml from before a field existed ran with its default: it is the same sweep.
    older = {**a, "config": {k: v for k, v in a["config"].items() if k != "lam_warmup"}}
    assert sweep_module.first_difference(older, a) is None
    assert sweep_module.first_difference(older, sweep_module.make_plan(preset="mini", lam_warmup=100).identity()) \
        .startswith("lam_warmup (0 there, 100 now)")


def test_help_lists_train_flags_and_either_import_order_works(capsys):
    assert main(["sweep", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--datasets", "--seeds", "--preset", "--address", "--cpus-per-run", "--gpus-per-run",
                 "--lam", "--graph", "--local-window", "--carve-test", "--epochs", "--device"):
        assert flag in text
    result = subprocess.run([sys.executable, "-c", "import dagwire.sweep as s; print(len(s.sweep_command.params))"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(cli.get_command(None, "sweep").params)
    # The CLI imports the sweep package only when the command is used (and nothing imports cli.py back).
    lazy = subprocess.run([sys.executable, "-c", "import sys, dagwire.cli; print('dagwire.sweep' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert lazy.stdout.strip() == "False", lazy.stderr
    no_cycle = subprocess.run([sys.executable, "-c", "import sys, dagwire.sweep; print('dagwire.cli' in sys.modules)"],
                              capture_output=True, text=True, timeout=60)
    assert no_cycle.stdout.strip() == "False", no_cycle.stderr


# ---------------------------------------------------------------------------------------------
# A sweep through Ray


def test_tiny_sweep_writes_every_run_and_the_table(tiny_sweep, data):
    out, _ = tiny_sweep
    df = pd.read_csv(out / "runs.csv")
    expected = [*tables.BASE_COLUMNS, *tables.feature_columns(2),
                *[f"dyn_{k}" for k in tables.DYNAMICS_KEYS]]
    assert list(df.columns) == expected
    datasets = [data["a"], data["b"]]
    assert list(zip(df["dataset"], df["seed"])) == [(d, s) for d in datasets for s in (0, 1)]
    assert (df["status"] == "done").all() and df["error"].isna().all()
    parquet = pd.read_parquet(out / "runs.parquet")
    assert list(parquet.columns) == expected and len(parquet) == 4
    assert parquet["disconnected"].dtype == "boolean" and parquet["nodes"].dtype == "Int64"
    pd.testing.assert_frame_equal(sweep_module.collect_runs(out), parquet)
    assert (out / "sweep.yaml").is_file()

    for _, row in df.iterrows():
        run = out / row["run_dir"]
        assert run.parent.parent == out / "runs" and run.name == f"seed{row['seed']}"
        for name in RUN_FILES:
            assert (run / name).is_file(), (run, name)
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "done" and status["seed"] == row["seed"] and status["dataset"] == row["dataset"]
        # The table holds what the files hold, and the files what the graph gives.
        learned = specs.load(run / "graph.json")
        assert learned.meta["seed"] == row["seed"] and learned.num_edges == 15
        assert row["test_accuracy"] == pytest.approx(learned.meta["test_accuracy"])
        features = graphs.features(learned, 0.006, 2, in_channels=3, num_classes=4)
        # approx: the Kamada-Kawai layout may differ in the last bits between BLAS thread counts
        assert json.loads((run / "features.json").read_text()) == pytest.approx({**features, "disconnected": False})
        assert row["sparsity"] == pytest.approx(features["sparsity"]) and row["nodes"] == features["nodes"]
        assert row["parameters"] == features["parameters"] and bool(row["disconnected"]) is False
        pruned = graphs.prune(learned, 0.006)
        assert row["dyn_edges"] == pruned.num_edges == json.loads((run / "dynamics.json").read_text())["edges"]
        assert 0 <= row["dyn_dsc_largest"] <= 1
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert row["mean_epoch_seconds"] == pytest.approx(np.mean([m["seconds"] for m in metrics]))
        thresholds = pd.read_csv(run / "thresholds.csv")
        assert list(thresholds["threshold"]) == sorted(TAU_GRID)
        # Capacity, fit, collapse and CPU columns: from the run's own config, network and metrics.
        assert (row["channels"], row["stages"], row["initial_nodes"]) == (2, 2, 6)
        network = create_model(specs.load(run / "initial_graph.json"), 2, 3, 4)
        assert row["initial_parameters"] == sum(p.numel() for p in network.parameters())
        assert row["train_eval_accuracy"] == pytest.approx(learned.meta["train_eval_accuracy"])
        assert 0 <= row["train_eval_accuracy"] <= 1
        assert bool(row["collapsed"]) is learned.meta["collapsed"] is False
        assert row["cpu"] == cpu_label() == metrics[0]["cpu"]


def test_seed_major_keeps_the_plans_seed_order_when_a_dataset_is_ahead():
    # A resumed sweep: dataset a has finished seed 100, so its first run to do is seed 101.
    todo = [("a", 101, "ra1"), ("a", 102, "ra2"), ("b", 100, "rb0"), ("b", 101, "rb1"), ("c", 100, "rc0")]
    from dagwire.sweep.plan import seed_major

    assert [(d, s) for d, s, _ in seed_major(todo, [100, 101, 102])] == [
        ("b", 100), ("c", 100), ("a", 101), ("b", 101), ("a", 102)]


def test_runs_start_seed_major_one_slot_at_a_time(tmp_path, data):
    """Every dataset of a seed starts before the next seed (Ray alone starts queued tasks in any order)."""
    out = tmp_path / "order"
    # 2 CPUs a run on the module's 2-CPU Ray: one slot, so the start order is the submission order.
    assert sweep("--datasets", f"{data['a']},{data['b']}", "--seeds", "3,1", *TINY, "--epochs", "1",
                 "--cpus-per-run", "2", "--out", out) == 0
    df = pd.read_csv(out / "runs.csv")
    started = sorted(zip(((out / r / "config.yaml").stat().st_mtime_ns for r in df["run_dir"]),
                         df["dataset"], df["seed"]))
    assert [(d, s) for _, d, s in started] == [(data["a"], 3), (data["b"], 3), (data["a"], 1), (data["b"], 1)]


def test_runs_at_once_leaves_the_other_cores_free(tmp_path, data, capsys):
    """--runs-at-once 1 on the module's 2-CPU Ray: each run starts only after the one before has finished."""
    out = tmp_path / "one"
    args = ["--datasets", f"{data['a']},{data['b']}", "--seeds", "0", *TINY, "--epochs", "1", "--out", out]
    assert sweep(*[a for a in args if a != "--quiet"], "--runs-at-once", "1") == 0
    assert ", 1 at a time" in capsys.readouterr().err
    runs = [out / r for r in pd.read_csv(out / "runs.csv")["run_dir"]]
    spans = sorted(((r / "config.yaml").stat().st_mtime_ns, (r / "status.json").stat().st_mtime_ns) for r in runs)
    assert spans[1][0] > spans[0][1]  # two at a time would start both before either finished
    assert sweep(*args, "--runs-at-once", "0") == 2
    assert "--runs-at-once must be at least 1, got 0" in capsys.readouterr().err


def test_rerun_of_a_finished_sweep_runs_nothing(tiny_sweep):
    out, args = tiny_sweep
    runs = [out / r for r in pd.read_csv(out / "runs.csv")["run_dir"]]
    before = mtimes(runs)
    assert sweep(*args) == 0
    assert mtimes(runs) == before
    # `--out DIR` alone continues the sweep stored there.
    assert sweep("--out", out, "--quiet") == 0
    assert mtimes(runs) == before


def _bad_inputs(data):
    return [
        (["--datasets", f"{data['a']},nosuchset", "--seeds", "0-1"], "unknown dataset 'nosuchset'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--datasets", data["a"], "--seeds", "0-x"], "--seeds '0-x'"),
        (["--datasets", data["a"], "--seeds", "2-1"], "is empty"),
        (["--datasets", data["a"], "--seeds", "0-1", "--cpus-per-run", "0"], "--cpus-per-run"),
    ]


def test_bad_input_exits_2_with_one_line_and_touches_nothing(tiny_sweep, data, tmp_path, capsys):
    out, args = tiny_sweep
    before = snapshot(out)
    cases = _bad_inputs(data) + [
        ([*args[:-2], "--address", "127.0.0.1:1"], "no Ray cluster reachable"),
        ([*args[:-2], "--lam", "0.01"], "was made by a different configuration: lam (0.001 there, 0.01 now)"),
        ([("0-2" if a == "0-1" else a) for a in args[:-2]], "different configuration: seeds ([0, 1] there"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        started = time.perf_counter()
        assert sweep(*extra, "--out", out) == 2, extra
        assert time.perf_counter() - started < 20
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("dagwire: error:") and message in err, (extra, err)
        assert snapshot(out) == before, extra
        # ... and a new directory is not even created.
        fresh = tmp_path / "fresh"
        if "different configuration" not in message:
            assert sweep(*extra, "--out", fresh) == 2 and not fresh.exists(), extra
            capsys.readouterr()


def test_out_that_is_not_a_sweep_is_refused(tmp_path, data, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert sweep("--datasets", data["a"], "--seeds", "0", *TINY, "--out", tmp_path / "other") == 2
    assert "not a sweep directory" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_failed_run_is_recorded_and_retried(tmp_path, data, capsys):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not an npz file at all" * 20)
    out = tmp_path / "sweep"
    args = ["--datasets", f"{data['a']},npz:{corrupt}", "--seeds", "0-1", *TINY, "--epochs", "1", "--out", out]
    assert sweep(*args) == 1
    err = capsys.readouterr().err
    assert "2 of 4 runs failed" in err
    df = pd.read_csv(out / "runs.csv")
    good, bad = df[df["dataset"] == data["a"]], df[df["dataset"] == f"npz:{corrupt}"]
    assert list(good["status"]) == ["done", "done"] and good["nodes"].notna().all()
    assert list(bad["status"]) == ["failed", "failed"] and bad["nodes"].isna().all()
    assert all("cannot read" in e and "\n" not in e for e in bad["error"])
    for run in bad["run_dir"]:
        status = json.loads((out / run / "status.json").read_text())
        assert status["status"] == "failed" and "cannot read" in status["error"]
        assert (out / run / "error.log").is_file()

    # Repaired data: a rerun retries the failed runs only.
    done_before = mtimes([out / r for r in good["run_dir"]])
    write_npz(corrupt, 2)
    assert sweep(*args) == 0
    df = pd.read_csv(out / "runs.csv")
    assert (df["status"] == "done").all() and df["error"].isna().all()
    assert mtimes([out / r for r in good["run_dir"]]) == done_before
    assert not any((out / r / "error.log").exists() for r in df["run_dir"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the killed sweep's processes in /proc")
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, data):
    out = tmp_path / "sweep"
    # Two runs, one at a time (2 CPUs per run), so that when the first is done the second is
    # mid-training: one finished run and one interrupted run are all the resume has to keep apart.
    args = ["--datasets", data["a"], "--seeds", "0-1", *TINY, "--epochs", "8", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "dagwire.cli", "sweep", *args, "--cpus-per-run", "2"],
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # left as soon as both are seen; a loaded machine starts runs slowly
    done, training = [], []
    try:
        while time.monotonic() < deadline and process.poll() is None:
            runs = sorted(out.glob("runs/*/seed*"))
            done = [r for r in runs if (r / "status.json").exists()]
            training = [r for r in runs if (r / "metrics.jsonl").exists() and not (r / "graph.json").exists()]
            if done and training:
                break
            time.sleep(0.01)
    finally:
        kill_session(process.pid)  # the driver, its Ray processes and workers (their own groups)
        process.wait()
    assert done and training, f"never caught the sweep mid-run: {process.stderr.read().decode()[-2000:]}"
    assert len(done) == 1 and len(training) == 1
    finished = mtimes(done)
    epochs_at_kill = {r: torch.load(r / "checkpoint.pt", weights_only=True)["epoch"] for r in training}
    metrics_at_kill = {r: (r / "metrics.jsonl").read_text().splitlines() for r in training}

    assert sweep(*args) == 0
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == 2 and (df["status"] == "done").all()
    assert mtimes(done) == finished  # finished runs were not redone
    for run, epochs in epochs_at_kill.items():
        status = json.loads((run / "status.json").read_text())
        assert status["resumed_from_epoch"] == epochs >= 1
        # Continued from its checkpoint: the epochs before the kill (their timings too) are kept, not redone.
        before = metrics_at_kill[run]
        assert before and (run / "metrics.jsonl").read_text().splitlines()[:len(before)] == before
    for run in df["run_dir"]:
        metrics = [json.loads(x) for x in (out / run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == list(range(1, 9))


# ---------------------------------------------------------------------------------------------
# --retrain: each run's pruned network retrained from scratch (same C, fitted C)


def test_old_sweep_file_without_retrain_counts_as_false():
    with_false = sweep_module.make_plan(preset="mini").identity()
    assert with_false["retrain"] is False
    old = {k: v for k, v in with_false.items() if k != "retrain"}  # a sweep.yaml from before --retrain
    assert sweep_module.plan_from_identity(old).retrain is False
    assert sweep_module.first_difference(old, with_false) is None
    with_true = sweep_module.make_plan(preset="mini", retrain=True).identity()
    assert sweep_module.first_difference(old, with_true) == "retrain (False there, True now)"
    assert sweep_module.plan_from_identity(with_true).retrain is True


def test_sweep_without_retrain_leaves_the_retrain_columns_empty(tiny_sweep):
    out, _ = tiny_sweep
    df = pd.read_csv(out / "runs.csv")
    assert df[list(tables.RETRAIN_COLUMNS)].isna().all().all()
    assert not list(out.glob("runs/*/seed*/retrain-*"))


@pytest.fixture(scope="module")
def retrain_sweep(tmp_path_factory, data):
    """A finished sweep with --retrain: 1 dataset × 2 seeds, 1 epoch each."""
    out = tmp_path_factory.mktemp("sweeps") / "retrain"
    args = ["--datasets", data["a"], "--seeds", "0-1", *TINY, "--epochs", "1", "--retrain", "--out", out]
    assert sweep(*args) == 0
    return out, args


def test_retrain_sweep_retrains_each_pruned_network(retrain_sweep):
    from dagwire import counts
    from dagwire.prune import full_parameter_count, load_run
    from dagwire.report_sections import with_retrain_columns

    out, _ = retrain_sweep
    df = pd.read_csv(out / "runs.csv")
    assert list(df.columns)[:len(tables.BASE_COLUMNS)] == list(tables.BASE_COLUMNS)
    assert (df["status"] == "done").all() and len(df) == 2
    parquet = pd.read_parquet(out / "runs.parquet")
    assert parquet["retrained_fit_channels"].dtype == "Int64"
    pd.testing.assert_frame_equal(sweep_module.collect_runs(out), parquet)
    assert yaml_load(out / "sweep.yaml")["retrain"] is True
    for _, row in df.iterrows():
        run = out / row["run_dir"]
        pruned = graphs.prune(specs.load(run / "graph.json"), 0.006)
        full = full_parameter_count(load_run(run))
        assert full == counts.parameter_count(specs.complete(6, 2), 2, 3, 4)
        fitted = counts.fit_channels(pruned, full, 3, 4)
        for name, channels, accuracy, seconds in (
                ("retrain-0.006", 2, "retrained_accuracy", "retrain_mean_epoch_seconds"),
                ("retrain-0.006-fitC", fitted, "retrained_fit_accuracy", "retrain_fit_mean_epoch_seconds")):
            retrained = specs.load(run / name / "graph.json")
            assert retrained.edges == pruned.edges, name
            assert retrained.meta["channels"] == channels and retrained.meta["seed"] == row["seed"] + 1000
            assert row[accuracy] == pytest.approx(retrained.meta["test_accuracy"])
            metrics = [json.loads(x) for x in (run / name / "metrics.jsonl").read_text().splitlines()]
            assert len(metrics) == 1 and row[seconds] == pytest.approx(metrics[0]["seconds"])
        assert row["retrained_fit_channels"] == fitted
        assert json.loads((run / "status.json").read_text())["retrain"] == "done"
    # The report finds them where it looks.
    report = with_retrain_columns(df.assign(run_dir=[str(out / r) for r in df["run_dir"]], done=True))
    assert np.allclose(report["acc_retrained"], 100 * df["retrained_accuracy"])
    assert np.allclose(report["acc_retrained_fitc"], 100 * df["retrained_fit_accuracy"])
    assert np.allclose(report["seconds_retrain_fitc"], df["retrain_fit_mean_epoch_seconds"])


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_retrain_sweep_rerun_resumes_retrainings_and_refuses_another_retrain_value(retrain_sweep, capsys):
    out, args = retrain_sweep
    runs = [out / r for r in pd.read_csv(out / "runs.csv")["run_dir"]]
    names = ("status.json", "graph.json", "retrain-0.006/graph.json", "retrain-0.006-fitC/graph.json")
    before = mtimes(runs, names)
    assert sweep(*args) == 0 and sweep("--out", out, "--quiet") == 0
    assert mtimes(runs, names) == before
    # Without --retrain this is another sweep.
    before_all = snapshot(out)
    assert sweep(*[a for a in args if a != "--retrain"]) == 2
    assert "different configuration: retrain (True there, False now)" in capsys.readouterr().err
    assert snapshot(out) == before_all

    # A run interrupted in its fitted-C retraining (after its checkpoint, before graph.json): the rerun
    # continues that retraining from its checkpoint and keeps the finished one.
    run = runs[0]
    fitc = run / "retrain-0.006-fitC"
    (run / "status.json").unlink()
    (fitc / "graph.json").unlink()
    (fitc / "weights.pt").unlink()
    metrics = (fitc / "metrics.jsonl").read_text()
    same = mtimes([run], ("retrain-0.006/graph.json", "retrain-0.006/metrics.jsonl"))
    assert sweep(*args) == 0
    assert mtimes([run], ("retrain-0.006/graph.json", "retrain-0.006/metrics.jsonl")) == same
    assert (fitc / "metrics.jsonl").read_text() == metrics and (fitc / "graph.json").is_file()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["retrain"] == "done"
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row["retrained_fit_accuracy"] == pytest.approx(specs.load(fitc / "graph.json").meta["test_accuracy"])


def test_retrain_sweep_skips_a_disconnected_graph(tmp_path, data):
    out = tmp_path / "sweep"
    assert sweep("--datasets", data["a"], "--seeds", "0", *TINY, "--epochs", "1", "--threshold", "0.99",
                 "--retrain", "--out", out) == 0
    df = pd.read_csv(out / "runs.csv")
    assert list(df["status"]) == ["done"] and bool(df["disconnected"][0]) is True
    assert df[list(tables.RETRAIN_COLUMNS)].isna().all().all()
    run = out / df["run_dir"][0]
    status = json.loads((run / "status.json").read_text())
    assert status["retrain"] == "skipped" and status["note"] == "retrain skipped: disconnected"
    assert not list(run.glob("retrain-*"))


def test_seed_groups_hold_k_runs_of_one_dataset():
    todo = [("a", 0, "r/a/0"), ("a", 1, "r/a/1"), ("b", 0, "r/b/0"), ("a", 2, "r/a/2"), ("b", 1, "r/b/1")]
    assert [[(d, s) for d, s, _ in g] for g in sweep_module.seed_groups(todo, 2)] == [
        [("a", 0), ("a", 1)], [("b", 0), ("b", 1)], [("a", 2)]]
    assert len(sweep_module.seed_groups(todo, 1)) == 5


def test_batch_seeds_sweep_gives_the_runs_of_a_plain_sweep(tiny_sweep, data, tmp_path):
    plain, args = tiny_sweep
    out = tmp_path / "batched"
    batched_args = [*args[:-1], out, "--batch-seeds", "2"]
    assert sweep(*batched_args) == 0
    df = pd.read_csv(out / "runs.csv")
    assert (df["status"] == "done").all() and len(df) == 4
    for rel in df["run_dir"]:
        for name in RUN_FILES:
            assert (out / rel / name).is_file(), (rel, name)
        a = torch.load(plain / rel / "weights.pt", weights_only=True)
        b = torch.load(out / rel / "weights.pt", weights_only=True)
        assert all(torch.allclose(a[k].double(), b[k].double(), atol=1e-5) for k in a), rel
    # --batch-seeds is how the runs are scheduled, not what they are: the sweep file is the plain one's.
    assert (out / "sweep.yaml").read_text() == (plain / "sweep.yaml").read_text()


# ---------------------------------------------------------------------------------------------
# One sweep per DIR at a time


def held_by(pid: int, since: str = "") -> str:
    """The start of the one line a sweep refused on a DIR held by `pid` (of this host) prints."""
    return f"is in use by another dagwire sweep: pid {pid} on host {socket.gethostname()}, since {since}"


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           timeout=60)
    return int(child.stdout)


def test_hold_excludes_a_second_holder_and_takes_over_a_stale_one(tmp_path):
    from dagwire.sweep.hold import HOLD_FILE, hold_sweep_dir

    new = tmp_path / "a" / "b"
    with hold_sweep_dir(new):
        holder = json.loads((new / HOLD_FILE).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(DagwireError, match=re.escape(f"{new} {held_by(os.getpid(), holder['since'])}; wait")):
            with hold_sweep_dir(new):
                pass
        assert json.loads((new / HOLD_FILE).read_text()) == holder
    assert not (tmp_path / "a").exists()  # the hold made them; nothing was written into them

    # A killed sweep's file (its pid gone, its lock gone with it) is taken over; a held DIR keeps its files.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / HOLD_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "since": "then"}))
    with hold_sweep_dir(kept):
        (kept / "result").write_text("x")
        assert json.loads((kept / HOLD_FILE).read_text())["pid"] == os.getpid()
    assert [p.name for p in kept.iterdir()] == ["result"]
    # Where DIR cannot be: one line.
    (tmp_path / "file").write_text("")
    with pytest.raises(DagwireError, match=re.escape(f"--out {tmp_path / 'file' / 'x'}: cannot create ")):
        with hold_sweep_dir(tmp_path / "file" / "x"):
            pass


def test_sweep_on_a_held_dir_exits_2_and_touches_nothing(tiny_sweep, capsys):
    from dagwire.sweep.hold import hold_sweep_dir

    out, args = tiny_sweep
    with hold_sweep_dir(out):
        before = snapshot(out)
        assert sweep(*args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dagwire: error: {out} {held_by(os.getpid())}") and err.count("\n") == 1
        assert snapshot(out) == before  # the marker too: the holder's tasks go on reading their token


def _runs_lock(run: Path):
    """RUN/.lock, locked by this test: the task of a sweep for that run waits there until it is released."""
    import fcntl

    from dagwire.rundir import RunDir

    lock = open(RunDir(run).lock, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _start_held_sweep(tmp_path: Path, data) -> tuple[Path, subprocess.Popen, object]:
    """A `dagwire sweep` child process whose one run's task waits on a run lock this test holds.

    Returns DIR, the process (its own session) and the lock (close it to let the run go on), once
    the child holds DIR and has marked the run pending in both tables (marker written, task submitted).
    """
    out = tmp_path / "sweep"
    assert sweep("--datasets", data["a"], "--seeds", "0", *TINY, "--epochs", "1", "--out", out) == 0
    run = out / "runs" / "npz-a" / "seed0"
    (run / "status.json").unlink()  # trained, no longer measured: the next sweep measures it again
    lock = _runs_lock(run)
    first = subprocess.Popen([sys.executable, "-m", "dagwire.cli", "sweep", "--out", str(out), "--quiet"],
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and first.poll() is None:
        try:
            held = json.loads((out / ".dagwire-lock").read_text())["pid"] == first.pid
            # Both tables written (runs.parquet comes after runs.csv) and no write under way: DIR
            # then stays as it is until the run's lock is let go.
            pending = (list(pd.read_csv(out / "runs.csv")["status"]) == ["pending"]
                       and list(pd.read_parquet(out / "runs.parquet")["status"]) == ["pending"]
                       and not list(out.glob(".*.tmp")))
        except (OSError, ValueError, KeyError):
            held = pending = False
        if held and pending:
            return out, first, lock
        time.sleep(0.05)
    kill_session(first.pid)
    lock.close()
    raise AssertionError(f"the first sweep never held DIR: {first.communicate()[1][-2000:]}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="stops the child sweep's processes through /proc")
def test_second_sweep_process_stops_at_once_and_the_first_finishes(tmp_path, data):
    out, first, lock = _start_held_sweep(tmp_path, data)
    try:
        since = json.loads((out / ".dagwire-lock").read_text())["since"]
        before = snapshot(out)
        second = subprocess.run([sys.executable, "-m", "dagwire.cli", "sweep", "--out", str(out), "--quiet"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr == f"dagwire: error: {out} {held_by(first.pid, since)}; wait for it to finish (or " \
                                "stop it), then run this again\n"
        assert snapshot(out) == before  # the first sweep's marker, table and runs as they were
        lock.close()  # the first sweep's task goes on
        _, err = first.communicate(timeout=300)
    finally:
        lock.close()
        kill_session(first.pid)
    assert first.returncode == 0, err[-2000:]
    df = pd.read_csv(out / "runs.csv")
    assert list(df["status"]) == ["done"] and df["error"].isna().all()
    assert not (out / ".dagwire-lock").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="kills the child sweep's processes through /proc")
def test_hold_of_a_killed_sweep_process_is_taken_over(tmp_path, data):
    out, first, lock = _start_held_sweep(tmp_path, data)
    try:
        kill_session(first.pid)
        first.wait(timeout=60)
    finally:
        lock.close()
    assert json.loads((out / ".dagwire-lock").read_text())["pid"] == first.pid  # left behind, its pid gone
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)
    assert sweep("--out", out, "--quiet") == 0
    assert list(pd.read_csv(out / "runs.csv")["status"]) == ["done"]
    assert not (out / ".dagwire-lock").exists()


def test_capacity_preset_is_repro_with_the_longer_ramped_first_phase():
    plan = sweep_module.make_plan(preset="capacity", channels=4)
    repro = sweep_module.make_plan(preset="repro")
    config = plan.run_config("cfashionmnist_t8", 0)
    assert [(round(lr, 6), steps) for lr, steps in sweep_module.plan.lr_phases(config, 40)] == \
        [(0.1, 800), (0.01, 240), (0.001, 800)]
    assert (config.channels, config.lam_warmup, config.lam) == (4, 800, 5e-3)
    assert config.lam_at(400) == 2.5e-3 and config.lam_at(800) == 5e-3
    differ = {k for k in plan.config if plan.config[k] != repro.config[k]}
    assert differ == {"epochs", "lr_milestones", "lam_warmup"}  # channels given as repro's 4
    assert plan.per_dataset == repro.per_dataset and plan.seeds == repro.seeds == [0, 1, 2, 3, 4]
    assert sweep_module.make_plan(preset="capacity").config["channels"] == 8


def test_the_expected_time_counts_what_resuming_runs_have_left():
    """Two runs half done and three new, two at a time: 2.5 runs' time in all (0.5, 0.5, then 1 + 1, then 1), not 3."""
    from dagwire.sweep.plan import _makespan

    assert _makespan([1.0] * 5, 2) == 3.0  # new runs only: ceil(5 / 2) runs' time
    assert _makespan([0.5, 0.5, 1.0, 1.0, 1.0], 2) == 2.5
    assert _makespan([0.25, 1.0, 1.0], 2) == 1.25  # the third run waits for the first slot to free

    plan = sweep_module.make_plan(preset="long")

    def expected(left):
        line = sweep_module.describe_plan(plan, 5, slots=2, step_seconds=1.0, left=left)[-1]
        minutes, hours = re.match(r"expected: about (\d+) min a run, ([\d.]+) h in all", line).groups()
        return int(minutes), float(hours)

    minutes, fresh = expected([])
    assert fresh == pytest.approx(3 * minutes / 60, abs=0.1)  # three rounds of two runs (minutes are rounded)
    assert expected([0.5, 0.5]) == (minutes, pytest.approx(fresh * 2.5 / 3, abs=0.1))
    assert expected([1.0, 1.0, 1.0, 1.0, 1.0]) == (minutes, fresh)


def test_a_run_resuming_from_its_checkpoint_has_the_share_of_its_epochs_left(tmp_path):
    from dagwire.config import build_config
    from dagwire.sweep.runner import share_left

    config = build_config(None, epochs=8)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2)))
    assert share_left(config, run) == 1.0  # no checkpoint: it starts again from the first epoch
    (run / "checkpoint.pt").write_bytes(b"")
    assert share_left(config, run) == 0.75
