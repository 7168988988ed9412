"""docs/capacity.md's numbers are the tool's: the pilot and the study re-derived here from the committed sweeps."""

import json
import runpy
from pathlib import Path

import pytest
from conftest import ordering_output

from dagwire.machine import CPU_SEPARATOR
from dagwire.tables import read_runs_table

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = ROOT / "docs" / "capacity"
DOC = (ROOT / "docs" / "capacity.md").read_text()
PILOTS = [str(CAPACITY / "pilot-c8"), str(CAPACITY / "pilot-c8-warmup")]
TABLES = {4: CAPACITY / "runs_c4.csv", 8: CAPACITY / "runs_c8.csv"}


def test_the_pilot_block_is_what_the_script_prints(capsys):
    runpy.run_path(str(CAPACITY / "pilot.py"), run_name="pilot")["main"](*PILOTS)
    printed = capsys.readouterr().out.strip()
    assert printed.splitlines()[0] == "pilot-c8:"
    assert f"```text\n{printed}\n```" in DOC


def test_candidate_a_failed_on_a_collapsed_run():
    metrics = [json.loads(line) for line in
               (CAPACITY / "pilot-c8" / "runs" / "cfashionmnist_t8" / "seed100" / "metrics.jsonl").read_text().splitlines()]
    first_phase = metrics[:20]  # 800 steps at lr 0.1, 40 steps an epoch
    assert max(m["train_accuracy"] for m in first_phase) < 0.2
    assert metrics[19]["collapsed"] is True and all("collapsed" not in m for m in metrics[:19])
    assert "**A fails.**" in DOC


def test_the_results_script_prints_mean_and_std_of_done_runs_only(tmp_path):
    """docs/capacity/results.py on a known table: means ± std (ddof=1) of the done runs, pending ones counted."""
    header = ("dataset,seed,status,channels,initial_nodes,test_accuracy,train_eval_accuracy,tau_star,"
              "nodes_at_tau_star,parameters_at_tau_star,sparsity,mean_degree")
    rows = ["cmnist,0,done,8,30,0.90,0.95,0.01,20,60000,0.5,8.0",
            "cmnist,1,done,8,30,0.92,0.97,0.01,22,62000,0.7,9.0",
            "cfashionmnist,0,done,8,30,0.80,0.82,0.01,30,70000,0.6,10.0",
            "cfashionmnist,1,pending,,,,,,,,,"]
    table = tmp_path / "runs_c8.csv"
    table.write_text("\n".join([header, *rows]) + "\n")
    printed = runpy.run_path(str(CAPACITY / "results.py"), run_name="results")["results_table"](table)
    lines = printed.splitlines()
    assert lines[0] == "runs_c8.csv: C = 8, 3 of 4 runs done (not a result until all are)"
    assert "| | CMNIST (n = 2) | CFashionMNIST (n = 1) |" in lines
    assert "| τ\\* (one for all datasets) | 0.01 | 0.01 |" in lines
    assert "| test accuracy | 0.910 ± 0.014 | 0.800 ± – |" in lines
    assert "| training accuracy, no augmentation | 0.960 ± 0.014 | 0.820 ± – |" in lines
    assert "| nodes at τ\\* (of 30) | 21.0 ± 1.4 | 30.0 ± – |" in lines
    assert "| parameters at τ\\* | 61.0k ± 1.4k | 70.0k ± – |" in lines
    assert "| sparsity at τ = 0.006 | 0.600 ± 0.141 | 0.600 ± – |" in lines
    assert "| sparsity at τ\\* | – | – |" in lines  # a column the table lacks


@pytest.mark.parametrize("channels", sorted(TABLES))
def test_each_half_is_complete_at_one_design(channels):
    runs = read_runs_table(TABLES[channels])
    assert (runs["status"].astype(str) == "done").all() and len(runs) == 15
    assert runs.groupby("dataset")["seed"].apply(sorted).to_dict() == {
        d: [0, 1, 2, 3, 4] for d in ("cmnist", "cfashionmnist", "cfashionmnist_t8")}
    assert set(runs["channels"].astype(int)) == {channels}
    assert not runs["collapsed"].astype(str).str.lower().eq("true").any()
    # No machine kind ran one dataset alone: every CPU seen ran every dataset.
    kinds = runs.assign(cpu=runs["cpu"].astype(str).str.split(CPU_SEPARATOR)).explode("cpu")
    assert all(group["dataset"].nunique() == 3 for _, group in kinds.groupby("cpu"))


@pytest.mark.parametrize("channels", sorted(TABLES))
def test_the_results_tables_are_what_the_script_prints(channels):
    results_table = runpy.run_path(str(CAPACITY / "results.py"), run_name="results")["results_table"]
    assert results_table(TABLES[channels]) in DOC


@pytest.mark.parametrize("channels", sorted(TABLES))
def test_the_verdict_at_each_capacity_is_the_ordering_test(channels):
    assert f"```text\n{ordering_output(TABLES[channels])}\n```" in DOC


def test_the_pooled_test_is_the_ordering_test_by_channels():
    printed = ordering_output(*(TABLES[c] for c in sorted(TABLES)), "--by", "channels")
    assert f"```text\n{printed}\n```" in DOC


DATASET_NAMES = {"cmnist": "CMNIST", "cfashionmnist": "CFashionMNIST", "cfashionmnist_t8": "CFashionMNIST_T8"}
# The length test's numbers the page quotes, step 800 against the end: feature -> (Δ, Holm p).
QUOTED_GROWTH = {4: {"sparsity": (-0.747, 0.034), "mean_degree": (0.747, 0.034), "parameters": (0.911, 0.034),
                     "edge_connectivity": (0.712, 0.034)},
                 8: {"log_paths": (0.676, 0.042)}}


@pytest.mark.slow
@pytest.mark.parametrize("channels", sorted(TABLES))
def test_the_trajectory_table_and_the_length_test_are_the_tools(channels):
    from dagwire.trajectory import length_test, load_trajectories, trajectory_summary

    table = load_trajectories(CAPACITY / f"sweep-c{channels}", progress=False)
    summary = trajectory_summary(table).set_index(["dataset", "step"])
    for dataset, name in DATASET_NAMES.items():
        cells = " | ".join(f"{summary.loc[(dataset, s), 'edges']:.1f} ± {summary.loc[(dataset, s), 'edges_std']:.1f}"
                           for s in (40, 800, 1040, 1840))
        assert f"| {channels} | {name} | {cells} |" in DOC
    tests = {t.feature: t for t in length_test(table, 800, 1840)}
    assert {f for f, t in tests.items() if t.verdict == "grows"} == set(QUOTED_GROWTH[channels])
    for feature, (delta, p_holm) in QUOTED_GROWTH[channels].items():
        assert tests[feature].delta == pytest.approx(delta, abs=5e-4)
        assert tests[feature].p_holm == pytest.approx(p_holm, abs=5e-4)
