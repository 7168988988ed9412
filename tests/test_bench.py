"""`dagwire bench`: the keys it promises, on a tiny network (speed lives in the numbers, never in tests)."""

import json

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


def test_front_benchmark_summary_is_each_familys_median_against_the_complete_dags():
    import runpy
    from pathlib import Path

    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_front.py"))
    planted = [("a", 0.0, "complete", 2.0), ("a", 0.0, "complete", 2.2), ("a", 0.02, "learned", 1.0),
               ("a", 0.02, "learned", 1.4), ("a", 0.02, "learned", 1.1), ("b", 0.005, "random", 3.0)]
    rows = [{"dataset": d, "lam": lam, "family": f, "step_seconds": s} for d, lam, f, s in planted]
    summary = {(r["dataset"], r["lam"], r["family"]): r for r in script["family_speed"](rows)}
    assert summary[("a", 0.0, "complete")]["step_seconds"] == 2.1 and summary[("a", 0.0, "complete")]["speedup"] == 1
    assert summary[("a", 0.02, "learned")]["networks"] == 3 and summary[("a", 0.02, "learned")]["step_seconds"] == 1.1
    assert abs(summary[("a", 0.02, "learned")]["speedup"] - 2.1 / 1.1) < 1e-12
    assert summary[("b", 0.005, "random")]["speedup"] is None  # no complete DAG of that dataset to hold it against


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
