"""From a trained run: threshold curves, retraining (same C and fitted C), drawings."""

import csv
import json

import pytest
import torch

from dagwire import counts, graphs, spec as specs
from dagwire.cli import main
from dagwire.model import count_parameters, materialise
from dagwire.errors import DagwireError
from dagwire.prune import load_run


def test_thresholds_writes_csv_and_plot(trained_run, capsys):
    assert main(["thresholds", str(trained_run), "--grid", "0,0.006,0.3,0.9", "--quiet"]) == 0
    rows = list(csv.DictReader((trained_run / "thresholds.csv").open()))
    assert [float(r["threshold"]) for r in rows] == [0, 0.006, 0.3, 0.9]
    assert list(rows[0]) == ["threshold", "test_accuracy", "sparsity", "nodes", "edges", "disconnected"]
    assert float(rows[0]["sparsity"]) == 0 and rows[0]["disconnected"] == "False"
    sparsities = [float(r["sparsity"]) for r in rows]
    assert sparsities == sorted(sparsities)
    assert rows[-1]["disconnected"] == "True" and float(rows[-1]["test_accuracy"]) == pytest.approx(1 / 3)
    assert (trained_run / "thresholds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # τ = 0 keeps the full network: the curve's accuracy equals the run's final accuracy
    final = json.loads((trained_run / "graph.json").read_text())["test_accuracy"]
    assert float(rows[0]["test_accuracy"]) == pytest.approx(final)


def test_threshold_curve_matches_masked_full_network(trained_run):
    run = load_run(trained_run)
    pruned = graphs.prune(run.learned, 0.3)
    if not graphs.is_connected(pruned):
        pytest.skip("graph disconnected at 0.3")
    run.model.eval()
    small = materialise(run.model, pruned.with_weights(None)).eval()
    run.model.set_edge_mask(graphs.edge_mask(run.learned, pruned))
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(run.model(x), small(x), atol=1e-5)
    assert count_parameters(small) == counts.parameter_count(pruned, 2, 3, 3)


def test_retrain_same_channels(trained_run, capsys):
    out = trained_run / "re"
    assert main(["retrain", str(trained_run), "--threshold", "0.006", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    pruned = graphs.prune(specs.load(trained_run / "graph.json"), 0.006)
    learned = specs.load(out / "graph.json")
    assert learned.edges == pruned.edges
    assert learned.meta["channels"] == 2 and learned.meta["seed"] == 1000
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert "seconds" in json.loads((out / "metrics.jsonl").read_text())
    # asking again without --resume keeps the run
    before = (out / "graph.json").read_bytes()
    assert main(["retrain", str(trained_run), "--epochs", "1", "--out", str(out)]) == 2
    assert (out / "graph.json").read_bytes() == before


def test_retrain_fit_channels(trained_run):
    out = trained_run / "refit"
    assert main(["retrain", str(trained_run), "--fit-channels", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    pruned = specs.load(out / "pruned_graph.json")
    full = counts.parameter_count(specs.complete(9, 3), 2, 3, 3)
    c = specs.load(out / "graph.json").meta["channels"]
    best = min(range(1, 64), key=lambda ch: abs(counts.parameter_count(pruned, ch, 3, 3) - full))
    assert c == best and c >= 2
    out2 = trained_run / "refit2"
    assert main(["retrain", str(trained_run), "--fit-channels", "5000", "--epochs", "1", "--out", str(out2), "--quiet"]) == 0
    c2 = specs.load(out2 / "graph.json").meta["channels"]
    assert c2 == min(range(1, 64), key=lambda ch: abs(counts.parameter_count(pruned, ch, 3, 3) - 5000))


def test_draw_png_and_svg(trained_run, tmp_path, capsys):
    assert main(["draw", str(trained_run / "graph.json"), "-o", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "g.png").stat().st_size > 5000
    assert main(["draw", str(trained_run / "graph.json"), "-o", str(tmp_path / "g.svg"), "--threshold", "0.99"]) == 0
    assert "<svg" in (tmp_path / "g.svg").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert main(["draw", str(trained_run / "graph.json"), "-o", str(tmp_path / "g.gif")]) == 2


@pytest.mark.parametrize("args", [["thresholds", "/nonexistent/run"], ["retrain", "/nonexistent/run"],
                                  ["thresholds", "RUN", "--grid", "a,b"], ["retrain", "RUN", "--threshold", "-1"],
                                  ["retrain", "RUN", "--threshold", "0.99"]])
def test_bad_input_for_run_commands(trained_run, args, capsys):
    argv = [str(trained_run) if a == "RUN" else a for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_retrain_run_default_dirs_and_resume_if_present(trained_run):
    from dagwire.prune import full_parameter_count, retrain_run

    trained = load_run(trained_run)
    config, result = retrain_run(trained, 0.006, fit=True, epochs=1)
    out = trained_run / "retrain-0.006-fitC"
    assert result.out == out and (out / "graph.json").is_file()
    pruned = graphs.prune(trained.learned, 0.006)
    assert config.channels == counts.fit_channels(pruned, full_parameter_count(trained), 3, 3)
    # Asked again: the finished retraining is reused, not redone ...
    stamp = (out / "graph.json").stat().st_mtime_ns
    again, reused = retrain_run(trained, 0.006, fit=True, epochs=1)
    assert (out / "graph.json").stat().st_mtime_ns == stamp and reused.test_accuracy == result.test_accuracy
    assert again.channels == config.channels
    # ... an interrupted one is continued from its checkpoint ...
    (out / "graph.json").unlink()
    metrics = (out / "metrics.jsonl").read_text()
    _, resumed = retrain_run(trained, 0.006, fit=True)
    assert (out / "metrics.jsonl").read_text() == metrics and resumed.test_accuracy == result.test_accuracy
    # ... and resume=False refuses to overwrite it.
    with pytest.raises(DagwireError, match="already holds a retraining"):
        retrain_run(trained, 0.006, fit=True, resume=False)


def test_a_retraining_of_the_same_network_is_a_copy_of_the_same_c_retraining(trained_run, tmp_path):
    """Nothing cut (λ = 0): the fitted C is the run's C, the one random graph of the learned graph's size is
    that graph, the width control is it too; each is a copy of the same-C retraining, not a rerun."""
    import yaml

    from dagwire.prune import architecture_config, plan_controls, retrain_control, retrain_run
    from dagwire.train import train

    run = tmp_path / "dense"
    assert main(["train", "--dataset", f"npz:{trained_run.parent / 'tiny.npz'}", "--nodes", "6", "--stages", "2",
                 "--channels", "2", "--batch-size", "16", "--epochs", "1", "--lam", "0", "--quiet",
                 "--out", str(run)]) == 0
    trained = load_run(run)
    _, same = retrain_run(trained, 0.006, epochs=1)
    config, fitted = retrain_run(trained, 0.006, fit=True, epochs=1)
    assert config.channels == trained.config.channels == 2
    assert fitted.out == run / "retrain-0.006-fitC" and fitted.test_accuracy == same.test_accuracy
    assert (fitted.out / "weights.pt").read_bytes() == (same.out / "weights.pt").read_bytes()
    assert (fitted.out / "metrics.jsonl").read_text() == (same.out / "metrics.jsonl").read_text()
    assert yaml.safe_load((fitted.out / "config.yaml").read_text())["graph"] == str(fitted.out / "pruned_graph.json")
    assert not (run / "retrain-0.006-fitC.copying").exists()

    random, width = plan_controls(trained, 0.006, ["random", "width"], count=1)
    assert width.channels == 2 and width.record["residual"] == 0
    for control in (random, width):
        config, result = retrain_control(trained, 0.006, control, epochs=1)
        out = run / f"retrain-0.006-{control.name}"
        assert result.out == out and result.test_accuracy == same.test_accuracy
        assert (out / "weights.pt").read_bytes() == (same.out / "weights.pt").read_bytes()
        facts = json.loads((out / "network.json").read_text())
        assert facts["family"] == control.name.rstrip("0") and facts["same_network_as"] == "retrain-0.006"
        assert yaml.safe_load((out / "config.yaml").read_text())["graph"] == config.graph
    assert specs.load(run / "retrain-0.006-random0" / "pruned_graph.json").meta["family"] == "random"
    assert not (run / "retrain-0.006-width" / "pruned_graph.json").exists()  # trained from "complete"
    # The copy is what training would give: the width control trained for real has the same weights.
    fresh = tmp_path / "fresh"
    train(architecture_config(trained, None, 2, fresh, epochs=1), fresh)
    assert (fresh / "weights.pt").read_bytes() == (same.out / "weights.pt").read_bytes()


def test_retrain_random_controls_keep_the_pruned_graphs_nodes_and_edges_per_stage(trained_run, capsys):
    from dagwire.controls import stage_edge_counts

    assert main(["retrain", str(trained_run), "--threshold", "0.006", "--control", "random", "--controls", "2",
                 "--epochs", "1", "--quiet"]) == 0
    pruned = graphs.prune(specs.load(trained_run / "graph.json"), 0.006)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("done: random control") for line in lines)
    graphs_seen = []
    for k in range(2):
        out = trained_run / f"retrain-0.006-random{k}"
        architecture = specs.load(out / "initial_graph.json")
        assert architecture.active_nodes() == pruned.active_nodes()
        assert stage_edge_counts(architecture) == stage_edge_counts(pruned)
        assert graphs.remove_dead_paths(architecture).edges == architecture.edges
        facts = json.loads((out / "network.json").read_text())
        assert facts["family"] == "random" and facts["control"] == k and facts["graph_seed"] == [1000, k]
        assert facts["seed"] == 1000 and facts["channels"] == 2 and facts["tau"] == 0.006
        assert facts["parameters"] == counts.parameter_count(architecture, 2, 3, 3)
        assert facts["flops_per_image"] == counts.flops_per_image(architecture, 2, 32, 3, 3)
        assert facts["cpu_seconds_per_image"] > 0 and facts["edges_per_stage"] == stage_edge_counts(pruned)
        assert facts["test_accuracy"] == json.loads((out / "graph.json").read_text())["test_accuracy"]
        graphs_seen.append(architecture.edges)
    assert len(lines[0].split("edges per stage ")[1].split()[0].split("/")) == 3


def test_retrain_width_control_is_the_complete_dag_at_the_nearest_c(trained_run, capsys):
    assert main(["retrain", str(trained_run), "--control", "width", "--epochs", "1", "--quiet"]) == 0
    pruned = graphs.prune(specs.load(trained_run / "graph.json"), 0.006)
    initial = specs.load(trained_run / "initial_graph.json")
    target = counts.parameter_count(pruned, 2, 3, 3)
    out = trained_run / "retrain-0.006-width"
    facts = json.loads((out / "network.json").read_text())
    best = min(range(1, 40), key=lambda c: abs(counts.parameter_count(initial, c, 3, 3) - target))
    assert facts["family"] == "width" and facts["channels"] == best
    assert specs.load(out / "initial_graph.json").edges == initial.edges
    assert facts["residual"] == counts.parameter_count(initial, best, 3, 3) - target
    assert f"({facts['residual']:+d} against the learned graph's {target} at τ=0.006)" in capsys.readouterr().out


def test_retrain_at_tau_star_and_its_controls(tmp_path, capsys):
    import numpy as np

    from dagwire.export import resolve_tau

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(96, 3, 32, 32), dtype="uint8")
    y = np.arange(96) % 3
    np.savez(tmp_path / "d.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--nodes", "6", "--stages", "2", "--channels", "2",
                 "--batch-size", "16", "--epochs", "1", "--lam", "0.5", "--holdout", "16", "--quiet",
                 "--out", str(run)]) == 0
    assert main(["thresholds", str(run), "--quiet"]) == 0
    tau = resolve_tau(load_run(run), "star")  # the run's own τ*, from its hold-out threshold curve
    assert main(["retrain", str(run), "--threshold", "star", "--control", "random", "--controls", "1",
                 "--epochs", "1", "--quiet"]) == 0
    assert (run / f"retrain-{tau:g}-random0" / "network.json").is_file()
    assert main(["retrain", str(run), "--threshold", "star", "--epochs", "1", "--quiet"]) == 0
    assert json.loads((run / f"retrain-{tau:g}" / "network.json").read_text())["family"] == "learned"


@pytest.mark.parametrize("args", [["--control", "random", "--out", "x"], ["--control", "random", "--fit-channels"],
                                  ["--control", "random", "--controls", "0"], ["--control", "noise"],
                                  ["--threshold", "nan"]])
def test_bad_control_options(trained_run, args, capsys):
    assert main(["retrain", str(trained_run), "--epochs", "1", "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
