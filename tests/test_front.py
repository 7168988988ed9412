"""The accuracy–resources front: known answers on planted tables, then `dagwire front` on a tiny real sweep."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import write_npz

from dagwire.cli import main
from dagwire.machine import cpu_label
from dagwire.front import NETWORK_COLUMNS, POOLED, family_points, paired_comparisons, pareto_mask, report_front_section


def planted(advantage: dict[str, float], runs: int = 8, noise: float = 0.004, seed: int = 0) -> pd.DataFrame:
    """Networks of one dataset at λ = 0.005: learned retrained, 2 random controls per run and a width control,
    each control's accuracy the learned graph's minus `advantage[control]`, plus symmetric noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(runs):
        learned = 0.80 + rng.normal(0, 0.02)
        base = {"dataset": "a", "lam": 0.005, "seed": run, "tau": 0.02, "channels": 4, "flops_per_image": 1e6,
                "cpu_seconds_per_image": 1e-4, "cpu": "CPU A" if run % 4 else "CPU B", "run_dir": f"r{run}"}
        rows.append({**base, "family": "learned", "control": None, "parameters": 50_000, "test_accuracy": learned,
                     "mean_epoch_seconds": 10.0 + run % 2})
        wiggle = noise if run % 2 else -noise  # a sign each way: no advantage where none is planted
        for k in range(2):
            rows.append({**base, "family": "random", "control": k, "parameters": 50_100, "mean_epoch_seconds": 11.0 + k,
                         "test_accuracy": learned - advantage["random"] + (wiggle if k else wiggle / 2)})
        rows.append({**base, "family": "width", "control": None, "parameters": 49_000, "mean_epoch_seconds": 9.0,
                     "test_accuracy": learned - advantage["width"] + wiggle})
    return pd.DataFrame(rows, columns=list(NETWORK_COLUMNS))


def test_a_planted_advantage_is_found_and_none_where_there_is_none():
    comparisons = {c.control: c for c in paired_comparisons(planted({"random": 0.03, "width": 0.0}))}
    assert len(comparisons) == 2  # one dataset at one λ: nothing to pool
    found, none = comparisons["random"], comparisons["width"]
    assert found.runs == none.runs == 8
    assert found.difference == pytest.approx(0.03)  # the noise averages out over the runs
    assert 0 < found.low <= 0.03 <= found.high
    assert found.p < 0.01 and found.p_holm < 0.05  # 8 runs, all of one sign: the exact p is 2/256
    assert found.p == pytest.approx(2 / 256)
    assert none.difference == pytest.approx(0.0, abs=1e-12)
    assert none.low < 0 < none.high and none.p == pytest.approx(1.0) and none.p_holm == pytest.approx(1.0)


def test_a_cell_of_one_run_has_p_1_and_no_interval():
    """A sweep part-way through (one seed retrained at some λ) still compares: one run's sign flips are ±d."""
    one = planted({"random": 0.03, "width": 0.03}, runs=1)
    comparisons = paired_comparisons(one)
    assert [c.runs for c in comparisons] == [1, 1]
    assert all(c.p == c.p_holm == 1.0 and math.isnan(c.low) and math.isnan(c.high) for c in comparisons)
    assert all(c.difference == pytest.approx(0.03, abs=0.005) for c in comparisons)


def test_holm_runs_across_every_comparison():
    a = planted({"random": 0.03, "width": 0.03})
    b = planted({"random": 0.03, "width": 0.03}, seed=1).assign(dataset="b")
    comparisons = paired_comparisons(pd.concat([a, b], ignore_index=True), permutations=2**16)
    cells, pooled = [c for c in comparisons if c.dataset != POOLED], [c for c in comparisons if c.dataset == POOLED]
    assert len(cells) == 4 and [c.control for c in pooled] == ["random", "width"]
    assert all(c.p == pytest.approx(2 / 256) for c in cells)
    assert all(c.runs == 16 and c.p == pytest.approx(2 / 2**16) for c in pooled)  # exact: 2^16 flips
    # Holm over 6: the pooled two first (× 6, × 5), then the four tied cells, each × 4.
    assert [c.p_holm for c in pooled] == pytest.approx([6 * 2 / 2**16, 6 * 2 / 2**16])
    assert all(c.p_holm == pytest.approx(4 * 2 / 256) for c in cells)


def test_pooling_finds_what_no_cell_of_three_runs_can():
    """Three λ of 3 runs each, all 2 points better than their random controls: a cell's exact p is at least
    2/8, the 9 runs pooled give 2/512; against a width control planted equal, the pool finds nothing."""
    cells = [planted({"random": 0.02, "width": 0.0}, runs=3, seed=k).assign(lam=lam)
             for k, lam in enumerate((0.0, 0.02, 0.05))]
    comparisons = paired_comparisons(pd.concat(cells, ignore_index=True))
    random_cells = [c for c in comparisons if c.control == "random" and c.dataset != POOLED]
    assert len(random_cells) == 3 and all(c.p == pytest.approx(0.25) and c.p_holm > 0.05 for c in random_cells)
    pooled = {c.control: c for c in comparisons if c.dataset == POOLED}
    assert pooled["random"].runs == 9 and pooled["random"].p == pytest.approx(2 / 512)
    assert pooled["random"].p_holm < 0.05 and pooled["random"].difference == pytest.approx(0.02, abs=0.002)
    assert pooled["width"].p > 0.5 and pooled["width"].low < 0 < pooled["width"].high
    assert pooled["random"].text().startswith("learned − random over every dataset and λ: +0.02")


def test_points_average_a_runs_controls_and_mark_the_front():
    points = {p["family"]: p for p in family_points(planted({"random": 0.03, "width": 0.0}))}
    assert set(points) == {"learned", "random", "width"} and points["random"]["runs"] == 8
    assert points["random"]["parameters"] == 50_100 and points["width"]["parameters"] == 49_000
    # width: fewest parameters, as accurate as learned: the learned point (more parameters) is dominated.
    assert points["width"]["front_parameters"] and not points["random"]["front_parameters"]
    assert points["learned"]["accuracy"] == pytest.approx(points["width"]["accuracy"])
    assert not points["learned"]["front_parameters"]
    assert not math.isnan(points["learned"]["accuracy_std"])
    # Seconds an epoch: a run's controls averaged first (11 and 12 give 11.5 in every run), then over runs.
    assert points["learned"]["mean_epoch_seconds"] == pytest.approx(10.5)
    assert points["random"]["mean_epoch_seconds"] == pytest.approx(11.5) and points["random"]["mean_epoch_seconds_std"] == 0
    assert points["width"]["mean_epoch_seconds"] == pytest.approx(9.0)
    assert points["learned"]["cpu"] == "CPU A; CPU B"  # every kind the family trained on, named once


@pytest.mark.parametrize("cost, accuracy, front", [
    ([1, 2, 3], [0.5, 0.6, 0.7], [True, True, True]),
    ([1, 2, 3], [0.7, 0.6, 0.5], [True, False, False]),
    ([1, 1, 2], [0.5, 0.6, 0.6], [False, True, False]),
    ([2, 2], [0.6, 0.6], [True, True]),
])
def test_pareto_mask(cost, accuracy, front):
    assert pareto_mask(cost, accuracy) == front


def test_front_on_a_tiny_sweep_with_retrained_controls(tmp_path, capsys):
    data = write_npz(tmp_path / "a.npz", images=120)
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--datasets", data, "--seeds", "0-1", "--nodes", "6", "--stages", "2", "--channels", "2",
                 "--batch-size", "16", "--epochs", "2", "--holdout", "16", "--lam", "0,0.01", "--quiet",
                 "--out", str(sweep)]) == 0
    table = pd.read_csv(sweep / "runs.csv")
    for rel in table["run_dir"]:
        run = str(sweep / rel)
        assert main(["retrain", run, "--threshold", "star", "--epochs", "1", "--quiet"]) == 0
        assert main(["retrain", run, "--threshold", "star", "--control", "random", "--controls", "1",
                     "--control", "width", "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    plot = tmp_path / "front.png"
    assert main(["front", str(sweep), "--json", "--plot", str(plot), "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    (block,) = result["datasets"]
    families = {(p["family"], p["lam"]) for p in block["points"]}
    assert {("complete", 0.0), ("thresholded", 0.0), ("learned", 0.01), ("random", 0.01), ("width", 0.01)} <= families
    assert {(c["control"], c["lam"]) for c in block["comparisons"]} == {(c, lam) for c in ("random", "width")
                                                                        for lam in (0.0, 0.01)}
    assert all(c["runs"] == 2 for c in block["comparisons"]) and result["comparisons_in_holm"] == 6
    assert [(c["control"], c["runs"], c["lam"]) for c in result["pooled"]] == [("random", 4, None), ("width", 4, None)]
    assert any(p["front_parameters"] for p in block["points"])
    assert plot.read_bytes()[:4] == b"\x89PNG"
    networks = pd.read_csv(sweep / "networks.csv")
    assert (networks["family"] == "random").sum() == 4 and networks["cpu_seconds_per_image"].notna().sum() == 12
    trained = networks["family"] != "thresholded"  # the thresholded graph is the learned one cut, never trained
    assert networks.loc[trained, "mean_epoch_seconds"].gt(0).all() and networks.loc[~trained, "mean_epoch_seconds"].isna().all()
    assert set(networks.loc[trained, "cpu"]) == {cpu_label()} and networks.loc[~trained, "cpu"].isna().all()
    assert main(["front", str(sweep), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "random controls, retrained" in text and "learned − width at λ = 0.01" in text
    assert "learned − random over every dataset and λ" in text
    assert main(["front", str(tmp_path / "nowhere")]) == 2
    assert main(["front", str(sweep), "--datasets", "nothing-here", "--quiet"]) == 2
    assert "nothing-here not in the sweeps" in capsys.readouterr().err
    assert main(["front", str(sweep), "--datasets", block["dataset"], "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == result
    tables = report_front_section(sweep, tmp_path / "fig.png")
    assert len(tables) == 2 and len(tables[0].rows) == len(block["points"]) + 4 and len(tables[1].rows) == 2
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    from dagwire.report import FRONT_FIGURE, _front_section  # the report places the same section
    (sweep / "report_files").mkdir(exist_ok=True)
    runs = pd.read_csv(sweep / "runs.csv").assign(done=True)
    runs["run_dir"] = [str(sweep / r) for r in runs["run_dir"]]
    shown, figure = _front_section(sweep, runs)
    assert [t.rows for t in shown] == [t.rows for t in tables] and figure.file == FRONT_FIGURE and not figure.error
