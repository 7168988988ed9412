"""The accuracy–resources front of a sweep, and whether the learned wiring beats graphs of its size.

Per dataset, every network a sweep's runs led to is a point (test accuracy against parameters and
against FLOPs per image), in five families: the complete DAG at λ = 0 (the ceiling), the learned
graph at τ* without fine-tuning, the learned graph retrained from scratch (RUN/retrain-<τ*>), its
random controls retrained (RUN/retrain-<τ*>-random<k>: random graphs on the same live nodes with
the same edges per stage) and its width control (RUN/retrain-<τ*>-width: the complete DAG at the C
nearest its parameters). `dagwire retrain RUN --threshold star [--control random|width]` makes
the retrained ones.

The question is paired, per dataset and λ: learned-retrained minus random-retrained (a run's
controls averaged, paired by run: the same nodes and edges per stage) and learned-retrained minus
the width control, each as the mean of the runs' differences with a bootstrap 95 % interval
(runs resampled) and a two-sided sign-flip permutation p (a difference's sign is exchangeable
when the learned graph is worth no more than its control; exact over all 2^n flips when that is
at most the resamples asked for), Holm's correction across every comparison. With n runs the
smallest two-sided sign-flip p is 2/2^n (0.0625 at 5 runs, 0.25 at 3), so a dataset-and-λ cell of
a few seeds cannot pass 0.05 by itself; where a sweep has several cells, each control is also
compared over all their runs pooled (`POOLED`), in the same Holm family. The collection
(`network_rows`, which reads run directories) is apart from the numbers (`family_points`,
`paired_comparisons`), so the numbers are tested on planted tables.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import click
import numpy as np

from .errors import DagwireError
from .machine import CPU_SEPARATOR

FAMILIES = ("complete", "thresholded", "learned", "random", "width")
FAMILY_LABELS = {"complete": "complete DAG at λ = 0 (ceiling)", "thresholded": "learned at τ*, no fine-tuning",
                 "learned": "learned, retrained", "random": "random controls, retrained",
                 "width": "width control, retrained"}
CONTROLS = ("random", "width")  # what the learned-retrained graph is compared against
POOLED = "all"  # the `dataset` of a comparison over every dataset and λ of the networks, paired by run
NETWORKS_CSV = "networks.csv"  # one row per network of the front, beside runs.csv
NETWORK_COLUMNS = ("dataset", "lam", "seed", "family", "control", "tau", "channels", "parameters", "flops_per_image",
                   "cpu_seconds_per_image", "mean_epoch_seconds", "test_accuracy", "cpu", "run_dir")
# Averaged per run and family, shown as mean ± std per point.
MEASURES = ("test_accuracy", "parameters", "flops_per_image", "cpu_seconds_per_image", "mean_epoch_seconds")


# --------------------------------------------------------------------------------------------
# Collecting: the networks of a sweep's runs


def _run_networks(run: Path, dataset: str, seed: int, lam: float, tau: float) -> list[dict[str, Any]]:
    """The networks one run led to: complete (at λ = 0), thresholded at τ, and its retrainings at τ that finished.

    A trained network's `mean_epoch_seconds` and `cpu` are its own training's (metrics.jsonl); the
    thresholded graph was not trained, so it has neither.
    """
    from . import counts, graphs
    from . import spec as specs
    from .prune import network_facts
    from .rundir import RunDir, epoch_cpus, mean_epoch_seconds
    from .train import load_run_config

    files = RunDir(run)
    config = load_run_config(run)
    learned, initial = specs.load(files.graph), specs.load(files.initial_graph)
    sizes = int(learned.meta.get("in_channels", 3)), int(learned.meta.get("num_classes", 10))
    base = {"dataset": dataset, "lam": lam, "seed": seed, "tau": tau, "control": None,
            "cpu_seconds_per_image": None, "mean_epoch_seconds": None, "cpu": None, "run_dir": str(run)}

    def sized(spec, channels: int) -> dict[str, Any]:
        return {"channels": channels, "parameters": counts.parameter_count(spec, channels, *sizes),
                "flops_per_image": counts.flops_per_image(spec, channels, 32, *sizes)}

    rows = []
    if lam == 0:
        rows.append({**base, "family": "complete", **sized(initial, config.channels),
                     "test_accuracy": float(learned.meta["test_accuracy"]), "mean_epoch_seconds": mean_epoch_seconds(run),
                     "cpu": epoch_cpus(run)})
    pruned = graphs.prune(learned, tau)
    at_tau = [r for r in files.threshold_rows() if abs(r["threshold"] - tau) <= 1e-12]
    if graphs.is_connected(pruned) and at_tau:
        rows.append({**base, "family": "thresholded", **sized(pruned, config.channels),
                     "test_accuracy": at_tau[0]["test_accuracy"]})
    retrained = [("learned", files.retrain(tau, False))]
    retrained += [("random", d) for d in sorted(run.glob(f"retrain-{tau:g}-random*"), key=lambda p: p.name)]
    retrained.append(("width", files.control(tau, "width")))
    for family, path in retrained:
        if not RunDir(path).trained():
            continue
        facts = network_facts(path, {"family": family, "tau": tau})
        measured = ("channels", "parameters", "flops_per_image", "cpu_seconds_per_image", "test_accuracy")
        rows.append({**base, **{k: facts.get(k) for k in measured}, "family": family,
                     "control": facts.get("control"), "mean_epoch_seconds": mean_epoch_seconds(path),
                     "cpu": epoch_cpus(path), "run_dir": str(path)})
    return rows


def network_rows(sweep_dirs: Sequence[str | os.PathLike], progress: bool = True):
    """Every network of the sweeps' done runs that did not collapse, one row each (NETWORK_COLUMNS), at each run's τ*.

    A retraining measured for the first time gets its network.json here (its CPU time per image
    measured once, `prune.network_facts`).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .stats import usable_runs
    from .tables import read_runs_table
    from .taustar import run_tau_star
    from .train import load_run_config

    rows = []
    for sweep in map(Path, sweep_dirs):
        if not sweep.is_dir():
            raise DagwireError(f"sweep directory not found: {sweep}")
        done = usable_runs(read_runs_table(sweep))
        for _, row in tqdm(list(done.iterrows()), desc=f"front {sweep.name}", disable=not progress, leave=False):
            run = sweep / str(row["run_dir"])
            lam = float(row["lam"]) if "lam" in row and pd.notna(row["lam"]) else float(load_run_config(run).lam)
            rows += _run_networks(run, str(row["dataset"]), int(row["seed"]), lam, run_tau_star(run))
    if not rows:
        raise DagwireError(f"no done runs in {', '.join(map(str, sweep_dirs))}: nothing to put on the front")
    return pd.DataFrame(rows, columns=list(NETWORK_COLUMNS))


def only_datasets(networks, datasets: Sequence[str]):
    """The rows of `networks` of those datasets; DagwireError naming the ones the sweeps have when one is missing."""
    have = list(dict.fromkeys(networks["dataset"]))
    missing = [d for d in datasets if d not in have]
    if missing or not datasets:
        raise DagwireError(f"--datasets {','.join(datasets)}: {', '.join(missing) or 'none given'} not in the sweeps, "
                           f"which have {', '.join(have)}")
    return networks[networks["dataset"].isin(datasets)].reset_index(drop=True)


def write_networks(sweep_dir: str | os.PathLike, networks) -> Path:
    """SWEEP/networks.csv: the rows of `networks` whose runs lie in that sweep, written atomically."""
    from .files import atomic_write_text

    sweep = Path(sweep_dir).resolve()
    mine = networks[[Path(p).resolve().is_relative_to(sweep) for p in networks["run_dir"]]]
    path = sweep / NETWORKS_CSV
    atomic_write_text(path, mine.to_csv(index=False))
    return path


# --------------------------------------------------------------------------------------------
# The numbers: points, the Pareto front, paired comparisons


def _per_run(networks):
    """One row per (dataset, λ, family, run): a run's random controls averaged into one network."""
    columns = list(MEASURES)
    frame = networks.copy()
    for column in columns:
        frame[column] = frame[column].astype(float)
    return frame.groupby(["dataset", "lam", "family", "seed"], as_index=False)[columns].mean()


def pareto_mask(cost: Sequence[float], accuracy: Sequence[float]) -> list[bool]:
    """Per point, whether no other point costs at most as much and is at least as accurate, one of them strictly."""
    cost, accuracy = np.asarray(cost, float), np.asarray(accuracy, float)
    return [not any((cost[j] <= cost[i] and accuracy[j] >= accuracy[i]) and (cost[j] < cost[i] or accuracy[j] > accuracy[i])
                    for j in range(len(cost)) if j != i) for i in range(len(cost))]


def family_points(networks) -> list[dict[str, Any]]:
    """Per dataset, λ and family: runs, mean ± std over runs of each of MEASURES, the CPUs trained on; the front marked.

    Seconds an epoch and CPU time per image depend on the CPU (`cpu`: every kind the family's
    networks trained on) and on what ran beside them: compare them within one kind.

    `front_parameters` / `front_flops`: the point is on its dataset's Pareto front of accuracy
    against parameters / FLOPs per image, over every family and λ.
    """
    per_run = _per_run(networks)
    points = []
    for (dataset, lam, family), group in per_run.groupby(["dataset", "lam", "family"], sort=True):
        mine = networks[(networks["dataset"] == dataset) & (networks["lam"] == lam) & (networks["family"] == family)]
        cpus = dict.fromkeys(c for cell in mine["cpu"].dropna() for c in str(cell).split(CPU_SEPARATOR) if c)
        point = {"dataset": str(dataset), "lam": float(lam), "family": str(family), "label": FAMILY_LABELS[family],
                 "runs": int(len(group)), "cpu": CPU_SEPARATOR.join(sorted(cpus))}
        for column in MEASURES:
            name = "accuracy" if column == "test_accuracy" else column
            values = group[column].dropna()
            point[name] = float(values.mean()) if len(values) else math.nan
            point[name + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        points.append(point)
    points.sort(key=lambda p: (p["dataset"], FAMILIES.index(p["family"]), p["lam"]))
    for dataset in dict.fromkeys(p["dataset"] for p in points):
        mine = [p for p in points if p["dataset"] == dataset]
        accuracy = [p["accuracy"] for p in mine]
        for cost, key in (("parameters", "front_parameters"), ("flops_per_image", "front_flops")):
            for point, on in zip(mine, pareto_mask([p[cost] for p in mine], accuracy)):
                point[key] = bool(on)
    return points


@dataclass
class Comparison:
    """Learned-retrained minus one control, per dataset and λ: mean paired difference, 95 % interval, p and Holm's p."""

    dataset: str
    lam: float
    control: str  # "random" or "width"
    runs: int
    difference: float
    low: float  # NaN with fewer than 2 runs: no interval
    high: float
    p: float
    p_holm: float

    def text(self) -> str:
        """'learned − random at λ = 0.005: +0.012 [+0.004, +0.020] over 5 runs, p 0.062, Holm 0.12'."""
        interval = "[fewer than 2 runs]" if math.isnan(self.low) else f"[{self.low:+.4f}, {self.high:+.4f}]"
        where = "over every dataset and λ" if self.dataset == POOLED else f"at λ = {self.lam:g}"
        return (f"learned − {self.control} {where}: {self.difference:+.4f} {interval} over {self.runs} "
                f"run{'s' if self.runs != 1 else ''}, p {self.p:.3g}, Holm {self.p_holm:.3g}")


def mean_interval(values: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of paired differences (runs resampled); NaNs below 2 values."""
    from scipy.stats import bootstrap

    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):  # every resample has the same mean (scipy's interval would be NaN)
        return float(values[0]), float(values[0])
    result = bootstrap((values,), np.mean, n_resamples=resamples, method="percentile", vectorized=True, rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def sign_flip_p(values: np.ndarray, permutations: int, rng: np.random.Generator) -> float:
    """Two-sided p of a mean paired difference against random sign flips (exact when 2^n <= permutations)."""
    from scipy.stats import permutation_test

    # One run's two flips, +d and −d, are both as far from 0 as d: p = 1 exactly (scipy wants two or more).
    if len(values) < 2 or not np.any(values):
        return 1.0
    result = permutation_test((values,), np.mean, permutation_type="samples", vectorized=True,
                              n_resamples=permutations, alternative="two-sided", rng=rng)
    return float(min(1.0, result.pvalue))


def paired_comparisons(networks, resamples: int = 9999, permutations: int = 9999, seed: int = 0) -> list[Comparison]:
    """Learned-retrained minus random-retrained and minus the width control, per dataset and λ, then pooled over
    them (`POOLED`, where a control has pairs in more than one); Holm across all."""
    from .stats import holm

    per_run = _per_run(networks)
    rng = np.random.default_rng(seed)

    def compare(dataset: str, lam: float, control: str, values: np.ndarray) -> Comparison:
        low, high = mean_interval(values, resamples, rng)
        p = sign_flip_p(values, permutations, rng)
        return Comparison(dataset, lam, control, len(values), float(values.mean()), low, high, p, p)

    comparisons, cells = [], {control: [] for control in CONTROLS}
    for (dataset, lam), group in per_run.groupby(["dataset", "lam"], sort=True):
        accuracy = group.pivot(index="seed", columns="family", values="test_accuracy")
        for control in CONTROLS:
            if "learned" not in accuracy or control not in accuracy:
                continue
            pairs = accuracy[["learned", control]].dropna()
            if not len(pairs):
                continue
            values = (pairs["learned"] - pairs[control]).to_numpy(float)
            cells[control].append(values)
            comparisons.append(compare(str(dataset), float(lam), control, values))
    for control in CONTROLS:
        if len(cells[control]) > 1:
            comparisons.append(compare(POOLED, math.nan, control, np.concatenate(cells[control])))
    for comparison, adjusted in zip(comparisons, holm([c.p for c in comparisons])):
        comparison.p_holm = adjusted
    return comparisons


def front_result(networks, resamples: int = 9999, permutations: int = 9999, seed: int = 0) -> dict[str, Any]:
    """Per dataset: its families' points (front marked) and its paired comparisons; the pooled comparisons (Holm
    across all of them)."""
    points = family_points(networks)
    comparisons = paired_comparisons(networks, resamples, permutations, seed)
    return {"comparisons_in_holm": len(comparisons),
            "datasets": [{"dataset": d, "points": [p for p in points if p["dataset"] == d],
                          "comparisons": [asdict(c) for c in comparisons if c.dataset == d]}
                         for d in dict.fromkeys(p["dataset"] for p in points)],
            "pooled": [asdict(c) for c in comparisons if c.dataset == POOLED]}


# --------------------------------------------------------------------------------------------
# Text, the report's tables, the command


def _mean_std(mean: float, std: float, fmt: str) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:{fmt}} ± {std:{fmt}}" if math.isfinite(std) else f"{mean:{fmt}}"


def front_lines(result: dict[str, Any]) -> list[str]:
    """The front as text: per dataset a line per point, then its comparisons."""
    lines = []
    for block in result["datasets"]:
        lines.append(block["dataset"])
        lines.append(f"  {'family':<32} {'λ':>7} {'runs':>4}  {'test accuracy':<17} {'parameters':<19} "
                     f"{'FLOPs per image':<23} {'s an epoch':<13} front")
        for p in block["points"]:
            front = ", ".join(name for name, key in (("parameters", "front_parameters"), ("FLOPs", "front_flops"))
                              if p[key])
            lines.append(f"  {p['label']:<32} {p['lam']:>7g} {p['runs']:>4}  "
                         f"{_mean_std(p['accuracy'], p['accuracy_std'], '.4f'):<17} "
                         f"{_mean_std(p['parameters'], p['parameters_std'], ',.0f'):<19} "
                         f"{_mean_std(p['flops_per_image'], p['flops_per_image_std'], '.3g'):<23} "
                         f"{_mean_std(p['mean_epoch_seconds'], p['mean_epoch_seconds_std'], '.1f'):<13} {front or '–'}")
        for c in block["comparisons"]:
            lines.append("  " + Comparison(**c).text())
    if result["pooled"]:
        lines.append("every dataset and λ, paired by run")
        lines += ["  " + Comparison(**c).text() for c in result["pooled"]]
    lines.append(f"Holm's correction across {result['comparisons_in_holm']} comparison(s); intervals: bootstrap 95 %, "
                 "runs resampled; p: two-sided sign-flip permutation (n runs give no p below 2/2^n)")
    return lines


def report_front_section(sweep_dir: str | os.PathLike, figure_path: str | os.PathLike | None = None) -> list:
    """The report's front section for a sweep that has retrained controls: its tables (and the figure, drawn to
    `figure_path`); [] for a sweep without any. `report.py` places it after the figures."""
    from .render import Table

    networks = network_rows([sweep_dir], progress=False)
    if not networks["family"].isin(CONTROLS).any():
        return []
    result = front_result(networks)

    def comparison_row(c: dict[str, Any]) -> list[str]:
        return [f"learned − {c['control']}", "all" if c["dataset"] == POOLED else f"{c['lam']:g}", str(c["runs"]),
                f"{c['difference']:+.4f}", "–" if math.isnan(c["low"]) else f"[{c['low']:+.4f}, {c['high']:+.4f}]",
                f"p {c['p']:.3g}", f"Holm {c['p_holm']:.3g}"]

    columns = ["family", "λ", "runs", "test accuracy", "parameters", "FLOPs per image", "on the front"]
    note = ("Mean ± std over runs. Comparisons: mean paired difference of test accuracy, bootstrap 95 % interval, "
            "two-sided sign-flip p (n runs give none below 2/2^n), Holm across all comparisons.")
    tables = []
    for block in result["datasets"]:
        rows = [[p["label"], f"{p['lam']:g}", str(p["runs"]), _mean_std(p["accuracy"], p["accuracy_std"], ".4f"),
                 _mean_std(p["parameters"], p["parameters_std"], ",.0f"),
                 _mean_std(p["flops_per_image"], p["flops_per_image_std"], ".3g"),
                 "yes" if p["front_parameters"] else ""] for p in block["points"]]
        rows += [comparison_row(c) for c in block["comparisons"]]
        tables.append(Table(f"{block['dataset']}: accuracy against resources, and the learned graph against its controls",
                            columns, rows, note=note, text_columns=2))
    if result["pooled"]:
        tables.append(Table("Every dataset and λ: the learned graph against its controls, paired by run", columns,
                            [comparison_row(c) for c in result["pooled"]], note=note, text_columns=2))
    if figure_path is not None:
        from .draw import plot_front

        plot_front(result, figure_path)
    return tables


@click.command("front")
@click.argument("sweeps", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="SWEEP...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw the front to FILE.png (accuracy against parameters "
                                                              "and against FLOPs per image, per dataset).")
@click.option("--datasets", help="Comma-separated datasets to show and compare (default: every dataset of the sweeps).")
@click.option("--permutations", type=int, default=9999, show_default=True, help="Sign flips (exact below 2^n).")
@click.option("--resamples", type=int, default=9999, show_default=True, help="Bootstrap resamples.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def front_command(sweeps, as_json, plot, datasets, permutations, resamples, quiet) -> None:
    """The accuracy–resources front of SWEEP... per dataset, and whether the learned graph beats its controls.

    Writes SWEEP/networks.csv (one row per network: family, λ, run, parameters, FLOPs and CPU time
    per image, test accuracy) for each sweep.
    """
    from .sweep.worker import _clean  # NaN as null: strict JSON has none

    if plot and Path(plot).suffix.lower() != ".png":
        raise DagwireError(f"--plot {plot}: the file must end in .png")
    if min(permutations, resamples) < 1:
        raise DagwireError("--permutations and --resamples must be positive")
    networks = network_rows(sweeps, progress=not quiet)
    for sweep in sweeps:
        write_networks(sweep, networks)
    if datasets:
        networks = only_datasets(networks, [d.strip() for d in datasets.split(",") if d.strip()])
    result = front_result(networks, resamples, permutations)
    if plot:
        from .draw import plot_front

        plot_front(result, plot)
    if as_json:
        click.echo(json.dumps(_clean(result)))
    else:
        for line in front_lines(result):
            click.echo(line)
        if plot:
            click.echo(f"wrote {plot}")

