"""`dagwire bench`: the keys it promises, on a tiny network (speed lives in the numbers, never in tests)."""

import json

import pytest

from dagwire.cli import main


def test_bench_json_reports_every_promised_number(capsys):
    code = main(["bench", "--nodes", "15", "--stages", "3", "--channels", "2", "--batch-size", "4", "--image-size", "8",
                 "--steps", "2", "--batch-seeds", "3", "--epoch-images", "10", "--precision", "bf16", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("full_step_s", "images_per_s", "flops_per_step", "matmul_gflops", "reference_step_s",
                "pruned_step_s", "batch_seeds_step_s", "epoch_s"):
        assert result[key] > 0, key
    assert result["batch_seeds"] == 3
    assert result["epoch_images"] == 10 and result["precision"] == "bf16"
    assert result["batch_seeds_speedup"] == 3 * result["full_step_s"] / result["batch_seeds_step_s"]
    assert result["images_per_s"] == 4 / result["full_step_s"]


def test_bench_bad_input_is_exit_2(capsys):
    assert main(["bench", "--batch-seeds", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert main(["bench", "--epoch-images", "-1"]) == 2
    assert "--epoch-images must be 0 or more" in capsys.readouterr().err


def test_pruned_benchmark_graph_fits_small_networks():
    from dagwire import graphs
    from dagwire.bench import cmnist_like_graph

    assert cmnist_like_graph(60, 3).num_edges == 25 and len(cmnist_like_graph(60, 3).active_nodes()) == 12
    for nodes, stages in ((12, 3), (6, 2), (3, 3), (20, 4)):
        g = cmnist_like_graph(nodes, stages)
        assert graphs.remove_dead_paths(g).edges == g.edges, (nodes, stages)  # every edge on a live path
        assert 0 < g.num_edges <= 25


def test_side_by_side_times_each_network_every_round_in_a_shuffled_order():
    import random
    import time

    import torch

    from dagwire import spec as specs
    from dagwire.bench import time_side_by_side
    from dagwire.model import DagNet

    calls = []

    class Logged(DagNet):
        """A tiny network that notes each forward pass and can be made slower by a known sleep."""

        def __init__(self, name: str, sleep: float):
            super().__init__(specs.complete(3, 1), 1)
            self.name, self.sleep = name, sleep

        def forward(self, x):
            calls.append(self.name)
            time.sleep(self.sleep)
            return super().forward(x)

    models = {"a": Logged("a", 0.0), "b": Logged("b", 0.03), "c": Logged("c", 0.0)}
    seconds = time_side_by_side(models, 2, 8, torch.device("cpu"), rounds=4, steps=2, warmup=1, seed=7)
    assert {name: len(times) for name, times in seconds.items()} == {"a": 4, "b": 4, "c": 4}
    assert min(seconds["b"]) >= 0.03  # every timed step of b sleeps 0.03 s
    expected, order = [], random.Random(7)
    for _ in range(4):
        names = list(models)
        order.shuffle(names)
        expected += [name for name in names for _ in range(3)]  # each: 1 warm-up and 2 timed steps in a row
    assert calls == expected and calls[:3] != calls[3:6]


def _front_benchmark():
    import runpy
    from pathlib import Path

    return runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_front.py"))


def _speed_rows(planted):
    """Rows as bench_front times them: (dataset, λ, seed, family, channels, step seconds)."""
    return [{"dataset": d, "lam": lam, "seed": seed, "family": f, "channels": c, "step_seconds": s,
             "flops_per_image": 1.0} for d, lam, seed, f, c, s in planted]


def test_front_benchmark_summary_is_each_familys_median_against_the_complete_dags():
    script = _front_benchmark()
    rows = _speed_rows([("a", 0.0, 0, "complete", 4, 2.0), ("a", 0.0, 1, "complete", 4, 2.2),
                        ("a", 0.02, 0, "learned", 4, 1.0), ("a", 0.02, 1, "learned", 4, 1.4),
                        ("a", 0.02, 2, "learned", 4, 1.1), ("b", 0.005, 0, "random", 4, 3.0)])
    summary = {(r["dataset"], r["lam"], r["family"]): r for r in script["family_speed"](rows)}
    assert summary[("a", 0.0, "complete")]["step_seconds"] == 2.1 and summary[("a", 0.0, "complete")]["speedup"] == 1
    assert summary[("a", 0.02, "learned")]["networks"] == 3 and summary[("a", 0.02, "learned")]["step_seconds"] == 1.1
    assert abs(summary[("a", 0.02, "learned")]["speedup"] - 2.1 / 1.1) < 1e-12
    assert summary[("b", 0.005, "random")]["speedup"] is None  # no complete DAG of that dataset to hold it against


def test_a_width_control_at_its_runs_own_width_counts_as_the_complete_dag():
    script = _front_benchmark()
    rows = _speed_rows([("a", 0.02, 0, "learned", 4, 1.0), ("a", 0.02, 0, "width", 4, 2.0),
                        ("a", 0.05, 0, "learned", 4, 1.0), ("a", 0.05, 0, "width", 3, 0.5),
                        ("a", 0.0, 0, "complete", 4, 3.0)])
    assert script["is_complete_dag"](rows) == [False, True, False, False, True]
    assert script["complete_seconds"](rows) == {"a": 2.5}  # median of 2.0 and 3.0; the narrower control is not one


def test_front_benchmark_pairs_the_learned_graph_with_its_own_runs_controls():
    import math

    script = _front_benchmark()
    planted = []
    for seed in range(5):
        planted += [("a", 0.02, seed, "learned", 4, 1.0), ("a", 0.02, seed, "random", 4, 0.8),
                    ("a", 0.02, seed, "random", 4, 1.2), ("a", 0.02, seed, "width", 4, 2.0)]
    rows = _speed_rows(planted)
    paired = {p["learned_over"]: p for p in script["paired_speed"](rows, resamples=99, permutations=99)}
    # the run's random controls average 1.0 s: the learned graph takes as long, in no run faster
    assert paired["random"]["runs"] == 5 and math.isclose(paired["random"]["ratio"], 1.0)
    assert paired["random"]["faster_in"] == 0 and paired["random"]["p"] == 1.0
    # the width control, at the run's own C, is the complete DAG: half the time in every run, p the least 5 runs allow
    for reference in ("width", "complete"):
        assert math.isclose(paired[reference]["ratio"], 0.5) and paired[reference]["faster_in"] == 5
        assert math.isclose(paired[reference]["low"], 0.5) and paired[reference]["p"] == 2 / 2**5


def test_front_benchmark_summarises_its_own_csv_again(tmp_path, capsys, monkeypatch):
    import math
    import runpy
    import sys
    from pathlib import Path

    import pandas as pd

    rows = _speed_rows([("a", 0.0, 0, "complete", 4, 2.0), ("a", 0.0, 0, "learned", 4, 1.5),
                        ("a", 0.0, 1, "complete", 4, 2.0), ("a", 0.0, 1, "learned", 4, 1.0)])
    csv = tmp_path / "speed.csv"
    pd.DataFrame(rows).assign(timed_on="some CPU", rounds=3, steps=5).to_csv(csv, index=False)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_front.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--from-csv", str(csv)])
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads(capsys.readouterr().out)
    assert (result["cpu"], result["rounds"], result["steps"], result["networks"]) == ("some CPU", 3, 5, 4)
    assert result["complete_dag_copies"] == {"networks": 2, "min": 2.0, "median": 2.0, "max": 2.0}
    assert result["flops_step_spearman"] is None  # every planted network has the same FLOPs
    [complete] = result["paired"]  # no random or width controls: only the complete DAG to hold against
    assert complete["learned_over"] == "complete" and math.isclose(complete["ratio"], (0.75 * 0.5) ** 0.5)


def test_threshold_benchmark_times_the_curves_own_calls(trained_run, capsys, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    from dagwire import prune
    from dagwire.config import TAU_GRID

    rows = prune.threshold_curve(prune.load_run(trained_run), TAU_GRID, progress=False)
    connected = sum(not row["disconnected"] for row in rows)
    originals = prune.materialise, prune.evaluate
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_thresholds.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(trained_run), "--test-images", "5"])
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads(capsys.readouterr().out)
    assert result["taus"] == len(TAU_GRID) and result["test_images"] == 5
    assert 0 < result["connected"] == connected == result["evaluations"]  # no hold-out: one evaluation a network
    assert result["build_seconds"] + result["evaluate_seconds"] > 0
    assert (prune.materialise, prune.evaluate) == originals  # the curve's functions are put back


@pytest.mark.parametrize("content", [None, "dataset,lam\na,0\n", ""])
def test_front_benchmark_refuses_a_csv_it_did_not_write_in_one_line(tmp_path, capsys, monkeypatch, content):
    import runpy
    import sys
    from pathlib import Path

    csv = tmp_path / "speed.csv"
    if content is not None:
        csv.write_text(content)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_front.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--from-csv", str(csv)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "speed.csv" in err.strip().splitlines()[-1] and "Traceback" not in err
