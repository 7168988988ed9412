"""The fit and collapse records of a run: known answers for the collapse rule, and a run that collapses."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dagwire import spec as specs
from dagwire.config import build_config
from dagwire.dynamics import COLLAPSE_MEDIAN_EDGE, first_phase_epoch, is_collapsed
from dagwire.sweep.table import collect_runs
from dagwire.tables import CAPACITY_COLUMNS, FIT_COLUMNS, SCHEDULE_COLUMNS, read_runs_table
from dagwire.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("milestones, steps_per_epoch, epochs, epoch", [
    ([400, 640], 40, 36, 10),   # the repro schedule: 400 steps at lr 0.1 end with epoch 10
    ([800, 1040], 40, 46, 20),  # the capacity schedule
    ([401, 640], 40, 36, 11),   # a drop inside epoch 11: that epoch still trains at lr 0.1 first
    ([], 40, 36, 36),           # no drop: the whole run is the first phase
    ([10_000], 40, 36, 36),     # a drop after the end
])
def test_first_phase_epoch(milestones, steps_per_epoch, epochs, epoch):
    assert first_phase_epoch(milestones, steps_per_epoch, epochs) == epoch


def test_collapse_needs_both_chance_accuracy_and_shrunk_edges():
    shrunk, whole = [0.01] * 6 + [0.5] * 4, [0.5] * 10
    assert is_collapsed(0.11, shrunk, 10)
    assert not is_collapsed(0.25, shrunk, 10)  # it learned: above twice chance
    assert not is_collapsed(0.11, whole, 10)   # still at chance, but the edges are there
    assert not is_collapsed(0.11, [COLLAPSE_MEDIAN_EDGE] * 10, 10)  # the bounds are strict
    assert not is_collapsed(0.3, shrunk, 10) and is_collapsed(0.3, shrunk, 4)  # chance is 1/classes


def test_a_run_whose_edges_vanish_at_chance_is_recorded_as_collapsed(tiny_npz, tmp_path, capsys):
    # At lr 1e-4 the network learns nothing in 32 steps, while λ = 400 moves every edge weight by
    # lr·λ·(1 − tanh²w), 0.03 to 0.04 a step, towards 0: from tanh w = 0.5 (w = 0.55) it reaches 0
    # within about 16 steps and then stays within a step of it, below the collapse bound of 0.05.
    config = build_config(None, dataset=tiny_npz, nodes=6, stages=2, channels=2, batch_size=16,
                          epochs=8, lr=1e-4, lam=400.0, momentum=0.0, weight_decay=0.0, lr_milestones=["28s"],
                          augment=False)
    result = train(config, tmp_path / "run", progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert ["collapsed" in m for m in metrics] == [False] * 6 + [True, False]  # once, at the first phase's end
    assert metrics[6]["train_accuracy"] < 0.5 and np.median(np.load(tmp_path / "run" / "edge_history.npy")[6]) < 0.05
    assert result.collapsed is metrics[6]["collapsed"] is True
    assert "collapsed: training accuracy" in capsys.readouterr().err
    meta = specs.load(tmp_path / "run" / "graph.json").meta
    assert meta["collapsed"] is True and meta["train_eval_accuracy"] == pytest.approx(result.train_eval_accuracy)


def test_a_run_that_learns_is_not_collapsed_and_its_fit_is_measured(tiny_npz, tmp_path):
    config = build_config(None, dataset=tiny_npz, nodes=6, stages=2, channels=2, batch_size=16,
                          epochs=2, augment=False)
    result = train(config, tmp_path / "run", progress=False)
    assert result.collapsed is False
    # No augmentation, eval mode, every training image once: the fit, not an epoch's running mean.
    from dagwire.data import load_dataset_for
    from dagwire.model import load_model
    from dagwire.train import evaluate
    import torch

    data = load_dataset_for(config)
    model = load_model(specs.load(tmp_path / "run" / "graph.json"), tmp_path / "run" / "weights.pt", 2, 3, 4)
    expected = evaluate(model, torch.from_numpy(data.train_x), torch.from_numpy(data.train_y), data.mean, data.std)
    assert result.train_eval_accuracy == expected


# The columns docs/repro/runs.csv had before the capacity, fit, collapse, cpu and schedule columns
# were added: the sha256 of those columns as CSV, from the file as committed at b4ebd76.
REPRO_TABLE_BEFORE = "fac96c3e78d4b838317171a44dd5b13c33cd6fd6567a0de043ce1caa3d8e4b09"


def test_the_repro_table_rebuilt_by_the_tool_gains_the_capacity_columns_and_keeps_every_value():
    rebuilt = collect_runs(ROOT / "docs" / "repro" / "sweep")
    committed = read_runs_table(ROOT / "docs" / "repro" / "runs.csv")
    assert rebuilt.to_csv(index=False) == committed.to_csv(index=False)
    new = {"cpu", *CAPACITY_COLUMNS, *FIT_COLUMNS, *SCHEDULE_COLUMNS}
    old = [c for c in committed.columns if c not in new]
    assert hashlib.sha256(committed[old].to_csv(index=False).encode()).hexdigest() == REPRO_TABLE_BEFORE
    assert committed[list(CAPACITY_COLUMNS)].drop_duplicates().values.tolist() == [[4, 3, 30, 59285]]
    assert not committed["collapsed"].any() and committed["train_eval_accuracy"].isna().all()
    assert committed[list(SCHEDULE_COLUMNS)].drop_duplicates().values.tolist() == [[1440, "400,640", 0.005, 0]]
