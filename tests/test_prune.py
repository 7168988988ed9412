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


def test_fitted_c_equal_to_the_runs_own_reuses_the_same_c_retraining(trained_run, tmp_path):
    """Nothing cut (λ = 0): the fitted C is the run's C, so the fitted retraining is a copy, not a rerun."""
    import yaml

    from dagwire.prune import retrain_run

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
