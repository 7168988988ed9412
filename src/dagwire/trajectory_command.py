"""`dagwire trajectory`: a run's or a sweep's graph after every epoch, when the ordering appears, and the length test.

The numbers are trajectory.py's; the pictures draw.py's.
"""

from __future__ import annotations

import json
import math

import click

from .config import DEFAULT_TAU
from .errors import DagwireError


def parse_steps(text: str) -> list[int]:
    """Steps from "800,6400,8000": at least two, positive, increasing."""
    try:
        steps = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise DagwireError(f"--length-test {text!r}: expected increasing step counts like 800,6400,8000") from None
    if len(steps) < 2 or any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] <= 0:
        raise DagwireError(f"--length-test {text!r}: expected at least two increasing step counts like 800,6400,8000")
    return steps


@click.command("trajectory")
@click.argument("target", metavar="RUN|SWEEP", type=click.Path(exists=True, file_okay=False))
@click.option("--tau", type=float, default=DEFAULT_TAU, show_default=True, help="Threshold τ of the graph at each epoch.")
@click.option("--every", type=int, default=1, show_default=True, help="Measure every k-th epoch (and the last).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), help="Write the trajectory table (one row per run and epoch).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="Draw edges, nodes, sparsity and mean degree against the step.")
@click.option("--ordering-plot", "ordering_file", type=click.Path(dir_okay=False),
              help="Draw each feature's τ-b with difficulty against the step (a sweep of two or more datasets).")
@click.option("--length-test", "length_steps", metavar="STEPS",
              help="Steps like 800,6400,8000: does the difficulty effect grow from the first to each later one?")
@click.option("--permutations", type=int, default=1999, show_default=True,
              help="Permutations of the ordering test at each step (the length test uses 9,999).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of permutations and bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def trajectory_command(target, tau, every, csv_file, plot_file, ordering_file, length_steps, permutations, seed,
                       as_json, quiet) -> None:
    """The graph at τ (dead paths removed) after every epoch, from edge_history.npy: edges, nodes and the
    features of Tables 1-2 but the layout's two (pca_elongation, q1d, too slow to repeat per epoch).

    For a sweep: per dataset, mean ± std over seeds against the SGD step; the ordering test
    (Kendall τ-b with difficulty, permutation p, Holm, as `dagwire ordering`) at every measured
    step, difficulty ranked by final test accuracy; and with --length-test, whether the
    difficulty effect grows between steps of the same runs.
    """
    from .files import atomic_write_text
    from .trajectory import length_test, load_trajectories, ordering_over_time, schedule_of, trajectory_summary

    if not (tau >= 0 and math.isfinite(tau)):
        raise DagwireError(f"--tau must be a number >= 0, got {tau}")
    if permutations < 1:
        raise DagwireError(f"--permutations must be at least 1, got {permutations}")
    steps = parse_steps(length_steps) if length_steps else []
    schedule = schedule_of(target)
    for step in steps:
        schedule.epoch_ending_at(step)  # a step where no epoch ends is refused before the work
    table = load_trajectories(target, tau, every, progress=not quiet)
    summary = trajectory_summary(table)
    datasets = table["dataset"].nunique()
    if (ordering_file or steps) and datasets < 2:
        raise DagwireError(f"{target}: the ordering needs finished runs of at least two datasets")
    ordering = ordering_over_time(table, permutations, seed, progress=not quiet) if datasets >= 2 else []
    tests = [t for late in steps[1:] for t in length_test(table, steps[0], late, seed=seed)]
    if csv_file:
        atomic_write_text(csv_file, table.to_csv(index=False))
    if plot_file:
        from .draw import plot_feature_trajectories

        plot_feature_trajectories(summary, schedule.milestones, plot_file, tau)
    if ordering_file:
        from .draw import plot_ordering_over_time

        plot_ordering_over_time(ordering, schedule.milestones, ordering_file, tau)
    if as_json:
        click.echo(json.dumps({"tau": tau, "steps": schedule.steps, "milestones": list(schedule.milestones),
                               "summary": summary.to_dict("records"), "ordering": ordering,
                               "length_test": [t.to_dict() for t in tests]}, allow_nan=True))
        return
    # The first and last measured steps (a run still training has not reached the end), each lr drop, the end.
    shown = sorted({table["step"].min(), table["step"].max(), *schedule.milestones, schedule.steps, *steps}
                   & set(table["step"]))
    click.echo("\n".join(trajectory_lines(summary, ordering, tests, shown, tau, schedule)))
    for name in (csv_file, plot_file, ordering_file):
        if name:
            click.echo(f"wrote {name}")


def trajectory_lines(summary, ordering: list[dict], tests: list, shown: list[int], tau: float, schedule) -> list[str]:
    """The text report: edges and nodes per dataset at the shown steps, τ-b per feature there, the length test."""
    runs = int(summary.groupby("dataset")["runs"].max().sum())
    lines = [f"the graph at τ = {tau:g} after dead-path removal; {runs} run{'s' if runs != 1 else ''}; "
             f"{schedule.steps} steps, lr drops at "
             f"{', '.join(map(str, schedule.milestones)) or 'none'}",
             f"{'step':<26}" + "".join(f"{s:>15}" for s in shown)]
    for dataset, part in summary.groupby("dataset", sort=False):
        for feature in ("edges", "nodes"):
            at = part.set_index("step")
            cells = [_mean_std(at.loc[s, feature], at.loc[s, feature + "_std"]) if s in at.index else "" for s in shown]
            lines.append(f"{dataset + ' ' + feature:<26}" + "".join(f"{c:>15}" for c in cells))
    if ordering:
        lines.append("Kendall τ-b with difficulty (easiest first by final test accuracy; * Holm p < 0.05)")
        for feature in dict.fromkeys(r["feature"] for r in ordering):
            mine = {r["step"]: r for r in ordering if r["feature"] == feature}
            cells = [f"{mine[s]['tau_b']:+.3f}{'*' if mine[s]['p_holm'] < 0.05 else ' '}" if s in mine else ""
                     for s in shown]
            lines.append(f"{feature:<26}" + "".join(f"{c:>15}" for c in cells))
    for late in dict.fromkeys(t.late_step for t in tests):
        mine = [t for t in tests if t.late_step == late]
        lines.append(f"does the difficulty effect grow from step {mine[0].early_step} to {late}? "
                     f"Δ = τ-b({late}) − τ-b({mine[0].early_step}), same runs; Holm across {len(mine)} features")
        lines.append(f"{'feature':<19}{'paper':>7}{'τ-b early':>10}{'τ-b late':>10}{'Δ':>8}{'95 % interval':>19}"
                     f"{'p':>8}{'p Holm':>8}  verdict")
        for t in mine:
            lines.append(f"{t.feature:<19}{'higher' if t.direction == 'up' else 'lower':>7}{t.tau_b_early:10.3f}"
                         f"{t.tau_b_late:10.3f}{t.delta:+8.3f}{f'[{t.low:+.3f}, {t.high:+.3f}]':>19}{t.p:8.4f}"
                         f"{t.p_holm:8.4f}  {t.verdict}")
    return lines


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"
