"""docs/long.md's numbers are the tool's: the pilot and the study re-derived here from the committed sweeps."""

import json
import re
import runpy
from pathlib import Path

import pytest
from conftest import ordering_output

from dagwire.machine import CPU_SEPARATOR
from dagwire.tables import read_runs_table
from dagwire.trajectory import run_trajectory, schedule_of

ROOT = Path(__file__).resolve().parents[1]
LONG = ROOT / "docs" / "long"
DOC = (ROOT / "docs" / "long.md").read_text()
TABLE = LONG / "runs.csv"
CAPACITY_C4 = ROOT / "docs" / "capacity" / "runs_c4.csv"
PILOT_RUNS = {"cmnist": 100, "cfashionmnist": 101, "cfashionmnist_t8": 102}
NAMES = {"CMNIST": "cmnist", "CFashionMNIST": "cfashionmnist", "CFashionMNIST_T8": "cfashionmnist_t8"}


def pilot_run(dataset: str) -> Path:
    return LONG / "pilot" / dataset / "runs" / dataset / f"seed{PILOT_RUNS[dataset]}"


def test_the_pilot_block_is_what_the_script_prints(capsys):
    runpy.run_path(str(LONG / "pilot.py"), run_name="pilot")["main"]()
    printed = capsys.readouterr().out.strip()
    assert printed.splitlines()[-1] == "criterion: passes (3 of 3 runs started)"
    assert f"```text\n{printed}\n```" in DOC


def test_every_pilot_run_finished_and_meets_both_conditions():
    module = runpy.run_path(str(LONG / "pilot.py"), run_name="pilot")
    rows = module["pilot_rows"]()
    assert {(r["dataset"], r["seed"]) for r in rows} == set(PILOT_RUNS.items())
    goal = module["targets"]()
    for row in rows:
        assert row["epochs"] == 200 and row["collapsed"] is False and row["no_collapse"] == "yes"
        assert row["test_accuracy"] >= goal[row["dataset"]] and row["accuracy_ok"] == "yes"
    assert "**Both conditions hold for every pilot run, so the study runs the `long` preset as it stands:**" in DOC


@pytest.mark.parametrize("dataset", sorted(PILOT_RUNS))
def test_the_pilot_runs_are_finished_records(dataset):
    run = pilot_run(dataset)
    assert (run / "status.json").is_file() and not (run / "checkpoint.pt").exists()
    table = read_runs_table(LONG / "pilot" / dataset / "runs.csv")
    assert table["steps"].tolist() == [8000] and table["milestones"].astype(str).tolist() == ["6400,7200"]


def test_the_pilot_graph_table_is_the_trajectory_of_the_edge_histories():
    header = next(line for line in DOC.splitlines() if line.startswith("| step | 800 |"))
    steps = [int(re.match(r"[\d,]+", cell.strip()).group().replace(",", "")) for cell in header.split("|")[2:-1]]
    assert steps == [800, 1840, 4000, 6400, 7200, 8000]
    for name, dataset in NAMES.items():
        line = next(line for line in DOC.splitlines() if line.startswith(f"| {name} seed {PILOT_RUNS[dataset]} |"))
        assert [cell.strip() for cell in line.split("|")[2:-1]] == edges_and_nodes(pilot_run(dataset), steps)


def edges_and_nodes(run: Path, steps: list[int]) -> list[str]:
    """The run's "edges / nodes" at τ = 0.006 after each of these steps, as the docs' tables write them."""
    schedule = schedule_of(run)  # only the epochs that end at these steps are measured
    rows = run_trajectory(run, tau=0.006, epochs=[schedule.epoch_ending_at(s) for s in steps])
    by_step = {row["step"]: row for row in rows}
    return [f"{by_step[s]['edges']} / {by_step[s]['nodes']}" for s in steps]


def test_the_runs_table_on_the_page_is_the_trajectory_of_every_run():
    header = "| run | test accuracy | step 800 | 1,840 | 4,000 | 6,400 (end of lr 0.1) | 7,200 | 8,000 (end) |"
    assert header in DOC
    steps = [800, 1840, 4000, 6400, 7200, 8000]
    rows = [re.match(r"\| (\w+) seed ([0-4]) \| (.*) \|$", line) for line in DOC.splitlines()]
    rows = [row for row in rows if row and row.group(1) in NAMES]
    assert len(rows) == 15, "the table lists every run of the study"
    for row in rows:
        run = LONG / "sweep" / "runs" / NAMES[row.group(1)] / f"seed{row.group(2)}"
        status = json.loads((run / "status.json").read_text())
        accuracy, *cells = [cell.strip() for cell in row.group(3).split("|")]
        assert status["status"] == "done" and accuracy == f"{status['test_accuracy']:.3f}"
        assert cells == edges_and_nodes(run, steps)


def test_the_study_is_complete_at_one_design():
    runs = read_runs_table(TABLE)
    assert (runs["status"].astype(str) == "done").all() and len(runs) == 15
    assert runs.groupby("dataset")["seed"].apply(sorted).to_dict() == {d: [0, 1, 2, 3, 4] for d in PILOT_RUNS}
    assert set(runs["channels"].astype(int)) == {4} and set(runs["steps"].astype(int)) == {8000}
    assert set(runs["milestones"].astype(str)) == {"6400,7200"}
    assert not runs["collapsed"].astype(str).str.lower().eq("true").any()
    # Every machine kind ran every dataset (a moved run counts for both kinds it trained on).
    kinds = runs.assign(cpu=runs["cpu"].astype(str).str.split(CPU_SEPARATOR)).explode("cpu")
    assert all(group["dataset"].nunique() == 3 for _, group in kinds.groupby("cpu"))
    assert TABLE.read_bytes() == (LONG / "sweep" / "runs.csv").read_bytes()


def test_the_results_table_is_what_the_script_prints():
    results_table = runpy.run_path(str(ROOT / "docs" / "capacity" / "results.py"), run_name="results")["results_table"]
    assert results_table(TABLE) in DOC


@pytest.mark.parametrize("args", [["--per", "cpu"], ["--tau-column", "threshold", "--per", "cpu"]])
def test_the_verdicts_are_the_ordering_test(args):
    assert f"```text\n{ordering_output(TABLE, *args)}\n```" in DOC


def test_the_pooled_test_is_the_ordering_test_by_steps():
    assert f"```text\n{ordering_output(CAPACITY_C4, TABLE, '--by', 'steps')}\n```" in DOC


SHOWN_STEPS = [40, 800, 6400, 7200, 8000]  # what `dagwire trajectory` shows for this schedule: first, lr drops, end


@pytest.mark.slow
def test_the_trajectory_block_is_what_the_command_prints():
    """The command's text, measured at the epochs it shows only: the same rows as at every epoch, far cheaper."""
    from dagwire.trajectory import length_test, load_trajectories, ordering_over_time, trajectory_summary
    from dagwire.trajectory_command import trajectory_lines

    schedule = schedule_of(LONG / "sweep")
    table = load_trajectories(LONG / "sweep", epochs=[schedule.epoch_ending_at(s) for s in SHOWN_STEPS],
                              progress=False)
    tests = [t for late in (6400, 8000) for t in length_test(table, 800, late)]
    lines = trajectory_lines(trajectory_summary(table), ordering_over_time(table, progress=False), tests, SHOWN_STEPS,
                             0.006, schedule)
    assert "```text\n" + "\n".join(lines) + "\nwrote docs/img/long_trajectory.png\n" in DOC


# Epochs after the first lr drop (steps 6,440-8,000) at which each feature passes Holm, as the page counts them:
# feature -> (of the 40, of the last phase's 20).
QUOTED_SIGNIFICANT_EPOCHS = {"edge_connectivity": (25, 16), "log_paths": (22, 17), "max_path": (16, 11),
                             "mean_degree": (12, 12), "mean_path": (4, 2), "sparsity": (3, 3), "nodes": (0, 0),
                             "parameters": (0, 0)}


@pytest.mark.slow
def test_the_epochs_where_the_ordering_holds_after_the_first_drop_are_the_tools():
    from dagwire.trajectory import load_trajectories, ordering_over_time

    table = load_trajectories(LONG / "sweep", epochs=range(161, 201), progress=False)
    significant = {}
    for row in ordering_over_time(table, progress=False):
        counts = significant.setdefault(row["feature"], [0, 0])
        if row["p_holm"] < 0.05:
            counts[0] += 1
            counts[1] += row["step"] > 7200
    assert {feature: tuple(counts) for feature, counts in significant.items()} == QUOTED_SIGNIFICANT_EPOCHS
    assert "passes Holm at 25 epochs for edge connectivity\n(16 of the last phase's 20), 22 for ln paths (17 of 20)" in DOC
