"""Statistics over a sweep's runs, pure numbers (no drawing): the paper's threshold rule τ*, and a
test of its central claim that a harder task learns a denser, deeper graph.

The claim is tested per feature with Kendall's τ-b between the datasets' difficulty rank and the
feature over all runs (scipy's `kendalltau`), a one-sided permutation p-value in the paper's
direction (dataset labels shuffled across runs), Holm's correction across the features, and per
pair of adjacent datasets the difference of means with a bootstrap 95 % interval. Difficulty is
measured, not assumed: datasets are ranked by mean test accuracy, easiest first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .config import TAU_TOLERANCE_POINTS

# The paper's claim (Sec. 4), feature by feature: the direction each takes as the task gets
# harder. Fractions (sparsity) grow with N² and do not compare across scales; counts per node
# (mean degree = 2 × edges per node), nodes kept and path lengths do.
ORDERING_FEATURES: tuple[tuple[str, str], ...] = (
    ("sparsity", "down"), ("nodes", "up"), ("mean_degree", "up"), ("parameters", "up"), ("log_paths", "up"),
    ("mean_path", "up"), ("max_path", "up"), ("edge_connectivity", "up"),
)
TAU_STAR_SUFFIX = "_at_tau_star"  # runs-table columns of the features at τ*
TAU_STAR_TOLERANCE = TAU_TOLERANCE_POINTS / 100  # as a fraction of accuracy
ALPHA = 0.05


# --- τ*: the paper's threshold rule ---------------------------------------------------------------

def tau_star(curves, tolerance: float = TAU_STAR_TOLERANCE, column: str = "holdout_accuracy") -> float | None:
    """The largest τ of the grid up to which every dataset's mean accuracy stays within `tolerance` of its unpruned one.

    `curves` is a long table (dataset, threshold, `column`), one row per run and τ, all runs on the
    same grid; a dataset's unpruned accuracy is its mean at the grid's smallest τ (0: every edge
    kept). One τ* for all datasets, as the paper chose one: "the maximum sparsity without a
    noticeable drop in performance". The τ must also pass at every smaller grid point, so one
    lucky τ beyond a drop cannot be chosen. None when the table is empty. A table without a
    `dataset` column is one run's curve: its own τ*.
    """
    if curves is None or not len(curves):
        return None
    if "dataset" not in curves.columns:
        curves = curves.assign(dataset="")
    means = curves.groupby(["dataset", "threshold"])[column].mean().unstack("dataset").sort_index()
    unpruned = means.iloc[0]
    chosen = None
    for tau, row in means.iterrows():
        if not bool((row >= unpruned - tolerance - 1e-12).all()):
            break
        chosen = float(tau)
    return chosen


# --- the ordering test ------------------------------------------------------------------------------

@dataclass
class PairDifference:
    """Mean of the harder dataset minus mean of the easier one, with a bootstrap 95 % interval."""

    easier: str
    harder: str
    difference: float
    low: float  # NaN when a dataset has fewer than 2 runs: no interval
    high: float

    def text(self) -> str:
        """'b − a: +0.05 [+0.01, +0.09]' (no interval: 'fewer than 2 runs')."""
        interval = ("[fewer than 2 runs]" if math.isnan(self.low)
                    else f"[{self.low:+.3g}, {self.high:+.3g}]")
        return f"{self.harder} − {self.easier}: {self.difference:+.3g} {interval}"


@dataclass
class FeatureTest:
    """One feature's test: Kendall τ-b with difficulty, one-sided permutation p, Holm-adjusted p, verdict."""

    feature: str
    direction: str  # "up" or "down" as the task gets harder, the paper's claim
    tau_b: float
    p: float
    p_holm: float
    verdict: str  # "reproduced" (significant after Holm) or "not reproduced"
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    pairs: list[PairDifference] = field(default_factory=list)


@dataclass
class OrderingResult:
    """The test of every feature; datasets easiest first with their mean test accuracy."""

    datasets: list[str]
    accuracy: dict[str, float]
    runs: int
    permutations: int
    alpha: float
    columns: str  # which features: "τ = …" or "τ*"
    tests: list[FeatureTest]
    collapsed: list[str] = field(default_factory=list)  # "dataset seed" of done runs left out as collapsed

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


def collapsed_mask(df):
    """Per row: a done run that collapsed (`dynamics.is_collapsed`); all False for a table without the column."""
    done = df["status"].astype(str).eq("done")
    if "collapsed" not in df.columns:
        return done & False
    return done & df["collapsed"].astype("boolean").fillna(False).astype(bool)


def usable_runs(df):
    """The done runs that did not collapse: a collapsed run's graph says nothing of its task."""
    return df[df["status"].astype(str).eq("done") & ~collapsed_mask(df)].copy()


def collapsed_runs(df) -> list[str]:
    """"dataset seed" of every done run that collapsed."""
    return [f"{r['dataset']} {r['seed']}" for _, r in df[collapsed_mask(df)].iterrows()]


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b (ties in either variable accounted for); NaN when one variable is constant."""
    from scipy.stats import kendalltau

    return float(kendalltau(x, y, variant="b").statistic)


def tau_b_many(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of x and y along their last axis, broadcast over the others; NaN where one is constant.

    Written out because scipy's kendalltau takes one pair of vectors at a time, and the tests
    need it for thousands of permutations and resamples at once. It is scipy's arithmetic, step
    for step: (concordant − discordant pairs, an integer) / √(pairs untied in x) / √(pairs untied
    in y), clipped to [−1, 1], so each value is bit for bit the one kendalltau(x, y) returns and
    a seeded test gives the same p-values and intervals either way. Tested against kendalltau.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    n = x.shape[-1]
    batch = x.shape[:-1]
    x, y = x.reshape(-1, n), y.reshape(-1, n)
    i, j = np.triu_indices(n, 1)
    out = np.empty(len(x))
    step = max(1, 4_000_000 // max(1, len(i)))  # rows per chunk: a few arrays of ~32 MB at most
    for start in range(0, len(x), step):
        xs, ys = x[start:start + step], y[start:start + step]
        x_signs, y_signs = np.sign(xs[:, j] - xs[:, i]), np.sign(ys[:, j] - ys[:, i])
        untied_x, untied_y = np.count_nonzero(x_signs, axis=-1), np.count_nonzero(y_signs, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = (x_signs * y_signs).sum(-1) / np.sqrt(untied_x) / np.sqrt(untied_y)
        out[start:start + step] = np.where((untied_x == 0) | (untied_y == 0), np.nan, np.clip(tau, -1.0, 1.0))
    return out.reshape(batch)


def _zero_where_nan(tau: np.ndarray) -> np.ndarray:
    """τ-b, with 0 where a variable is constant: a resampled or relabelled set whose feature does not vary has no ordering."""
    return np.nan_to_num(tau, nan=0.0)


def _tau_b_statistic(values: np.ndarray) -> "Callable":
    """τ-b of (ranks, `values`) for many orderings of the ranks at once (permutation_test's `vectorized` form)."""
    values = np.asarray(values, dtype=float)

    def statistic(ranks: np.ndarray, axis: int = -1) -> np.ndarray:
        return tau_b_many(np.moveaxis(np.asarray(ranks, dtype=float), axis, -1), values)

    return statistic


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda k: p_values[k])
    adjusted = [1.0] * m
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[k]))
        adjusted[k] = running
    return adjusted


def permutation_p(ranks: np.ndarray, values: np.ndarray, direction: str, permutations: int,
                  rng: np.random.Generator) -> tuple[float, float]:
    """(τ-b, one-sided p): how often shuffled dataset labels give a τ-b at least as far in the claimed direction."""
    from scipy.stats import permutation_test

    statistic = _tau_b_statistic(np.asarray(values, dtype=float))
    observed = float(statistic(np.asarray(ranks, dtype=float)))
    if math.isnan(observed):
        return observed, 1.0
    result = permutation_test((np.asarray(ranks, dtype=float),), statistic, permutation_type="pairings",
                              vectorized=True, n_resamples=permutations, rng=rng,
                              alternative="greater" if direction == "up" else "less")
    return observed, float(result.pvalue)


def bootstrap_difference(a: np.ndarray, b: np.ndarray, resamples: int,
                         rng: np.random.Generator) -> tuple[float, float, float]:
    """mean(b) − mean(a) and its percentile 95 % interval, runs resampled within each dataset."""
    from scipy.stats import bootstrap

    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    result = bootstrap((a, b), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis), n_resamples=resamples,
                       method="percentile", vectorized=True, rng=rng)
    return diff, float(result.confidence_interval.low), float(result.confidence_interval.high)


def ordering_test(df, suffix: str = "", permutations: int = 9999, resamples: int = 9999, seed: int = 0,
                  alpha: float = ALPHA, label: str = "", pairs: bool = True) -> OrderingResult | None:
    """Test the paper's ordering on a runs table (done, connected, not collapsed runs); None with fewer than 2 datasets.

    `suffix` picks the feature columns: "" for the features at the sweep's τ, TAU_STAR_SUFFIX for
    those at τ*. A run whose graph is disconnected at that τ has no features and is left out.
    `pairs=False` skips the adjacent datasets' bootstrap intervals (a test repeated at many epochs
    needs τ-b and p alone).
    """
    import pandas as pd

    done = usable_runs(df)
    if not len(done):
        return None
    accuracy = done.groupby("dataset")["test_accuracy"].mean().sort_values(ascending=False)
    if len(accuracy) < 2:
        return None
    datasets = [str(d) for d in accuracy.index]
    rank_of = {d: k for k, d in enumerate(datasets)}
    rng = np.random.default_rng(seed)
    tests: list[FeatureTest] = []
    runs = 0
    for feature, direction in ORDERING_FEATURES:
        column = feature + suffix
        if column not in done.columns:
            continue
        part = done[["dataset", column]].copy()
        part[column] = pd.to_numeric(part[column], errors="coerce")
        part = part.dropna()
        if part["dataset"].nunique() < 2:
            continue
        runs = max(runs, len(part))
        ranks = part["dataset"].map(rank_of).to_numpy(dtype=float)
        values = part[column].to_numpy(dtype=float)
        tau_b, p = permutation_p(ranks, values, direction, permutations, rng)
        groups = {d: part.loc[part["dataset"] == d, column].to_numpy(dtype=float) for d in datasets}
        present = [d for d in datasets if len(groups[d])]
        differences = []
        for easier, harder in zip(present, present[1:]) if pairs else ():
            diff, low, high = bootstrap_difference(groups[easier], groups[harder], resamples, rng)
            differences.append(PairDifference(easier, harder, diff, low, high))
        tests.append(FeatureTest(
            feature, direction, tau_b, p, p, "",
            means={d: float(groups[d].mean()) for d in present},
            stds={d: float(groups[d].std(ddof=1)) if len(groups[d]) > 1 else float("nan") for d in present},
            pairs=differences,
        ))
    for test, adjusted in zip(tests, holm([t.p for t in tests])):
        test.p_holm = adjusted
        test.verdict = "reproduced" if adjusted < alpha else "not reproduced"
    return OrderingResult(datasets, {d: float(a) for d, a in accuracy.items()}, runs, permutations, alpha,
                          label or ("τ*" if suffix == TAU_STAR_SUFFIX else "the sweep's τ"), tests,
                          collapsed_runs(df))


# --- capacity × difficulty: does the ordering grow with the network's size? ------------------------

@dataclass
class InteractionTest:
    """One feature: τ-b with difficulty at the smaller and the larger capacity, their difference Δ and its test."""

    feature: str
    direction: str
    tau_b_small: float
    tau_b_large: float
    delta: float  # τ-b at the larger capacity minus τ-b at the smaller
    low: float  # bootstrap 95 % interval of Δ
    high: float
    p: float  # one-sided: the difficulty effect grows, in the paper's direction, with capacity
    p_holm: float
    verdict: str  # "grows" (significant after Holm) or "does not grow"


def _ranked(part, column: str, datasets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(difficulty rank, feature) arrays of the runs in `part`, ranks by the given easiest-first order."""
    rank_of = {d: k for k, d in enumerate(datasets)}
    return part["dataset"].map(rank_of).to_numpy(dtype=float), part[column].to_numpy(dtype=float)


def interaction_test(small, large, suffix: str = "", permutations: int = 4999, resamples: int = 4999,
                     seed: int = 0, alpha: float = ALPHA) -> list[InteractionTest]:
    """Per feature, whether the difficulty effect grows from the `small` to the `large` capacity's runs table.

    Δ = τ-b(large) − τ-b(small), each τ-b over that capacity's runs with datasets ranked by that
    capacity's mean test accuracy (as `ordering_test` ranks them). The interval resamples runs
    within each dataset × capacity cell (scipy's `bootstrap`, percentile). The p-value permutes
    the capacity labels of the runs within each dataset, after each feature is replaced by its
    rank among its own capacity's runs: τ-b depends on those ranks alone, so a capacity's shift of
    every dataset alike (a main effect) changes neither Δ nor the permutations, and under the null
    hypothesis that a run's place within its capacity does not depend on the capacity, every
    relabelling is as likely as the observed one. p = (1 + #{permuted Δ at least as far in the
    paper's direction}) / (1 + permutations). A resample or relabelling in which one capacity's
    feature does not vary (a feature near its bound, such as nodes kept) has no ordering there: its
    τ-b counts as 0, not as undefined. Holm's correction across the features.
    """
    import pandas as pd
    from scipy.stats import bootstrap, rankdata

    cells = []
    for df in (small, large):
        done = usable_runs(df)
        order = done.groupby("dataset")["test_accuracy"].mean().sort_values(ascending=False)
        cells.append((done, [str(d) for d in order.index]))
    rng = np.random.default_rng(seed)
    tests: list[InteractionTest] = []
    for feature, direction in ORDERING_FEATURES:
        column = feature + suffix
        parts = []
        for done, datasets in cells:
            if column not in done.columns:
                break
            part = done[["dataset", column]].copy()
            part[column] = pd.to_numeric(part[column], errors="coerce")
            parts.append((part.dropna(), datasets))
        if len(parts) < 2 or any(p["dataset"].nunique() < 2 for p, _ in parts):
            continue
        sign = 1.0 if direction == "up" else -1.0
        (part_s, order_s), (part_l, order_l) = parts
        common = [d for d in order_s if d in order_l]  # datasets run at both capacities
        if len(common) < 2:
            continue
        order_s, order_l = common, [d for d in order_l if d in common]
        part_s, part_l = part_s[part_s["dataset"].isin(common)], part_l[part_l["dataset"].isin(common)]
        ranks_s, values_s = _ranked(part_s, column, order_s)
        ranks_l, values_l = _ranked(part_l, column, order_l)
        tau_s, tau_l = kendall_tau_b(ranks_s, values_s), kendall_tau_b(ranks_l, values_l)
        delta = tau_l - tau_s

        # Bootstrap: every dataset × capacity cell resampled on its own.
        samples = [part_s.loc[part_s["dataset"] == d, column].to_numpy(float) for d in common] + \
                  [part_l.loc[part_l["dataset"] == d, column].to_numpy(float) for d in common]
        k = len(common)

        cell_ranks = [np.concatenate([np.full(len(g), order.index(d), float) for g, d in zip(gs, common)])
                      for gs, order in ((samples[:k], order_s), (samples[k:], order_l))]

        def statistic(*groups, axis=-1):
            small_values, large_values = np.concatenate(groups[:k], axis), np.concatenate(groups[k:], axis)
            return (_zero_where_nan(tau_b_many(cell_ranks[1], np.moveaxis(large_values, axis, -1)))
                    - _zero_where_nan(tau_b_many(cell_ranks[0], np.moveaxis(small_values, axis, -1))))

        low = high = float("nan")
        if all(len(s) >= 2 for s in samples) and not math.isnan(delta):
            ci = bootstrap(samples, statistic, n_resamples=resamples, method="percentile", vectorized=True,
                           rng=rng).confidence_interval
            low, high = float(ci.low), float(ci.high)

        # Permutation within datasets, on within-capacity ranks. Written out because scipy's
        # permutation_test cannot hold the dataset strata fixed while it relabels capacities.
        # The relabellings are drawn one by one (the generator's draws in a fixed order), their
        # τ-b computed all at once.
        position = np.concatenate([rankdata(values_s) / len(values_s), rankdata(values_l) / len(values_l)])
        datasets_all = np.concatenate([part_s["dataset"].to_numpy(str), part_l["dataset"].to_numpy(str)])
        in_large = np.r_[np.zeros(len(values_s), bool), np.ones(len(values_l), bool)]
        rank_small = np.array([order_s.index(d) for d in datasets_all], float)
        rank_large = np.array([order_l.index(d) for d in datasets_all], float)
        strata = [np.flatnonzero(datasets_all == d) for d in np.unique(datasets_all)]
        relabelled = np.empty((permutations if not math.isnan(delta) else 0, len(in_large)), bool)
        for labels in relabelled:
            labels[:] = in_large
            for members in strata:
                labels[members] = rng.permutation(labels[members])
        # Every relabelling keeps each stratum's count of large runs: the same sizes in every row.
        large_at = np.nonzero(relabelled)[1].reshape(len(relabelled), len(values_l))
        small_at = np.nonzero(~relabelled)[1].reshape(len(relabelled), len(values_s))
        permuted = (_zero_where_nan(tau_b_many(rank_large[large_at], position[large_at]))
                    - _zero_where_nan(tau_b_many(rank_small[small_at], position[small_at])))
        as_far = int(np.count_nonzero(sign * permuted >= sign * delta - 1e-12))
        p = (1 + as_far) / (1 + permutations) if not math.isnan(delta) else 1.0
        tests.append(InteractionTest(feature, direction, tau_s, tau_l, delta, low, high, p, p, ""))
    for test, adjusted in zip(tests, holm([t.p for t in tests])):
        test.p_holm = adjusted
        test.verdict = "grows" if adjusted < alpha else "does not grow"
    return tests


# The picture of capacity against difficulty: the size of the learned graph, feature by feature.
CAPACITY_FEATURES = ("nodes", "mean_degree", "sparsity", "parameters")


def capacity_summary(df, by: str = "channels", suffix: str = TAU_STAR_SUFFIX) -> list[dict]:
    """Per capacity and dataset (easiest first): mean ± std of test accuracy and of each CAPACITY_FEATURES column."""
    import pandas as pd

    done = usable_runs(df)
    rows = []
    for value, group in done.groupby(by, sort=True):
        for dataset in group.groupby("dataset")["test_accuracy"].mean().sort_values(ascending=False).index:
            part = group[group["dataset"] == dataset]
            row = {by: int(value) if float(value).is_integer() else float(value), "dataset": str(dataset),
                   "runs": len(part), "accuracy": float(part["test_accuracy"].mean()),
                   "accuracy_std": float(part["test_accuracy"].std(ddof=1)) if len(part) > 1 else float("nan")}
            for feature in CAPACITY_FEATURES:
                values = pd.to_numeric(part.get(feature + suffix), errors="coerce").dropna()
                row[feature] = float(values.mean()) if len(values) else float("nan")
                row[feature + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            rows.append(row)
    return rows
