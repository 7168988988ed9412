"""docs/long.md's numbers are the tool's: the pilot's criterion and graphs re-derived from the committed pilot sweeps."""

import json
import re
import runpy
from pathlib import Path

import pytest

from dagwire.tables import read_runs_table
from dagwire.trajectory import run_trajectory, schedule_of

ROOT = Path(__file__).resolve().parents[1]
LONG = ROOT / "docs" / "long"
DOC = (ROOT / "docs" / "long.md").read_text()
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


def test_the_study_progress_table_is_the_trajectory_of_its_finished_runs():
    header = "| run | test accuracy | step 800 | 1,840 | 4,000 | 6,400 (end of lr 0.1) | 7,200 | 8,000 (end) |"
    assert header in DOC
    steps = [800, 1840, 4000, 6400, 7200, 8000]
    rows = [re.match(r"\| (\w+) seed ([0-4]) \| (.*) \|$", line) for line in DOC.splitlines()]
    rows = [row for row in rows if row and row.group(1) in NAMES]
    assert rows, "the progress table lists no finished study run"
    for row in rows:
        run = LONG / "sweep" / "runs" / NAMES[row.group(1)] / f"seed{row.group(2)}"
        status = json.loads((run / "status.json").read_text())
        accuracy, *cells = [cell.strip() for cell in row.group(3).split("|")]
        assert status["status"] == "done" and accuracy == f"{status['test_accuracy']:.3f}"
        assert cells == edges_and_nodes(run, steps)
