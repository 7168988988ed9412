"""τ* (the paper's threshold rule) and the ordering test, on tables with known answers."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from dagwire import stats
from dagwire.cli import main
from dagwire.tables import runs_frame, write_runs_table

FEATURES = [f for f, _ in stats.ORDERING_FEATURES]


def runs_table(trend: float, seeds: int = 6, noise: float = 1.0, seed: int = 0, channels: int = 4) -> pd.DataFrame:
    """Three datasets, easiest first by accuracy; every feature moves by `trend` per step of difficulty
    in the paper's direction (0: no trend), plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for rank, (name, accuracy) in enumerate([("easy", 0.97), ("middle", 0.85), ("hard", 0.6)]):
        for s in range(seeds):
            row = {"dataset": name, "seed": s, "status": "done", "run_dir": f"runs/{name}/seed{s}",
                   "test_accuracy": accuracy + rng.normal(0, 0.005), "channels": channels}
            for feature, direction in stats.ORDERING_FEATURES:
                sign = 1 if direction == "up" else -1
                row[feature] = 10 + sign * trend * rank + rng.normal(0, noise)
                row[feature + stats.TAU_STAR_SUFFIX] = row[feature] + 1
            row["tau_star"] = 0.1
            rows.append(row)
    return pd.DataFrame(rows)


def test_a_planted_trend_is_reproduced_on_every_feature():
    result = stats.ordering_test(runs_table(trend=3.0), permutations=999, resamples=999)
    assert result.datasets == ["easy", "middle", "hard"]
    assert [t.feature for t in result.tests] == FEATURES
    for t in result.tests:
        assert t.verdict == "reproduced", t
        assert (t.tau_b > 0.5) if t.direction == "up" else (t.tau_b < -0.5)
        assert t.p_holm < 0.05
        for pair in t.pairs:  # the planted step of ±3 lies inside each bootstrap interval
            want = 3.0 if t.direction == "up" else -3.0
            assert pair.low < want < pair.high


def test_no_trend_reproduces_nothing():
    result = stats.ordering_test(runs_table(trend=0.0, seed=3), permutations=999, resamples=999)
    assert all(t.verdict == "not reproduced" for t in result.tests)
    assert all(t.p_holm >= 0.05 for t in result.tests)


def test_a_trend_against_the_paper_is_not_reproduced():
    result = stats.ordering_test(runs_table(trend=-3.0), permutations=999, resamples=999)
    assert all(t.verdict == "not reproduced" and t.p > 0.9 for t in result.tests)


def test_permutation_p_of_a_perfect_ordering_is_the_smallest_possible():
    ranks = np.repeat([0.0, 1.0, 2.0], 4)
    values = ranks * 10 + np.arange(12) * 0.01  # strictly increasing with the rank
    tau_b, p = stats.permutation_p(ranks, values, "up", 499, np.random.default_rng(0))
    # 66 pairs, 18 tied in rank, the other 48 concordant: τ-b = 48 / √(48 · 66)
    assert tau_b == pytest.approx(48 / (48 * 66) ** 0.5) and tau_b == pytest.approx(stats.kendall_tau_b(ranks, values))
    assert p == pytest.approx(1 / 500)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_tau_b_equals_scipys_with_ties(seed):
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, 3, 14).astype(float)
    values = rng.integers(0, 5, 14).astype(float)  # many ties in both
    statistic = stats._tau_b_statistic(values)
    assert statistic(ranks) == pytest.approx(stats.kendall_tau_b(ranks, values), abs=1e-12)
    batch = np.stack([rng.permutation(ranks) for _ in range(7)])
    assert statistic(batch, axis=-1) == pytest.approx([stats.kendall_tau_b(r, values) for r in batch], abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_tau_b_many_is_scipys_kendalltau_bit_for_bit_on_tables_with_ties(seed):
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 25))
    x = rng.integers(0, 3, (40, n)).astype(float)  # difficulty ranks: many ties
    y = rng.integers(0, 6, (40, n)) * 0.1  # a feature with ties
    y[0] = 1.0  # a constant feature: no ordering (NaN), as scipy says
    expected = [kendalltau(a, b).statistic for a, b in zip(x, y)]
    got = stats.tau_b_many(x, y)
    assert np.isnan(got[0]) and np.isnan(expected[0])
    assert got[1:].tolist() == expected[1:]  # equal, not approximately: the same arithmetic
    assert stats.tau_b_many(x[0], y).shape == (40,)  # one side broadcast against many


def _interaction_one_at_a_time(small, large, feature, direction, permutations, resamples, rng):
    """(low, high, p) of one feature as the interaction test computes them, τ-b by scipy one pair at a time."""
    from scipy.stats import bootstrap, kendalltau, rankdata

    def tau(x, y):
        t = kendalltau(x, y).statistic
        return 0.0 if math.isnan(t) else t

    order = [["easy", "middle", "hard"]] * 2
    parts = [t[["dataset", feature]] for t in (small, large)]
    samples = [p.loc[p["dataset"] == d, feature].to_numpy(float) for p in parts for d in order[0]]

    def statistic(*groups):
        small_groups, large_groups = groups[:3], groups[3:]

        def ranks(gs):
            return np.concatenate([np.full(len(g), k, float) for k, g in enumerate(gs)])
        return tau(ranks(large_groups), np.concatenate(large_groups)) - tau(ranks(small_groups), np.concatenate(small_groups))

    ci = bootstrap(samples, statistic, n_resamples=resamples, method="percentile", vectorized=False,
                   rng=rng).confidence_interval
    values = [p[feature].to_numpy(float) for p in parts]
    delta = tau(parts[1]["dataset"].map(order[1].index), values[1]) - tau(parts[0]["dataset"].map(order[0].index),
                                                                          values[0])
    position = np.concatenate([rankdata(v) / len(v) for v in values])
    names = np.concatenate([p["dataset"].to_numpy(str) for p in parts])
    in_large = np.r_[np.zeros(len(values[0]), bool), np.ones(len(values[1]), bool)]
    rank = np.array([order[0].index(d) for d in names], float)
    sign, as_far = (1 if direction == "up" else -1), 0
    for _ in range(permutations):
        labels = in_large.copy()
        for d in np.unique(names):
            members = np.flatnonzero(names == d)
            labels[members] = rng.permutation(labels[members])
        permuted = tau(rank[labels], position[labels]) - tau(rank[~labels], position[~labels])
        as_far += bool(sign * permuted >= sign * delta - 1e-12)
    return float(ci.low), float(ci.high), (1 + as_far) / (1 + permutations)


def test_the_interaction_test_gives_what_scipy_one_pair_at_a_time_gives_for_the_same_seed():
    # The vectorised τ-b consumes the generator's draws in the same order: the same intervals and p.
    small, large = runs_table(trend=1.0, seed=11, seeds=4), runs_table(trend=2.0, seed=12, seeds=5, channels=8)
    for frame in (small, large):
        frame["nodes"] = np.round(frame["nodes"])  # ties within and across datasets
    tests = stats.interaction_test(small, large, permutations=99, resamples=99, seed=3)
    rng = np.random.default_rng(3)  # one generator through the features, in the test's order
    assert [t.feature for t in tests] == FEATURES
    for t in tests:
        assert (t.low, t.high, t.p) == _interaction_one_at_a_time(small, large, t.feature, t.direction, 99, 99, rng)


def test_holm_known_values():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def curves(table):
    """A long table of threshold curves: dataset -> {τ: hold-out accuracy}, 2 seeds each (equal)."""
    return pd.DataFrame([{"dataset": d, "seed": s, "threshold": t, "holdout_accuracy": a}
                         for d, curve in table.items() for s in (0, 1) for t, a in curve.items()])


def test_tau_star_is_the_largest_tau_where_every_dataset_holds_its_accuracy():
    grid = {0.0: 0.90, 0.01: 0.90, 0.05: 0.897, 0.1: 0.89, 0.2: 0.5}
    other = {0.0: 0.80, 0.01: 0.81, 0.05: 0.80, 0.1: 0.799, 0.2: 0.79}
    assert stats.tau_star(curves({"a": grid, "b": other})) == 0.05  # a drops 1 pp at 0.1
    assert stats.tau_star(curves({"a": grid, "b": other}), tolerance=0.011) == 0.1
    assert stats.tau_star(curves({"b": other})) == 0.1  # 0.79 at 0.2 is 1 pp down
    # a lucky τ beyond a drop is not chosen
    bumpy = {0.0: 0.9, 0.01: 0.8, 0.05: 0.9, 0.1: 0.9, 0.2: 0.9}
    assert stats.tau_star(curves({"a": bumpy})) == 0.0
    assert stats.tau_star(pd.DataFrame()) is None


def test_ordering_command_json_and_text(tmp_path, capsys):
    df = runs_frame(runs_table(trend=3.0).to_dict("records"))
    write_runs_table(df, tmp_path)
    assert main(["ordering", str(tmp_path / "runs.csv"), "--json", "--permutations", "199"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["columns"] == "τ* = 0.1" and result["datasets"] == ["easy", "middle", "hard"]
    assert [t["verdict"] for t in result["tests"]] == ["reproduced"] * len(FEATURES)
    assert {"feature", "direction", "tau_b", "p", "p_holm", "verdict", "pairs"} <= set(result["tests"][0])
    assert main(["ordering", str(tmp_path / "runs.parquet"), "--tau-column", "threshold",
                 "--permutations", "199"]) == 0
    out = capsys.readouterr().out
    assert "features at the sweep's τ" in out and out.count("reproduced") == len(FEATURES)


def test_ordering_command_bad_input_is_one_line(tmp_path, capsys):
    assert main(["ordering", str(tmp_path / "missing.csv")]) == 2
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["ordering", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[0] and "lacks the column" in err[1]


# --- capacity × difficulty ---------------------------------------------------------------------------

def grows(t) -> bool:
    """Whether Δ points the paper's way: τ-b rises for "up" features, falls for sparsity."""
    return (t.delta > 0) if t.direction == "up" else (t.delta < 0)


def test_a_planted_interaction_is_found_on_every_feature():
    small, large = runs_table(trend=0.0, seed=1), runs_table(trend=3.0, seed=2, channels=8)
    tests = stats.interaction_test(small, large, permutations=499, resamples=499)
    assert [t.feature for t in tests] == FEATURES
    for t in tests:
        assert t.verdict == "grows" and t.p_holm < 0.05 and grows(t), t
        assert t.delta == pytest.approx(t.tau_b_large - t.tau_b_small)
        assert (t.low > 0) if t.direction == "up" else (t.high < 0)  # the interval excludes 0


def test_identical_tables_give_no_interaction_with_an_interval_that_covers_0():
    table = runs_table(trend=3.0, seed=4)
    tests = stats.interaction_test(table, table.assign(channels=8), permutations=499, resamples=499)
    for t in tests:
        assert t.delta == 0 and t.low <= 0 <= t.high and t.verdict == "does not grow", t
        assert t.p > 0.3  # half of all relabellings are at least as far as Δ = 0


def test_a_shift_of_every_dataset_alike_is_not_an_interaction():
    table = runs_table(trend=3.0, seed=5)
    features = FEATURES + [f + stats.TAU_STAR_SUFFIX for f in FEATURES]
    shifted = table.assign(channels=8, **{f: table[f] + 100 for f in features})
    assert all(t.delta == 0 and t.verdict == "does not grow" for t in stats.interaction_test(
        table, shifted, permutations=199, resamples=199))


def test_an_effect_that_shrinks_is_not_called_growth():
    small, large = runs_table(trend=3.0, seed=6), runs_table(trend=0.0, seed=7, channels=8)
    tests = stats.interaction_test(small, large, permutations=499, resamples=499)
    assert all(t.verdict == "does not grow" and not grows(t) and t.p > 0.9 for t in tests)


def test_a_feature_at_its_bound_in_some_cells_still_gets_an_interval():
    # Nodes kept: every run at the full 30 but one run of the hardest dataset, so that many
    # resamples of a capacity have a constant feature. Those resamples have no ordering (τ-b 0),
    # so the interval is finite and no degenerate-data warning reaches the user.
    small, large = runs_table(trend=3.0, seed=8), runs_table(trend=3.0, seed=9, channels=8)
    for table in (small, large):
        table["nodes"] = 30.0
        table.loc[table.index[-1], "nodes"] = 29.0  # one run of the hardest dataset
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tests = {t.feature: t for t in stats.interaction_test(small, large, permutations=199, resamples=199)}
    nodes = tests["nodes"]
    assert nodes.delta == 0 and math.isfinite(nodes.low) and math.isfinite(nodes.high)
    assert nodes.low <= 0 <= nodes.high and nodes.verdict == "does not grow"


def test_ordering_by_channels_command(tmp_path, capsys):
    for name, trend, seed, channels in (("c4", 0.0, 1, 4), ("c8", 3.0, 2, 8)):
        (tmp_path / name).mkdir()
        write_runs_table(runs_frame(runs_table(trend, seed=seed, channels=channels).to_dict("records")),
                         tmp_path / name)
    tables = [str(tmp_path / "c4" / "runs.csv"), str(tmp_path / "c8" / "runs.csv")]
    picture = tmp_path / "capacity.png"
    assert main(["ordering", *tables, "--by", "channels", "--json", "--permutations", "199",
                 "--plot", str(picture)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["channels"] for c in result["capacities"]] == [4, 8]
    assert [t["verdict"] for t in result["capacities"][1]["tests"]] == ["reproduced"] * len(FEATURES)
    assert [t["feature"] for t in result["interaction"]] == FEATURES
    assert all(t["verdict"] == "grows" for t in result["interaction"])
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 399 permutations: the smallest p, 1/400, stays below α after Holm's factor of 8
    assert main(["ordering", *tables, "--by", "channels", "--permutations", "399"]) == 0
    out = capsys.readouterr().out
    assert "== channels = 4" in out and "== channels = 8" in out and out.count(" grows") == len(FEATURES)


@pytest.mark.parametrize("late_trend, verdict", [(3.0, "grows"), (0.0, "does not grow")])
def test_ordering_by_any_column_pools_tables_that_differ_in_it(tmp_path, capsys, late_trend, verdict):
    """--by steps: the same capacity, two schedules; a planted effect in the longer one only is growth."""
    for name, trend, seed, steps in (("short", 0.0, 1, 1840), ("long", late_trend, 2, 8000)):
        (tmp_path / name).mkdir()
        table = runs_table(trend, seed=seed).assign(steps=steps)
        write_runs_table(runs_frame(table.to_dict("records")), tmp_path / name)
    tables = [str(tmp_path / "long" / "runs.csv"), str(tmp_path / "short" / "runs.csv")]  # any order
    assert main(["ordering", *tables, "--by", "steps", "--json", "--permutations", "399"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["by"] == "steps" and [c["steps"] for c in result["capacities"]] == [1840, 8000]
    assert {t["verdict"] for t in result["interaction"]} == {verdict}
    assert main(["ordering", tables[0], tables[0], "--by", "steps"]) == 2  # one schedule only
    assert "two values" in capsys.readouterr().err


def test_ordering_per_cpu_gives_each_kind_its_verdict_and_names_runs_that_moved(tmp_path, capsys):
    """--per cpu: a trend planted on one machine kind only is reproduced there and not on the other;
    a run that resumed on another CPU is in neither kind's test but is in the table's."""
    trend, flat = runs_table(trend=3.0, seed=11), runs_table(trend=0.0, seed=12).assign(seed=lambda d: d.seed + 6)
    table = pd.concat([trend.assign(cpu="Intel Xeon (AVX512)"), flat.assign(cpu="AMD EPYC (AVX2)")],
                      ignore_index=True)
    table.loc[0, "cpu"] = "Intel Xeon (AVX512); AMD EPYC (AVX2)"  # easy seed 0 moved
    table.loc[len(table)] = {**table.iloc[1].to_dict(), "seed": 99, "status": "pending", "cpu": None}
    write_runs_table(runs_frame(table.to_dict("records")), tmp_path)
    runs = str(tmp_path / "runs.csv")
    assert main(["ordering", runs, "--per", "cpu", "--json", "--permutations", "399"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per"] == "cpu" and result["moved"] == ["easy 0"]
    assert result["runs"] == 36  # the whole table's test keeps the moved run
    groups = {g["cpu"]: g for g in result["groups"]}
    assert list(groups) == ["Intel Xeon (AVX512)", "AMD EPYC (AVX2)"]  # in the table's order
    assert groups["Intel Xeon (AVX512)"]["runs"] == 17 and groups["AMD EPYC (AVX2)"]["runs"] == 18
    assert {t["verdict"] for t in groups["Intel Xeon (AVX512)"]["result"]["tests"]} == {"reproduced"}
    assert {t["verdict"] for t in groups["AMD EPYC (AVX2)"]["result"]["tests"]} == {"not reproduced"}
    assert main(["ordering", runs, "--per", "cpu", "--permutations", "399"]) == 0
    out = capsys.readouterr().out
    assert "== all runs" in out and "== cpu = Intel Xeon (AVX512) (17 runs)" in out
    assert "== cpu = AMD EPYC (AVX2) (18 runs)" in out and "moved between CPUs while training: easy 0" in out


def test_ordering_per_a_kind_with_one_dataset_says_there_is_no_test(tmp_path, capsys):
    table = runs_table(trend=3.0, seed=13).assign(cpu="Intel Xeon (AVX512)")
    table.loc[table["dataset"] == "hard", "cpu"] = "AMD EPYC (AVX2)"  # a kind that ran one dataset only
    write_runs_table(runs_frame(table.to_dict("records")), tmp_path)
    assert main(["ordering", str(tmp_path / "runs.csv"), "--per", "cpu", "--permutations", "99"]) == 0
    out = capsys.readouterr().out
    assert "== cpu = AMD EPYC (AVX2) (6 runs)\nno test: it needs finished runs of at least two datasets" in out


def test_ordering_per_bad_input_is_one_line(tmp_path, capsys):
    write_runs_table(runs_frame(runs_table(3.0).to_dict("records")), tmp_path)
    table = str(tmp_path / "runs.csv")
    assert main(["ordering", table, "--per", "cpu"]) == 2  # the synthetic table has no cpu column
    assert main(["ordering", table, table, "--per", "channels", "--by", "channels"]) == 2
    assert main(["ordering", table, table, "--per", "channels"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no cpu column" in err[0] and "give one of them" in err[1] and "give one" in err[2]


def test_ordering_by_channels_bad_input_is_one_line(tmp_path, capsys):
    write_runs_table(runs_frame(runs_table(3.0).to_dict("records")), tmp_path)
    table = str(tmp_path / "runs.csv")
    assert main(["ordering", table, table]) == 2  # several tables need --by
    assert main(["ordering", table, "--by", "channels"]) == 2  # one capacity only
    no_channels = tmp_path / "old"
    no_channels.mkdir()
    write_runs_table(runs_frame(runs_table(3.0).drop(columns="channels").to_dict("records")), no_channels)
    assert main(["ordering", table, str(no_channels / "runs.csv"), "--by", "channels"]) == 2
    assert main(["ordering", table, "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "--by COLUMN" in err[0] and "two values" in err[1]
    assert "no channels column" in err[2] and "needs --by" in err[3]


def test_collapsed_runs_are_left_out_and_named():
    table = runs_table(trend=0.0, seed=8)
    planted = table.copy()
    planted["collapsed"] = False
    # a collapsed run of the hardest dataset with huge features would plant a trend if it were pooled
    planted.loc[len(planted)] = {**planted.iloc[-1].to_dict(), "seed": 99, "collapsed": True,
                                 **{f + stats.TAU_STAR_SUFFIX: 1e6 for f in FEATURES}}
    kept = stats.ordering_test(planted, stats.TAU_STAR_SUFFIX, permutations=199, resamples=199)
    plain = stats.ordering_test(table, stats.TAU_STAR_SUFFIX, permutations=199, resamples=199)
    assert kept.collapsed == ["hard 99"] and plain.collapsed == []
    assert [t.tau_b for t in kept.tests] == [t.tau_b for t in plain.tests] and kept.runs == plain.runs
