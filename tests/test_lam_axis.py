"""λ as a sweep axis: several λ make the axis; one λ, and every sweep made before the axis, stay as they were."""

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_npz

from dagwire.cli import main
from dagwire.errors import DagwireError
from dagwire.sweep.plan import (first_difference, make_plan, parse_lams, plan_from_identity, read_sweep_file,
                                run_dir_names, write_sweep_file)

DOCS = Path(__file__).resolve().parents[1] / "docs"
# The committed sweeps made on the λ axis (docs/front/run.sh); every other committed sweep was made before it.
AXIS_SWEEPS = {DOCS / "front" / "lam": [0.0, 0.02, 0.05]}
RECORDED = sorted(p.parent for p in DOCS.rglob("sweep.yaml") if p.parent not in AXIS_SWEEPS)


def test_there_are_recorded_sweeps_to_check():
    assert len(RECORDED) >= 5 and DOCS / "capacity" / "sweep-c4" in RECORDED


@pytest.mark.parametrize("sweep_dir", [d for d in AXIS_SWEEPS if d.exists()], ids=lambda p: str(p.relative_to(DOCS)))
def test_a_recorded_sweep_on_the_axis_resumes_unchanged(sweep_dir):
    stored = read_sweep_file(sweep_dir)
    plan = plan_from_identity(stored)
    assert plan.lams == stored["lams"] == AXIS_SWEEPS[sweep_dir]
    assert first_difference(stored, plan.identity()) is None
    names = run_dir_names(plan.datasets)
    assert plan.runs() == [(d, s, f"runs/{names[d]}/lam{lam:g}/seed{s}")
                           for d in plan.datasets for lam in plan.lams for s in plan.seeds]


@pytest.mark.parametrize("sweep_dir", RECORDED, ids=lambda p: str(p.relative_to(DOCS)))
def test_a_sweep_made_before_the_axis_resumes_unchanged(sweep_dir):
    stored = read_sweep_file(sweep_dir)
    assert "lams" not in stored
    plan = plan_from_identity(stored)
    assert plan.lams is None and plan.identity() == stored  # what a resume compares, and would write, is what is there
    assert first_difference(stored, plan.identity()) is None
    names = run_dir_names(plan.datasets)
    assert plan.runs() == [(d, s, f"runs/{names[d]}/seed{s}") for d in plan.datasets for s in plan.seeds]
    assert all(lam is None for *_, lam in plan.lam_runs())
    for dataset in plan.datasets:
        assert plan.run_config(dataset, plan.seeds[0]).lam == stored["config"]["lam"]


@pytest.mark.parametrize("lam", [None, "0.005", 0.005, [0.005]])
def test_one_lam_is_a_plain_config_value(lam):
    stored = read_sweep_file(DOCS / "capacity" / "sweep-c4")
    plan = make_plan(preset="capacity", channels=4, lam=lam, check_files=False)
    assert plan.lams is None and "lams" not in plan.identity()
    assert first_difference(stored, plan.identity()) is None


def test_several_lams_make_the_axis(tmp_path):
    plan = make_plan(datasets="cfashionmnist", seeds="0-1", lam="0,1e-3,2e-2", check_files=False)
    assert plan.lams == [0.0, 0.001, 0.02] and plan.identity()["lams"] == [0.0, 0.001, 0.02]
    assert [(rel, lam) for _, _, rel, lam in plan.lam_runs()] == [
        ("runs/cfashionmnist/lam0/seed0", 0.0), ("runs/cfashionmnist/lam0/seed1", 0.0),
        ("runs/cfashionmnist/lam0.001/seed0", 0.001), ("runs/cfashionmnist/lam0.001/seed1", 0.001),
        ("runs/cfashionmnist/lam0.02/seed0", 0.02), ("runs/cfashionmnist/lam0.02/seed1", 0.02)]
    assert plan.run_config("cfashionmnist", 1, 0.02).lam == 0.02
    write_sweep_file(tmp_path, plan.identity())
    stored = read_sweep_file(tmp_path)
    assert first_difference(stored, plan_from_identity(stored).identity()) is None
    assert plan_from_identity(stored).lam_runs() == plan.lam_runs()
    single = make_plan(datasets="cfashionmnist", seeds="0-1", lam="0", check_files=False)
    assert first_difference(stored, single.identity()).startswith("lams ([0.0, 0.001, 0.02] there, None now)")
    other = make_plan(datasets="cfashionmnist", seeds="0-1", lam="0,1e-3", check_files=False)
    assert first_difference(stored, other.identity()).startswith("lams")


def test_the_axis_from_a_yaml_config(tmp_path):
    (tmp_path / "c.yaml").write_text("lam: [0, 0.005]\n")
    plan = make_plan(datasets="cmnist", seeds="0", config_path=str(tmp_path / "c.yaml"), check_files=False)
    assert plan.lams == [0.0, 0.005]


@pytest.mark.parametrize("text", ["0,0", "-1,0.1", "a,b", "0,inf", ""])
def test_bad_lams(text):
    with pytest.raises(DagwireError):
        parse_lams(text)


def test_a_sweep_on_the_axis_runs_each_lam_and_says_so_in_the_runs_table(tmp_path, capsys):
    data = write_npz(tmp_path / "a.npz")
    out = tmp_path / "sweep"
    args = ["sweep", "--datasets", data, "--seeds", "0", "--nodes", "6", "--stages", "2", "--channels", "2",
            "--batch-size", "16", "--epochs", "1", "--lam", "0,0.5", "--quiet", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out / "runs.csv")
    assert list(table["run_dir"]) == ["runs/npz-a/lam0/seed0", "runs/npz-a/lam0.5/seed0"]
    assert list(table["lam"]) == [0.0, 0.5] and list(table["status"]) == ["done", "done"]
    assert main(["sweep", "--out", str(out), "--quiet"]) == 0  # resumes with nothing to do
    assert "2/2 done, 0 failed (0 run now)" in capsys.readouterr().out
    assert main([a if a != "0,0.5" else "0.5" for a in args]) == 2  # one λ where the sweep has the axis: refused


def test_on_the_axis_each_lam_gets_its_own_tau_star(tmp_path):
    from dagwire import spec as specs
    from dagwire.sweep.table import with_tau_star
    from dagwire.tables import runs_frame

    curves = {0.0: [0.80, 0.80, 0.80], 0.01: [0.80, 0.80, 0.60]}  # hold-out accuracy at τ = 0, 0.01, 0.02
    rows = []
    for lam, holdout in curves.items():
        for seed in (0, 1):
            rel = f"runs/a/lam{lam:g}/seed{seed}"
            run = tmp_path / rel
            run.mkdir(parents=True)
            full = specs.complete(6, 2)
            specs.save(full.with_weights([0.5] * full.num_edges), run / "graph.json", channels=2)
            (run / "thresholds.csv").write_text("threshold,test_accuracy,holdout_accuracy\n" + "".join(
                f"{tau},{acc},{acc}\n" for tau, acc in zip((0.0, 0.01, 0.02), holdout)))
            rows.append({"dataset": "a", "seed": seed, "status": "done", "run_dir": rel, "lam": lam})
    table = with_tau_star(runs_frame(rows), tmp_path)
    assert list(table["tau_star"]) == [0.02, 0.02, 0.01, 0.01]  # pooled, every run would get 0.01
    assert list(table["run_dir"]) == [r["run_dir"] for r in rows]
    one_lam = with_tau_star(runs_frame(rows[2:]), tmp_path)
    assert list(one_lam["tau_star"]) == [0.01, 0.01]
