"""`dagwire ordering`: the test of the paper's claim on one runs table, or on several pooled by capacity.

One table: does a harder task learn a denser, deeper graph (`stats.ordering_test`)? With `--per
COLUMN` that test within each value of a column of the one table (`--per cpu`: one verdict per
machine kind, for a study that spans kinds; a run that moved between kinds belongs to none of them
and is named, not tested). Several with
`--by COLUMN` (any runs-table column whose value differs between the tables: `channels` for
capacity, `steps` for the schedule's length): that test at each of the column's two values, each
at its own τ*, then per feature whether the difficulty effect grows from the smaller value to the
larger (`stats.interaction_test`), and optionally the picture of graph size against difficulty,
one line per value (`draw.plot_capacity`).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from .errors import DagwireError
from .stats import TAU_STAR_SUFFIX, OrderingResult


@click.command("ordering")
@click.argument("runs_files", metavar="RUNS.csv...", nargs=-1, required=True)
@click.option("--by", metavar="COLUMN",
              help="Pool several runs tables by a column whose value differs between them (channels, steps, ...) "
                   "and test whether the ordering grows with it.")
@click.option("--per", metavar="COLUMN",
              help="Also give the verdict within each value of this column of the one table (cpu: per machine "
                   "kind; a run that moved between CPUs is left out of every kind and named).")
@click.option("--tau-column", type=click.Choice(["auto", "tau_star", "threshold"]), default="auto", show_default=True,
              help="Features at τ* (tau_star), at the sweep's τ (threshold), or τ* when every table has it (auto).")
@click.option("--permutations", type=int, default=9999, show_default=True, help="Permutations of the labels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of permutations and bootstrap.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False),
              help="With --by: draw graph size against difficulty, one line per capacity, to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ordering_command(runs_files, by, per, tau_column, permutations, seed, plot_file, as_json) -> None:
    """Test the paper's claim on runs tables: does a harder task learn a denser, deeper graph?

    Per feature: Kendall's τ-b between difficulty rank (by mean test accuracy) and the feature,
    a one-sided permutation p in the paper's direction, Holm-adjusted across features; per pair
    of adjacent datasets the difference of means with a bootstrap 95 % interval. With --by
    COLUMN (channels, steps, ...): that at each of its two values, and per feature Δ = τ-b at the
    larger value minus at the smaller, with a bootstrap interval and a one-sided permutation p for
    growth, Holm-adjusted. With --per COLUMN (cpu, ...): the one table's verdict, then the same test
    within each value of the column.
    """
    import pandas as pd

    from .stats import capacity_summary, interaction_test, ordering_test
    from .tables import read_runs_table

    if permutations < 1:
        raise DagwireError(f"--permutations must be at least 1, got {permutations}")
    if len(runs_files) > 1 and by is None:
        raise DagwireError(f"{len(runs_files)} runs tables given: pool them with --by COLUMN (channels, steps, ...), "
                           "or give one")
    if per is not None and by is not None:
        raise DagwireError("--per splits one table and --by pools several: give one of them")
    if per is not None and len(runs_files) > 1:
        raise DagwireError("--per splits one runs table: give one")
    if plot_file and by is None:
        raise DagwireError("--plot draws the values of --by against each other: it needs --by COLUMN")
    tables = [read_runs_table(path) for path in runs_files]
    has_star = all("tau_star" in df.columns and df["tau_star"].notna().any() for df in tables)
    if tau_column == "tau_star" and not has_star:
        raise DagwireError("a runs table has no τ* columns (its sweep's runs held out no data: --holdout)")
    suffix = TAU_STAR_SUFFIX if tau_column == "tau_star" or (tau_column == "auto" and has_star) else ""

    def label(df) -> str:
        return f"τ* = {float(df['tau_star'].dropna().iloc[0]):g}" if suffix else "the sweep's τ"

    if by is None:
        result = ordering_test(tables[0], suffix, permutations, permutations, seed, label=label(tables[0]))
        if result is None:
            raise DagwireError(f"{runs_files[0]}: the test needs finished runs of at least two datasets")
        if per is None:
            click.echo(json.dumps(result.to_dict(), allow_nan=True) if as_json else "\n".join(ordering_lines(result)))
            return
        groups, moved = split_by(tables[0], per) if per in tables[0].columns else ({}, [])
        if not groups and not moved:
            raise DagwireError(f"{runs_files[0]} has no {per} column to split by (or no run has a value in it)")
        parts = {value: ordering_test(part, suffix, permutations, permutations, seed, label=label(tables[0]))
                 for value, part in groups.items()}
        if as_json:
            click.echo(json.dumps({**result.to_dict(), "per": per, "moved": moved,
                                   "groups": [{per: value, "runs": int(len(groups[value])),
                                               "result": None if r is None else r.to_dict()}
                                              for value, r in parts.items()]}, allow_nan=True))
            return
        click.echo("== all runs")
        click.echo("\n".join(ordering_lines(result)))
        for value, part_result in parts.items():
            click.echo(f"== {per} = {value} ({len(groups[value])} runs)")
            click.echo("\n".join(ordering_lines(part_result)) if part_result is not None
                       else "no test: it needs finished runs of at least two datasets")
        if moved:
            click.echo(f"left out of every {per} group, moved between CPUs while training: {', '.join(moved)}")
        return

    for path, df in zip(runs_files, tables):
        if by not in df.columns or df[by].isna().all():
            raise DagwireError(f"{path} has no {by} column (rebuild it with `dagwire sweep --out DIR`)")
    pooled = pd.concat(tables, ignore_index=True)
    pooled = pooled[pooled["status"].astype(str).eq("done")]
    values = sorted(column_value(v) for v in pooled[by].dropna().unique())
    if len(values) != 2:
        raise DagwireError(f"--by {by} compares two values; the tables hold {len(values)} "
                           f"({', '.join(map(str, values)) or 'none'})")
    keys = pooled[by].map(lambda v: None if pd.isna(v) else column_value(v))
    parts = [pooled[keys == v] for v in values]
    results = []
    for value, part in zip(values, parts):
        result = ordering_test(part, suffix, permutations, permutations, seed, label=label(part))
        if result is None:
            raise DagwireError(f"{by} = {value}: the test needs finished runs of at least two datasets")
        results.append(result)
    interaction = interaction_test(parts[0], parts[1], suffix, permutations, permutations, seed)
    if plot_file:
        from .draw import plot_capacity

        plot_capacity(capacity_summary(pooled, by, suffix), plot_file, by)
    if as_json:
        click.echo(json.dumps({"by": by, "capacities": [{by: v, **r.to_dict()} for v, r in zip(values, results)],
                               "interaction": [asdict(t) for t in interaction]}, allow_nan=True))
        return
    for value, result in zip(values, results):
        click.echo(f"== {by} = {value}")
        click.echo("\n".join(ordering_lines(result)))
    click.echo(f"== does the difficulty effect grow from {by} = {values[0]} to {values[1]}? "
               f"Δ = τ-b({values[1]}) − τ-b({values[0]}); Holm across {len(interaction)} features")
    click.echo(f"{'feature':<19}{'paper':>7}{'τ-b ' + str(values[0]):>9}{'τ-b ' + str(values[1]):>9}{'Δ':>8}"
               f"{'95 % interval':>19}{'p':>8}{'p Holm':>8}  verdict")
    for t in interaction:
        click.echo(f"{t.feature:<19}{'higher' if t.direction == 'up' else 'lower':>7}{t.tau_b_small:9.3f}"
                   f"{t.tau_b_large:9.3f}{t.delta:+8.3f}{f'[{t.low:+.3f}, {t.high:+.3f}]':>19}{t.p:8.4f}"
                   f"{t.p_holm:8.4f}  {t.verdict}")
    if plot_file:
        click.echo(f"wrote {plot_file}")


def split_by(df, column: str) -> tuple[dict, list[str]]:
    """The table's rows per value of `column` (first-seen order), and "dataset seed" of the runs that moved.

    A run with no value (a pending run has no `cpu`) is in no group. For `cpu`, a run that trained
    on several CPUs (CPU_SEPARATOR-joined: it resumed on another machine) belongs to no one kind,
    so it is in no group either, and is returned by name.
    """
    import pandas as pd

    from .machine import CPU_SEPARATOR

    groups: dict = {}
    moved: list[str] = []
    for index, value in df[column].items():
        text = "" if pd.isna(value) else str(value)
        if not text:
            continue
        if column == "cpu" and CPU_SEPARATOR in text:
            moved.append(f"{df.at[index, 'dataset']} {df.at[index, 'seed']}")
            continue
        groups.setdefault(column_value(value), []).append(index)
    return {value: df.loc[rows] for value, rows in groups.items()}, moved


def column_value(value):
    """A runs-table cell as --by compares it: an integer where it is one (4.0 → 4), else a number, else text."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(number) if number.is_integer() else number


def ordering_lines(result: OrderingResult) -> list[str]:
    """The verdict table of one ordering test as text lines."""
    lines = ["datasets, easiest first: " + ", ".join(f"{d} (acc {100 * result.accuracy[d]:.1f} %)"
                                                    for d in result.datasets),
             f"features at {result.columns}; {result.runs} runs; {result.permutations} permutations; "
             f"Holm across {len(result.tests)} features, α = {result.alpha}",
             f"{'feature':<19}{'paper':>7}{'τ-b':>8}{'p':>9}{'p Holm':>9}  verdict"]
    for t in result.tests:
        lines.append(f"{t.feature:<19}{'higher' if t.direction == 'up' else 'lower':>7}{t.tau_b:8.3f}{t.p:9.4f}"
                     f"{t.p_holm:9.4f}  {t.verdict}")
        lines.extend(f"    {pair.text()}" for pair in t.pairs)
    if result.collapsed:
        lines.append(f"left out, collapsed in their first lr phase: {', '.join(result.collapsed)}")
    return lines
