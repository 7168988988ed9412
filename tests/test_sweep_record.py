"""A sweep's record is portable: the committed study, copied elsewhere, resumes with nothing to train; its runs'
config.yaml files and every other committed record name their places relative to the checkout.

Nothing here trains or starts Ray: every run of the committed study is finished.
"""

import shutil
from pathlib import Path

import pytest
from conftest import snapshot

from dagwire import sweep as sweep_module
from dagwire.cli import main
from dagwire import portable

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "repro" / "sweep"
SHARED = (ROOT.parent / "shared" / "data").resolve()  # <checkout>/../shared/data on this machine
PORTABLE_LINE = "  data_dir: <checkout>/../shared/data\n"


@pytest.fixture()
def copied_study(tmp_path):
    """docs/repro/sweep copied into another place, outside the checkout."""
    copy = tmp_path / "elsewhere" / "study"
    shutil.copytree(STUDY, copy)
    return copy


def runs_files(sweep_dir: Path) -> dict:
    """Every file of the runs (bytes and modification times), and the bytes of every other file."""
    files = snapshot(sweep_dir)
    return {k: v if k.startswith("runs/") else v[1] for k, v in files.items()}


def test_recorded_paths_are_relative_to_the_checkout_where_they_can_be(tmp_path):
    root = portable.checkout_root()
    assert root == ROOT
    assert portable.recorded_path(SHARED) == "<checkout>/../shared/data" == portable.SHARED_DATA
    assert portable.recorded_path(SHARED / "mnist") == "<checkout>/../shared/data/mnist"
    assert portable.recorded_path(root / "data" / "x") == "<checkout>/data/x"
    assert portable.recorded_path(root) == "<checkout>"
    assert portable.recorded_path(tmp_path) == str(tmp_path.resolve())  # elsewhere: absolute, as before
    assert portable.resolved_path("<checkout>/../shared/data") == str(SHARED)
    assert portable.resolved_path("<checkout>/data/x") == str(root / "data" / "x")
    assert portable.resolved_path(tmp_path) == str(tmp_path.resolve())
    # Recording is idempotent: a recorded form records as itself.
    assert portable.recorded_path("<checkout>/../shared/data/mnist") == "<checkout>/../shared/data/mnist"


def test_the_committed_study_records_its_data_by_its_place_beside_the_checkout():
    text = (STUDY / "sweep.yaml").read_text()
    assert PORTABLE_LINE in text and str(SHARED) not in text
    stored = sweep_module.read_sweep_file(STUDY)
    assert portable.portable_identity(stored) == stored  # nothing left to migrate
    plan = sweep_module.plan_from_identity(stored)
    assert {plan.run_config(d, s).data_dir for d in plan.datasets for s in plan.seeds} == {str(SHARED)}


def test_a_copied_study_resumes_elsewhere_and_trains_nothing(copied_study, tmp_path, monkeypatch, capsys):
    before = runs_files(copied_study)
    assert main(["sweep", "--out", str(copied_study), "--quiet"]) == 0
    assert f"sweep {copied_study}: 15/15 done, 0 failed (0 run now)" in capsys.readouterr().out
    assert runs_files(copied_study) == before  # no run touched; runs.csv and sweep.yaml the same bytes
    assert main(["sweep", "--preset", "repro", "--out", str(copied_study), "--quiet"]) == 0
    assert "15/15 done, 0 failed (0 run now)" in capsys.readouterr().out

    # Another machine: a checkout elsewhere, its shared data beside it. The same record resolves there.
    clone, shared = tmp_path / "clone", tmp_path / "shared" / "data"
    clone.mkdir()
    shared.mkdir(parents=True)
    monkeypatch.setattr(portable, "checkout_root", lambda: clone)
    plan = sweep_module.plan_from_identity(sweep_module.read_sweep_file(copied_study))
    assert plan.run_config("cmnist", 0).data_dir == str(shared.resolve())
    assert main(["sweep", "--out", str(copied_study), "--quiet"]) == 0
    assert main(["sweep", "--preset", "repro", "--out", str(copied_study), "--quiet"]) == 0
    assert capsys.readouterr().out.count("15/15 done, 0 failed (0 run now)") == 2
    assert runs_files(copied_study) == before


def test_an_old_absolute_record_is_migrated_by_resuming_it(copied_study, capsys):
    committed = (STUDY / "sweep.yaml").read_text()
    old = committed.replace(PORTABLE_LINE, f"  data_dir: {SHARED}\n")
    assert old != committed
    (copied_study / "sweep.yaml").write_text(old)
    before = runs_files(copied_study)

    # The old form and the new form name one place: the same sweep.
    old_identity = sweep_module.read_sweep_file(copied_study)
    assert sweep_module.first_difference(old_identity, sweep_module.make_plan(preset="repro").identity()) is None
    elsewhere = {**old_identity, "config": {**old_identity["config"], "data_dir": "/srv/other-data"}}
    assert sweep_module.first_difference(old_identity, elsewhere).startswith(
        f"data_dir ({str(SHARED)!r} there, '/srv/other-data' now)")

    assert main(["sweep", "--out", str(copied_study), "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "sweep.yaml" in line]
    assert notes == [f"{copied_study / 'sweep.yaml'}: its places (data_dir, a graph file) now recorded relative to "
                     "the dagwire checkout (the same place), so that it resolves on another machine"]
    assert (copied_study / "sweep.yaml").read_text() == committed  # only data_dir's line changed
    after = runs_files(copied_study)
    assert {k: v for k, v in after.items() if k != "sweep.yaml"} == {k: v for k, v in before.items() if k != "sweep.yaml"}
    # A record of a place outside the checkout stays as it is.
    assert portable.portable_identity(elsewhere) == elsewhere


@pytest.mark.slow
def test_report_of_a_copied_study_works_there(copied_study, capsys):
    assert main(["report", str(copied_study)]) == 0
    assert capsys.readouterr().out.split() == [str(copied_study / "report.html"), str(copied_study / "report.md")]
    report = (copied_study / "report.md").read_text()
    assert "15 runs: 15 done" in report and PORTABLE_LINE in report


def _old_record(config: Path) -> str:
    """A run's config.yaml as it was written before runs recorded their places portably: data_dir absolute."""
    text = config.read_text()
    assert "data_dir: <checkout>/../shared/data\n" in text
    return text.replace("data_dir: <checkout>/../shared/data\n", f"data_dir: {SHARED}\n")


def test_a_sweep_records_its_graph_file_relative_to_the_checkout_and_resolves_it(tmp_path):
    """--graph FILE inside the checkout: sweep.yaml names it <checkout>/…, each run gets it as this machine's path."""
    graph = STUDY / "runs" / "cmnist" / "seed0" / "initial_graph.json"  # a committed graph file
    plan = sweep_module.make_plan(datasets="cmnist", seeds="0", graph=str(graph), check_files=False)
    recorded = "<checkout>/docs/repro/sweep/runs/cmnist/seed0/initial_graph.json"
    assert plan.identity()["config"]["graph"] == recorded
    assert plan.run_config("cmnist", 0).graph == str(graph)
    # The same place recorded absolutely, as sweeps before this did: the same runs, and upgraded in place.
    old = {**plan.identity(), "config": {**plan.identity()["config"], "graph": str(graph)}}
    assert sweep_module.first_difference(old, plan.identity()) is None
    assert portable.portable_identity(old) == plan.identity()
    # A graph file outside the checkout stays absolute.
    outside = tmp_path / "g.json"
    shutil.copy(graph, outside)
    elsewhere = sweep_module.make_plan(datasets="cmnist", seeds="0", graph=str(outside), check_files=False)
    assert elsewhere.identity()["config"]["graph"] == str(outside.resolve())


def test_a_run_records_its_places_relative_to_the_checkout_and_reads_them_back(tmp_path):
    from dagwire.config import TrainConfig
    from dagwire.train import load_run_config

    graph = ROOT / "configs" / "some_graph.json"  # a graph file inside the checkout (need not exist to be named)
    config = TrainConfig(dataset="cmnist", data_dir=str(SHARED), graph=str(graph), epochs=3)
    run = tmp_path / "run"
    run.mkdir()
    config.save(run / "config.yaml")
    text = (run / "config.yaml").read_text()
    assert "data_dir: <checkout>/../shared/data\n" in text and "graph: <checkout>/configs/some_graph.json\n" in text
    assert str(ROOT) not in text
    assert load_run_config(run) == config  # resolved on this machine: the same run
    # An old record of the same place reads as the same run: a resumed run needs no rewrite.
    (run / "config.yaml").write_text(text.replace("<checkout>/../shared/data", str(SHARED)))
    assert load_run_config(run) == config
    # A place outside the checkout stays absolute; the graph kinds are no places.
    elsewhere = TrainConfig(dataset="cmnist", data_dir=str(tmp_path / "data"), graph="local")
    elsewhere.save(run / "config.yaml")
    assert load_run_config(run) == elsewhere and f"data_dir: {tmp_path / 'data'}\n" in (run / "config.yaml").read_text()


def test_upgrade_rewrites_old_records_in_place_and_only_their_places(copied_study, capsys):
    configs = sorted(copied_study.rglob("config.yaml"))
    committed = {c: c.read_text() for c in configs}
    sweep_file = (copied_study / "sweep.yaml").read_text()
    for c in configs:
        c.write_text(_old_record(c))
    (copied_study / "sweep.yaml").write_text(sweep_file.replace(PORTABLE_LINE, f"  data_dir: {SHARED}\n"))
    assert main(["upgrade", str(copied_study.parent)]) == 0
    out = capsys.readouterr()
    assert sorted(out.out.split()) == sorted([str(copied_study / "sweep.yaml"), *map(str, configs)])
    assert f"{len(configs) + 1} record(s) rewritten" in out.err
    assert {c: c.read_text() for c in configs} == committed  # the same bytes as the committed records
    assert (copied_study / "sweep.yaml").read_text() == sweep_file
    assert main(["upgrade", str(copied_study)]) == 0  # nothing left to rewrite
    assert capsys.readouterr().out == ""


def test_upgrade_refuses_a_sweep_that_is_running_and_touches_nothing(copied_study, capsys):
    from dagwire.sweep.hold import hold_sweep_dir

    config = next(copied_study.rglob("config.yaml"))
    config.write_text(_old_record(config))
    before = snapshot(copied_study)
    with hold_sweep_dir(copied_study):  # as a live sweep holds its DIR
        assert main(["upgrade", str(copied_study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another dagwire sweep" in err[0]
    assert snapshot(copied_study) == before
    assert main(["upgrade", "/nonexistent/dir"]) == 2


def test_a_resumed_sweep_upgrades_its_old_run_records_and_trains_nothing(copied_study, capsys):
    configs = sorted(copied_study.rglob("config.yaml"))
    committed = {c: c.read_text() for c in configs}
    for c in configs:
        c.write_text(_old_record(c))
    assert main(["sweep", "--out", str(copied_study), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "15/15 done, 0 failed (0 run now)" in captured.out
    assert f"{copied_study}: {len(configs)} run config(s) now record their places relative" in captured.err
    assert {c: c.read_text() for c in configs} == committed


# Absolute paths of the machines that wrote records: this checkout's own parent, and the usual homes.
MACHINE_PREFIXES = tuple(dict.fromkeys([str(ROOT.parent).rstrip("/") + "/", "/work/", "/home/", "/root/", "/Users/",
                                        "/tmp/"]))
def test_no_committed_record_under_docs_holds_an_absolute_path():
    found = []
    for path in sorted((ROOT / "docs").rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # images, arrays, weights: no paths
        found += [f"{path.relative_to(ROOT)}: {prefix}" for prefix in MACHINE_PREFIXES if prefix in text]
    assert not found, f"absolute paths (rewrite the records with `dagwire upgrade DIR`): {found[:10]}"


def test_a_rewritten_table_keeps_what_was_measured_at_the_same_tau_star(copied_study):
    """The layout's last bits differ between CPU kinds: a table rewritten elsewhere keeps the committed numbers,
    and measures afresh only where τ* moved."""
    from dagwire.sweep.table import collect_runs
    from dagwire.tables import read_runs_table, write_runs_table

    table = read_runs_table(copied_study)
    planted = table.assign(pca_elongation_at_tau_star=0.123456789)  # no graph of the study has this value
    write_runs_table(planted, copied_study)
    assert (collect_runs(copied_study)["pca_elongation_at_tau_star"] == 0.123456789).all()
    write_runs_table(planted.assign(tau_star=0.5), copied_study)  # another τ*: measured again
    assert (collect_runs(copied_study)["pca_elongation_at_tau_star"] != 0.123456789).all()
