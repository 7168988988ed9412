"""Feature trajectories (trajectory.py, `dagwire trajectory`): planted edge histories, the length test, τ-b rows."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from dagwire import spec as specs
from dagwire.cli import cli, main
from dagwire.errors import DagwireError
from dagwire.trajectory import (Schedule, length_test, load_trajectories, ordering_over_time, run_trajectory,
                                trajectory_summary)


def planted_run(path: Path, deaths: dict[tuple[int, int], int], epochs: int = 5, dataset: str = "cmnist",
                seed: int = 0, accuracy: float = 0.9) -> Path:
    """A finished run on the complete 6-node DAG (2 stages) whose edge (i, j) falls to 0.001 after epoch deaths[(i, j)]."""
    initial = specs.complete(6, 2)
    history = np.full((epochs, initial.num_edges), 0.5, dtype=np.float32)
    for k, edge in enumerate(initial.edges):
        if edge in deaths:
            history[deaths[edge] - 1:, k] = 0.001
    path.mkdir(parents=True)
    # 256 images, batch 128: 2 steps an epoch; lr drops at steps 6 and 8.
    config = {"dataset": dataset, "nodes": 6, "stages": 2, "channels": 2, "limit_train": 256, "batch_size": 128,
              "epochs": epochs, "lr_milestones": ["6s", "8s"], "seed": seed}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    specs.save(initial, path / "initial_graph.json")
    specs.save(initial.with_weights(history[-1]), path / "graph.json", dataset=dataset, seed=seed, channels=2,
               test_accuracy=accuracy, collapsed=False)
    np.save(path / "edge_history.npy", history)
    return path


def test_a_planted_history_gives_the_edges_and_nodes_of_each_epoch(tmp_path):
    # Node 2 loses its only way in (0→2, 1→2) after epoch 2; 2→3 .. 2→5 are dead paths from then on.
    run = planted_run(tmp_path / "run", {(0, 2): 2, (1, 2): 2, (0, 5): 4})
    rows = run_trajectory(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10]
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.001])
    # 15 edges; epoch 2 on: 0→2, 1→2 cut and 2→3, 2→4, 2→5 dead (10 left); epoch 4 on: 0→5 too (9 left).
    assert [r["edges"] for r in rows] == [15, 10, 10, 9, 9]
    assert [r["nodes"] for r in rows] == [6, 5, 5, 5, 5]
    assert [r["sparsity"] for r in rows] == pytest.approx([0, 5 / 15, 5 / 15, 6 / 15, 6 / 15])
    assert rows[0]["mean_degree"] == pytest.approx(2 * 15 / 6)
    assert "pca_elongation" not in rows[0] and "q1d" not in rows[0]  # the layout's features are left out
    assert [r["epoch"] for r in run_trajectory(run, every=2)] == [2, 4, 5]  # every 2nd, and the last
    assert run_trajectory(run, epochs=[4, 2]) == [rows[1], rows[3]]  # the epochs asked for, in order
    with pytest.raises(DagwireError, match=r"5 epochs recorded, asked for epochs \[0, 6\]"):
        run_trajectory(run, epochs=[6, 0])


def test_a_run_still_training_has_the_trajectory_of_its_epochs_so_far(tmp_path):
    run = planted_run(tmp_path / "run", {(0, 2): 2, (1, 2): 2})
    finished = run_trajectory(run)
    (run / "graph.json").unlink()  # written only at the end
    np.save(run / "edge_history.npy", np.load(run / "edge_history.npy")[:3])
    assert run_trajectory(run) == finished[:3]


def test_an_output_cut_off_is_disconnected_with_no_edges(tmp_path):
    run = planted_run(tmp_path / "run", {(i, 5): 3 for i in range(5)}, epochs=3)
    rows = run_trajectory(run)
    assert [r["disconnected"] for r in rows] == [False, False, True]
    assert rows[-1]["edges"] == 0 and "nodes" not in rows[-1]


def test_a_step_where_no_epoch_ends_is_refused():
    schedule = Schedule(40, 46, (800, 1040))
    assert schedule.epoch_ending_at(800) == 20
    for step in (810, 0, 1880):
        with pytest.raises(DagwireError):
            schedule.epoch_ending_at(step)


DATASETS = ("easy", "middle", "hard")  # final test accuracy 0.9, 0.8, 0.7


def planted_table(early, late, seeds: int = 5) -> pd.DataFrame:
    """Trajectory rows at steps 100 and 200: feature `nodes` of run (d, s) is early(d, s) then late(d, s)."""
    rows = []
    for d, dataset in enumerate(DATASETS):
        for s in range(seeds):
            for step, value in ((100, early(d, s)), (200, late(d, s))):
                rows.append({"dataset": dataset, "seed": s, "epoch": step // 10, "step": step, "nodes": value,
                             "test_accuracy": 0.9 - 0.1 * d, "collapsed": False})
    return pd.DataFrame(rows)


def noise(d: int, s: int) -> float:
    return float((7 * s + 3 * d) % 5)  # fixed values with no relation to the dataset


def test_an_effect_that_appears_only_late_is_found():
    table = planted_table(noise, lambda d, s: 10 * d + s)
    (test,) = [t for t in length_test(table, 100, 200, permutations=1999, resamples=1999) if t.feature == "nodes"]
    assert test.tau_b_late > 0.8 and abs(test.tau_b_early) < 0.3
    assert test.delta == pytest.approx(test.tau_b_late - test.tau_b_early)
    assert test.low > 0 and test.p < 0.01 and test.verdict == "grows"


def test_identical_early_and_late_give_no_change():
    table = planted_table(lambda d, s: 10 * d + s, lambda d, s: 10 * d + s)
    (test,) = length_test(table, 100, 200, permutations=999, resamples=999)
    assert test.delta == 0 and test.low <= 0 <= test.high
    assert test.p == 1.0 and test.verdict == "does not grow"


def test_a_shrinking_effect_is_not_called_growth():
    table = planted_table(lambda d, s: 10 * d + s, noise)
    (test,) = length_test(table, 100, 200, permutations=999, resamples=999)
    assert test.delta < -0.5 and test.p > 0.9 and test.verdict == "does not grow"


def test_a_shift_of_every_run_alike_is_not_growth():
    # Every graph halves between the steps: τ-b, the within-step ranks and so Δ do not move.
    table = planted_table(lambda d, s: 10 * d + noise(d, s), lambda d, s: (10 * d + noise(d, s)) / 2)
    (test,) = length_test(table, 100, 200, permutations=999, resamples=999)
    assert test.delta == pytest.approx(0) and test.verdict == "does not grow"


def test_ordering_over_time_ranks_by_final_accuracy_at_every_step():
    table = planted_table(noise, lambda d, s: 10 * d + s)
    rows = {r["step"]: r for r in ordering_over_time(table, permutations=999, progress=False)}
    assert rows[200]["tau_b"] > 0.8 and rows[200]["verdict"] == "reproduced"
    assert rows[100]["verdict"] == "not reproduced"


def test_the_summary_is_mean_and_std_per_dataset_and_step():
    table = planted_table(noise, lambda d, s: 10 * d + s)
    summary = trajectory_summary(table, features=("nodes",))
    row = summary[(summary["dataset"] == "hard") & (summary["step"] == 200)].iloc[0]
    assert row["runs"] == 5 and row["nodes"] == pytest.approx(22) and row["nodes_std"] == pytest.approx(np.std(
        [20, 21, 22, 23, 24], ddof=1))
    assert list(summary["dataset"].unique()) == list(DATASETS)  # easiest first


def test_the_command_writes_the_table_and_pictures(tmp_path):
    for d, dataset in enumerate(DATASETS):
        for s in range(2):
            planted_run(tmp_path / "sweep" / "runs" / dataset / f"seed{s}", {(0, 2): 2 + d, (1, 2): 2 + d},
                        dataset=dataset, seed=s, accuracy=0.9 - 0.1 * d)
    rows = [{"dataset": dataset, "seed": s, "status": "done", "run_dir": f"runs/{dataset}/seed{s}",
             "test_accuracy": 0.9 - 0.1 * d, "collapsed": False, "nodes": 5}
            for d, dataset in enumerate(DATASETS) for s in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "sweep" / "runs.csv", index=False)
    out = CliRunner().invoke(cli, ["trajectory", str(tmp_path / "sweep"), "--csv", str(tmp_path / "t.csv"),
                                   "--plot", str(tmp_path / "t.png"), "--ordering-plot", str(tmp_path / "o.png"),
                                   "--length-test", "2,10", "--permutations", "99", "--quiet"])
    assert out.exit_code == 0, out.output
    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == 6 * 5  # 6 runs × 5 epochs
    # The harder the dataset, the later its two edges into node 2 die: at step 4 only "easy" has lost them.
    at4 = table[table["step"] == 4].groupby("dataset")["edges"].mean()
    assert at4.to_dict() == {"easy": 10, "middle": 15, "hard": 15}
    for picture in ("t.png", "o.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    assert "does the difficulty effect grow from step 2 to 10?" in out.output
    # A few epochs of a sweep are the same rows as in the whole table (what the docs' record tests measure).
    few = load_trajectories(tmp_path / "sweep", epochs=[4, 2], progress=False)
    assert few.to_dict("records") == table[table["epoch"].isin([2, 4])].to_dict("records")
    parsed = json.loads(CliRunner().invoke(cli, ["trajectory", str(tmp_path / "sweep"), "--json", "--quiet",
                                                 "--permutations", "99"]).output)
    assert parsed["milestones"] == [6, 8] and parsed["steps"] == 10


@pytest.mark.parametrize("flags, message", [
    (["--length-test", "8,4"], "increasing"),
    (["--length-test", "3,10"], "no epoch ends there"),
    (["--every", "0"], "--every"),
    (["--tau", "-1"], "--tau"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, flags, message):
    run = planted_run(tmp_path / "run", {(0, 2): 2})
    if "--length-test" in flags:
        (tmp_path / "sweep").mkdir()
        pd.DataFrame([{"dataset": "cmnist", "seed": 0, "status": "done", "run_dir": str(run), "test_accuracy": 0.9}]
                     ).to_csv(tmp_path / "sweep" / "runs.csv", index=False)
        run = tmp_path / "sweep"
    assert main(["trajectory", str(run), *flags, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_readme_shows_what_the_command_prints(capsys):
    root = Path(__file__).resolve().parents[1]
    command = "dagwire trajectory docs/capacity/sweep-c4 --length-test 800,1840 --quiet"
    assert main(["trajectory", str(root / "docs" / "capacity" / "sweep-c4"), "--length-test", "800,1840",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    assert f"$ {command}\n{printed}\n```" in (root / "README.md").read_text()
