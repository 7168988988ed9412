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
