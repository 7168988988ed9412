"""Training runs: files written, resume == uninterrupted, the non-finite guard, bad input."""

import json

import numpy as np
import pytest
import torch
import yaml

from dagwire import spec as specs
from dagwire import train as train_module
from dagwire.cli import main
from dagwire.config import build_config

TINY = ["--nodes", "6", "--stages", "2", "--channels", "2", "--batch-size", "16", "--quiet"]


def run_cli(*args):
    return main([str(a) for a in args])


def test_train_writes_every_record(tmp_path, tiny_npz):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "2", "--out", out) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for key in ("epoch", "train_loss", "resources_loss", "test_accuracy", "lr", "seconds"):
        assert all(key in m for m in lines)
    graph = json.loads((out / "graph.json").read_text())
    assert graph["format"] == "dagwire-graph/1" and graph["num_nodes"] == 6 and graph["stages"] == [3, 3]
    assert [e[:2] for e in graph["edges"]] == [[i, j] for i in range(6) for j in range(i + 1, 6)]
    history = np.load(out / "edge_history.npy")
    assert history.shape == (2, 15)
    # the last row of the history is the graph's weights, in the same edge order
    assert np.allclose(history[-1], [e[2] for e in graph["edges"]], atol=1e-6)
    assert all(0 <= e[2] <= 1 for e in graph["edges"])
    assert lines[-1]["resources_loss"] == pytest.approx(sum(e[2] for e in graph["edges"]), rel=1e-5)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["nodes"] == 6 and config["lr"] == 0.1 and config["lam"] == 1e-3
    assert specs.load(out / "initial_graph.json").num_edges == 15


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_npz):
    config = build_config(None, dataset=tiny_npz, nodes=6, stages=2, channels=2, batch_size=16, epochs=3, seed=5)
    train_module.train(config, tmp_path / "whole", progress=False)

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, tmp_path / "cut", progress=False, on_epoch=stop_after_first_epoch)
    assert not (tmp_path / "cut" / "graph.json").exists()
    assert run_cli("train", "--resume", tmp_path / "cut", "--quiet") == 0

    whole = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    assert whole.keys() == cut.keys()
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
    assert np.array_equal(np.load(tmp_path / "whole/edge_history.npy"), np.load(tmp_path / "cut/edge_history.npy"))
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_different_seeds_give_different_weights(tmp_path, tiny_npz):
    for seed in (0, 1):
        run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "1", "--seed", seed, "--out", tmp_path / f"s{seed}")
    a = json.loads((tmp_path / "s0/graph.json").read_text())["edges"]
    b = json.loads((tmp_path / "s1/graph.json").read_text())["edges"]
    assert a != b


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_npz, monkeypatch, capsys):
    real = train_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, y):
        calls["n"] += 1
        return real(logits, y) * (float("nan") if calls["n"] > 4 else 1.0)  # 4 steps = 1 epoch

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    out = tmp_path / "run"
    code = run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "3", "--out", out)
    err = capsys.readouterr().err
    assert code == 1
    assert "non-finite" in err and "epoch 2" in err and len(err.strip().splitlines()) == 1
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "graph.json").exists()


def test_training_reduces_the_loss_and_moves_edge_weights(tmp_path, tiny_npz):
    out = tmp_path / "run"
    run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "3", "--lam", "0.05", "--out", out)
    history = np.load(out / "edge_history.npy")
    assert not np.allclose(history[0], 0.5)
    assert history[-1].sum() < history[0].sum() < 15 * 0.5  # the L1 term pulls edges down


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nosuchset"], "nosuchset"),
        (["--nodes", "10", "--stages", "3"], "divide"),
        (["--lam", "-1"], "--lam"),
        (["--lr", "-0.1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--config", "/nonexistent/c.yaml"], "not found"),
        (["--lr-milestones", "a,b"], "milestones"),
        (["--lr-milestones", "1.5"], "milestones"),
        (["--holdout", "0"], "holdout"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, tiny_npz, capsys, args, message):
    out = tmp_path / "run"
    argv = ["train", "--dataset", tiny_npz, *TINY, *args, "--out", out]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [("lr: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "mapping"), ("nodez: 4\n", "unknown option"),
     ("lam: abc\n", "lam")],
)
def test_unreadable_config_is_one_line(tmp_path, tiny_npz, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert run_cli("train", "--config", config, "--dataset", tiny_npz, "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_yaml_config_sets_options_and_flags_win(tmp_path, tiny_npz):
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: '{tiny_npz}'\nnodes: 6\nstages: 2\nchannels: 2\nepochs: 1\nlam: 2e-3\nbatch_size: 32\n")
    out = tmp_path / "run"
    assert run_cli("train", "--config", config, "--lam", "0.01", "--quiet", "--out", out) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lam"] == 0.01 and saved["batch_size"] == 32 and saved["epochs"] == 1


def test_existing_run_is_not_overwritten(tmp_path, tiny_npz, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "1", "--out", out) == 0
    before = (out / "graph.json").read_bytes()
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "1", "--out", out) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "graph.json").read_bytes() == before


def test_missing_data_files_name_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DAGWIRE_OFFLINE", "1")
    monkeypatch.setenv("DAGWIRE_CACHE", str(tmp_path / "cache"))
    code = run_cli("train", "--dataset", "ckmnist", "--data-dir", tmp_path, *TINY, "--out", tmp_path / "run")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "idx" in err
    assert not (tmp_path / "run").exists()


def test_local_initial_graph(tmp_path, tiny_npz):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--graph", "local", "--local-window", "2",
                   "--epochs", "1", "--out", out) == 0
    edges = [tuple(e[:2]) for e in json.loads((out / "graph.json").read_text())["edges"]]
    assert edges == [(i, j) for i in range(6) for j in range(i + 1, min(6, i + 3))]


def test_describe_prints_paper_size(capsys):
    assert run_cli("describe", "--nodes", "60", "--stages", "3", "--channels", "11", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 863_300 and info["edges"] == 1770
    assert info["flops_per_image"] > 0



def test_killed_process_resumes_to_the_same_weights(tmp_path, tiny_npz):
    """SIGKILL a real `dagwire train` after its first checkpoint, resume it, compare with a whole run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--dataset", tiny_npz, *TINY, "--epochs", "4", "--seed", "2"]
    assert run_cli("train", *args, "--out", tmp_path / "whole") == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dagwire.cli", "train", *args, "--out", str(tmp_path / "cut")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "cut" / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (tmp_path / "cut" / "graph.json").exists():
        pytest.skip("the run finished before it could be killed")
    assert run_cli("train", "--resume", tmp_path / "cut", "--quiet") == 0
    whole = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key


def test_bf16_precision_trains_and_records_finite_weights(tmp_path, tiny_npz):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "1", "--precision", "bf16", "--out", out) == 0
    history = np.load(out / "edge_history.npy")
    assert np.isfinite(history).all() and not np.allclose(history, 0.5)
    assert yaml.safe_load((out / "config.yaml").read_text())["precision"] == "bf16"


def test_unreadable_checkpoint_is_one_line(tmp_path, tiny_npz, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "1", "--out", out) == 0
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert run_cli("train", "--resume", out, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read" in err


def test_batch_seeds_equal_separate_runs(tmp_path, tiny_npz):
    """K seeds trained as one network leave the K run directories that K separate runs leave."""
    config = build_config(None, dataset=tiny_npz, nodes=6, stages=2, channels=2, batch_size=16, epochs=2, seed=3,
                          lam=0.02)
    configs = train_module.seed_configs(config, 3)
    assert [c.seed for c in configs] == [3, 4, 5]
    together = train_module.train_seeds(configs, [tmp_path / f"b{c.seed}" for c in configs], progress=False)
    for c, result in zip(configs, together):
        alone = train_module.train(c, tmp_path / f"s{c.seed}", progress=False)
        a = torch.load(tmp_path / f"s{c.seed}" / "weights.pt", weights_only=True)
        b = torch.load(result.out / "weights.pt", weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].double(), b[key].double(), atol=1e-5), (c.seed, key)
        assert np.allclose(np.load(alone.out / "edge_history.npy"), np.load(result.out / "edge_history.npy"), atol=1e-5)
        assert result.test_accuracy == alone.test_accuracy
        assert result.thresholded_accuracy == alone.thresholded_accuracy
        assert yaml.safe_load((result.out / "config.yaml").read_text())["seed"] == c.seed
        assert specs.load(result.out / "graph.json").meta["seed"] == c.seed
    # The members really are different networks (distinct seeds).
    first, second = (torch.load(r.out / "weights.pt", weights_only=True) for r in together[:2])
    assert not torch.equal(first["edge_weights"], second["edge_weights"])


def test_batch_seeds_resume_from_member_checkpoints(tmp_path, tiny_npz):
    config = build_config(None, dataset=tiny_npz, nodes=6, stages=2, channels=2, batch_size=16, epochs=3, seed=0)
    configs = train_module.seed_configs(config, 2)
    whole = train_module.train_seeds(configs, [tmp_path / "w0", tmp_path / "w1"], progress=False)

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    for name in ("together", "apart"):
        with pytest.raises(KeyboardInterrupt):
            train_module.train_seeds(configs, [tmp_path / name / "0", tmp_path / name / "1"], progress=False,
                                     on_epoch=stop_after_first_epoch)
    # Resumed together: the same arithmetic as the uninterrupted pair, so the same bits.
    train_module.train_seeds(configs, [tmp_path / "together" / "0", tmp_path / "together" / "1"], resume=True,
                             progress=False)
    # A member's checkpoint is an ordinary run's checkpoint: it resumes alone, as a single network
    # (whose float sums differ in the last bits from the stacked one's, hence a tolerance).
    assert run_cli("train", "--resume", tmp_path / "apart" / "1", "--quiet") == 0
    for k, w in enumerate(whole):
        a = torch.load(w.out / "weights.pt", weights_only=True)
        b = torch.load(tmp_path / "together" / str(k) / "weights.pt", weights_only=True)
        assert all(torch.equal(a[key], b[key]) for key in a)
    a = torch.load(whole[1].out / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "apart" / "1" / "weights.pt", weights_only=True)
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), rtol=1e-4, atol=1e-4), key


def test_batch_seeds_on_the_command_line(tmp_path, tiny_npz, capsys):
    out = tmp_path / "runs"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "1", "--seed", "4", "--batch-seeds", "2",
                   "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed4", "seed5"]
    assert all((out / name / "graph.json").is_file() for name in ("seed4", "seed5"))
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--batch-seeds", "0", "--out", tmp_path / "x") == 2
    assert "--batch-seeds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("given, steps", [
    (None, [8 * 10, 9 * 10]),  # 80% and 90% of 10 epochs, at 10 steps an epoch
    ([3, 7], [30, 70]),  # epochs
    ([0.5, 0.75], [50, 75]),  # fractions of all 100 steps
    (["25s", "41s"], [25, 41]),  # step counts, inside an epoch
])
def test_milestones_as_epochs_fractions_or_steps(given, steps):
    config = build_config(None, epochs=10, lr_milestones=given)
    assert config.milestone_steps(10) == steps
    rates = [config.learning_rate(t, 10) for t in range(100)]
    assert rates[0] == 0.1 and rates[steps[0]] == pytest.approx(0.01) and rates[steps[1]] == pytest.approx(0.001)
    assert rates[steps[0] - 1] == 0.1 and rates[steps[1] - 1] == pytest.approx(0.01)


def test_milestones_parse_from_the_command_line_and_yaml(tmp_path):
    from dagwire.config import parse_milestones

    assert parse_milestones("80,90") == [80, 90]
    assert parse_milestones("0.8, 0.9") == [0.8, 0.9]
    assert parse_milestones("500s,740s") == ["500s", "740s"]
    assert parse_milestones(["500s", 30, 0.5]) == ["500s", 30, 0.5]
    path = tmp_path / "c.yaml"
    path.write_text("lr_milestones: [500s, 740s]\nepochs: 39\n")
    assert build_config(path).milestone_steps(40) == [500, 740]


def test_step_milestones_drop_the_rate_inside_an_epoch(tmp_path, tiny_npz):
    # 64 images, batch 16: 4 steps an epoch; the drop at step 6 falls inside epoch 2.
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", tiny_npz, *TINY, "--epochs", "3", "--lr-milestones", "6s,9s",
                   "--out", out) == 0
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.1, 0.01, 0.001])  # the rate of each epoch's last step


def test_lambda_ramps_linearly_over_the_warmup_steps_then_holds():
    ramped = build_config(None, lam=5e-3, lam_warmup=400)
    assert [ramped.lam_at(step) for step in (0, 100, 200, 399)] == pytest.approx([0, 1.25e-3, 2.5e-3, 5e-3 * 399 / 400])
    assert ramped.lam_at(400) == ramped.lam_at(10_000) == 5e-3
    assert build_config(None, lam=5e-3).lam_at(0) == 5e-3  # no warm-up: the full λ from the first step
