"""The sweep report (SPEC §9): its sections (report_sections.py: Tables 1-5 beside the paper's numbers,
and every figure) assembled into pages, and the `dagwire report` command.

`dagwire report SWEEP_DIR [--local LOCAL_SWEEP_DIR]` reads SWEEP_DIR/runs.csv (one row per
(dataset, seed), written by `dagwire sweep`) and the run directories it names, and writes
    SWEEP_DIR/report.html    one self-contained page: inline CSS, images as base64 data URIs, no JS
    SWEEP_DIR/report.md      the same tables in Markdown, images as files under report_files/
    SWEEP_DIR/report_files/  the figures as PNG
every file atomically. A page opens with the answer (one sentence per test, the picture of the
claim), then the tests' tables, Tables 1-5 and the figures, the runs left out, and sweep.yaml folded
away. Module-level imports stay light: cli.py imports this module at start-up.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

import click

from .config import DEFAULT_TAU
from .errors import DagwireError
from .render import CSS, Table, html_table, md_table
from .report_sections import (FILES_DIR, Figure, answer_lines, draw_figures, interaction_table, local_label,
                              pairs_table, start_embedding, table1, table2, table3, table4, table5,
                              verdict_table)
from .stats import TAU_STAR_SUFFIX, OrderingResult
from .sweep.plan import SWEEP_FILE


# --------------------------------------------------------------------------------------------
# Rendering


def _summary(df, sweep: Path, local_df, local_dir) -> tuple[str, str | None]:
    """The one-line run summary, and the sweep's config text when SWEEP/sweep.yaml exists."""
    from .compare import dataset_order

    done, failed = int(df["done"].sum()), int(df["status"].eq("failed").sum())
    pending = len(df) - done - failed  # a sweep still running, or stopped before these runs
    disconnected = int((df["done"] & ~df["connected"]).sum())
    per = ", ".join(f"{d} ({int((df['dataset'] == d).sum())})" for d in dataset_order(df["dataset"]))
    seeds = sorted({int(s) for s in df["seed"] if not (isinstance(s, float) and math.isnan(s))})
    seed_text = (f"{seeds[0]}–{seeds[-1]}" if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2
                 else ", ".join(map(str, seeds)))
    line = (f"{len(df)} runs: {done} done ({disconnected} disconnected at the threshold), {failed} failed"
            f"{f', {pending} not finished' if pending else ''}; "
            f"datasets: {per}; seeds: {seed_text}.")
    if local_df is not None:
        line += (f" Local-graph sweep {local_dir}: {int(local_df['done'].sum())} done, "
                 f"{int((~local_df['done']).sum())} failed.")
    config = sweep / SWEEP_FILE
    text = None
    if config.is_file():
        try:
            text = config.read_text()
        except (OSError, UnicodeDecodeError):
            text = None
    return line, text


def _seed_text(seed) -> str:
    try:
        return str(int(seed))
    except (TypeError, ValueError):
        return str(seed)


def _failed_table(df) -> Table | None:
    failed = df[df["status"].eq("failed")]
    if not len(failed):
        return None
    rows = [[str(r["dataset"]), _seed_text(r["seed"]), str(r["status"]), str(r["error"])[:600]]
            for _, r in failed.iterrows()]
    return Table("Failed runs", ["dataset", "seed", "status", "error"], rows, text_columns=4)


def _collapsed_table(df) -> Table | None:
    """The done runs that collapsed in their first lr phase: listed, and left out of the ordering tests."""
    import pandas as pd

    from .stats import collapsed_mask

    collapsed = df[collapsed_mask(df)]
    if not len(collapsed):
        return None

    rows = [[str(r["dataset"]), _seed_text(r["seed"]), f"{r['test_accuracy']:.3f}",
             f"{r['train_eval_accuracy']:.3f}" if pd.notna(r.get("train_eval_accuracy")) else "–"]
            for _, r in collapsed.iterrows()]
    return Table("Collapsed runs (left out of the ordering tests)", ["dataset", "seed", "test accuracy",
                 "training accuracy (no augmentation)"], rows,
                 "Still at chance at the end of the first lr phase while the L1 term had shrunk most edges "
                 "(median edge below 0.05): the graph says nothing of the task.", text_columns=2)


def _tau_label(df, suffix: str, tau: float) -> str:
    """How a test names the τ of its features: τ* of the runs table, or the sweep's τ."""
    return f"τ* = {float(df['tau_star'].dropna().iloc[0]):g}" if suffix else f"τ = {tau:g}"


def _has_tau_star(df) -> bool:
    return "tau_star" in df.columns and df["tau_star"].notna().any()


@dataclass
class _Capacity:
    """With --capacity: the other capacity's test and the pooled one, as tables, a figure, sentences and the claim's lines."""

    tables: list[Table]
    figures: list[Figure]
    lines: list[str]
    claim: list[tuple[str, OrderingResult | None]]


def _capacity_section(df, other, sweep: Path, tau: float = DEFAULT_TAU,
                      own: OrderingResult | None = None) -> _Capacity:
    """The other capacity's ordering test, the interaction test of the two pooled, and the capacity figure.

    `own` is this sweep's `OrderingResult` at the features the capacities share, when already computed.
    """
    import pandas as pd

    from .draw import plot_capacity
    from .stats import capacity_summary, interaction_test, ordering_test

    for frame, where in ((df, sweep), (other, "--capacity")):
        if "channels" not in frame.columns or frame["channels"].isna().all():
            raise DagwireError(f"{where}: its runs table has no channels column (rebuild it with "
                               "`dagwire sweep --out DIR`)")
    small, large = sorted((df, other), key=lambda f: int(f["channels"].dropna().iloc[0]))
    c_small, c_large = (int(f["channels"].dropna().iloc[0]) for f in (small, large))
    if c_small == c_large:
        raise DagwireError("--capacity: both sweeps ran at the same C; give a sweep of another capacity")
    suffix = TAU_STAR_SUFFIX if all(_has_tau_star(f) for f in (small, large)) else ""
    tests = interaction_test(small, large, suffix)
    results = {}
    for frame in (small, large):
        mine = frame is df and own is not None
        results[frame is df] = own if mine else ordering_test(frame, suffix, label=_tau_label(frame, suffix, tau))
    other_c = c_small if small is other else c_large
    where = f"C = {other_c}, "
    tables = [t for t in (verdict_table(results[False], where), pairs_table(results[False], where),
                          interaction_table(small, large, suffix, tests)) if t]
    name = "fig_capacity.png"
    plot_capacity(capacity_summary(pd.concat([small, large], ignore_index=True), "channels", suffix),
                  sweep / FILES_DIR / name)
    figure = Figure("Graph size against difficulty, per capacity",
                    f"Mean ± std over seeds of each dataset at {'τ*' if suffix else 'the sweep τ'}, one line per C; "
                    "the paper's values (60 nodes, C = 11, τ = 0.006) written for scale.", name)
    by_c = {c_small: results[small is df], c_large: results[large is df]}
    lines = answer_lines([(where, results[False])], tests, (c_small, c_large))
    return _Capacity(tables, [figure], lines, [(f"C = {c}", by_c[c]) for c in (c_small, c_large)])


def _figure_html(figure: Figure, sweep: Path) -> tuple[str, list[str]]:
    """A figure as HTML and as Markdown lines (its heading, the image or why it is missing, the caption)."""
    e = html.escape
    if figure.file is None:
        return (f"<h2>{e(figure.title)}</h2><p class=missing>Not drawn: {e(figure.error)}</p>",
                [f"## {figure.title}", "", f"Not drawn: {figure.error}", ""])
    data = base64.b64encode((sweep / FILES_DIR / figure.file).read_bytes()).decode("ascii")
    return (f'<h2>{e(figure.title)}</h2><figure><img alt="{e(figure.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(figure.caption)}</figcaption></figure>",
            [f"## {figure.title}", "", f"![{figure.title}]({FILES_DIR}/{figure.file})", "", figure.caption, ""])


def _claim_figure(series: list[tuple[str, OrderingResult | None]], sweep: Path) -> Figure:
    """The picture of the claim (draw.plot_claim) into report_files/, or why it could not be drawn."""
    from .draw import plot_claim

    title, name = "The claim: each feature against difficulty", "fig_claim.png"
    caption = ("Per feature, each dataset's mean ± std over its runs against its mean test accuracy, easiest task on "
               "the left; the dashed arrow is the paper's direction as the task gets harder; filled markers on a "
               "green panel: reproduced after Holm's correction.")
    series = [(label, result) for label, result in series if result is not None and result.tests]
    try:
        plot_claim(series, sweep / FILES_DIR / name)
    except Exception as exc:  # the tables still stand: say why the picture is missing
        return Figure(title, caption, None, f"{type(exc).__name__}: {exc}")
    return Figure(title, caption, name)


FRONT_FIGURE = "front.png"


def _front_section(sweep: Path, df) -> tuple[list[Table], Figure] | None:
    """The accuracy–resources front and the learned graph against its controls (front.py), for a sweep that
    retrained controls (`dagwire retrain --control`); None for one that did not."""
    from .front import CONTROLS, report_front_section

    # retrain-<τ>-random<k>/ and retrain-<τ>-width/ (rundir.RunDir.control): looked for before anything is read.
    runs = [Path(r) for r in df.loc[df["done"], "run_dir"] if r]
    if not any(p.is_dir() for run in runs for c in CONTROLS for p in run.glob(f"retrain-*-{c}*")):
        return None

    title = "The accuracy–resources front"
    caption = ("Test accuracy against parameters and FLOPs per image, mean ± std over runs, per family: the "
               "complete DAG at λ = 0, the learned graph at τ* without fine-tuning, retrained, and its random and "
               "width controls retrained; the Pareto front marked (`dagwire front`).")
    try:
        tables = report_front_section(sweep, sweep / FILES_DIR / FRONT_FIGURE)
    except Exception as exc:  # noqa: BLE001 - one section must not sink the whole report: say why instead
        return [], Figure(title, caption, None, f"{type(exc).__name__}: {exc}")
    return (tables, Figure(title, caption, FRONT_FIGURE)) if tables else None


def write_report(sweep_dir: str | os.PathLike, local_dir: str | os.PathLike | None = None,
                 tau: float = DEFAULT_TAU, capacity_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write SWEEP/report.html (self-contained) and SWEEP/report.md (+ report_files/); return both paths.

    The page opens with the answer (one sentence per test and the picture of the claim), then the
    tables and figures, the runs left out, and sweep.yaml folded away at the end.
    """
    from .compare import load_runs
    from .files import atomic_write_text
    from .stats import ordering_test

    sweep = Path(sweep_dir)
    df = load_runs(sweep)
    if not df["done"].any():
        raise DagwireError(f"{sweep / 'runs.csv'} has no finished runs (status 'done'); nothing to report")
    local_df = None
    if local_dir is not None:
        local_df = load_runs(local_dir)
        if not local_df["done"].any():
            raise DagwireError(f"{Path(local_dir) / 'runs.csv'} has no finished runs (status 'done')")
    (sweep / FILES_DIR).mkdir(parents=True, exist_ok=True)
    embedding = start_embedding(df, tau)  # the slowest figure's numbers, made meanwhile in another process

    suffixes = [TAU_STAR_SUFFIX, ""] if _has_tau_star(df) else [""]
    results = {s: ordering_test(df, s, label=_tau_label(df, s, tau)) for s in suffixes}
    orderings = [t for s in suffixes for t in (verdict_table(results[s]), pairs_table(results[s])) if t]
    capacity = None
    if capacity_dir is not None:
        other = load_runs(capacity_dir)
        shared = TAU_STAR_SUFFIX if _has_tau_star(df) and _has_tau_star(other) else ""
        capacity = _capacity_section(df, other, sweep, tau, results.get(shared))
    lines = answer_lines([("", results[s]) for s in suffixes])
    claim = [(f"features at {results[suffixes[0]].columns}" if results[suffixes[0]] else "", results[suffixes[0]])]
    if capacity is not None:
        lines, claim = [*lines, *capacity.lines], capacity.claim
    answer = _claim_figure(claim, sweep)

    tables = [*orderings, *(capacity.tables if capacity else []), table1(df), table2(df), table3(df, tau), table4(df),
              table5(df, local_df, tau, local_label(local_dir))]
    figures, extra = draw_figures(df, sweep, tau, embedding)
    tables += extra
    front = _front_section(sweep, df)
    if front is not None:
        tables += front[0]
        figures.append(front[1])
    figures += capacity.figures if capacity else []
    failed = _failed_table(df)
    collapsed = _collapsed_table(df)
    summary, config = _summary(df, sweep, local_df, local_dir)
    title = f"dagwire sweep report: {sweep.resolve().name}"

    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>", f"<p>{e(summary)}</p>"]
    md = [f"# {title}", "", summary, ""]
    # The answer first: what each test found, then the claim itself as a picture.
    parts.append("<h2>The answer</h2><ul class=answer>" + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul>")
    md += ["## The answer", "", *[f"- {line}" for line in lines], ""]
    shown, shown_md = _figure_html(answer, sweep)
    parts.append(shown)
    md += shown_md
    for table in tables:
        parts.append(html_table(table))
        md += [md_table(table)]
    for figure in figures:
        shown, shown_md = _figure_html(figure, sweep)
        parts.append(shown)
        md += shown_md
    for listed in (t for t in (collapsed, failed) if t is not None):
        parts.append(html_table(listed, wrap_from=3))
        md += [md_table(listed)]
    if config is not None:  # the design, for reference: folded away after the results
        parts.append(f"<details><summary>sweep.yaml</summary><pre>{e(config)}</pre></details>")
        md += ["<details><summary>sweep.yaml</summary>", "", "```yaml", config.rstrip("\n"), "```", "", "</details>", ""]
    parts.append("</body></html>\n")
    html_path, md_path = sweep / "report.html", sweep / "report.md"
    atomic_write_text(html_path, "\n".join(parts))
    atomic_write_text(md_path, "\n".join(md))
    # Figures of an earlier report that this one did not draw (e.g. a dataset since removed) would
    # sit beside report.md as if current: remove them, after the new pages are in place.
    current = {f.file for f in (answer, *figures) if f.file}
    for old in (sweep / FILES_DIR).glob("fig*.png"):
        if old.name not in current:
            old.unlink(missing_ok=True)
    return html_path, md_path


@click.command("report")
@click.argument("sweep_dir", metavar="SWEEP_DIR")
@click.option("--local", "local_dir", metavar="LOCAL_SWEEP_DIR",
              help="A second sweep trained from the local initial graph (App. D.1), for Table 5.")
@click.option("--capacity", "capacity_dir", metavar="OTHER_C_SWEEP_DIR",
              help="The same design at another C: adds the capacity × difficulty test and its figure.")
def report_command(sweep_dir: str, local_dir: str | None, capacity_dir: str | None) -> None:
    """Write SWEEP_DIR/report.html and report.md: Tables 1-5 beside the paper's, and every figure."""
    html_path, md_path = write_report(sweep_dir, local_dir, capacity_dir=capacity_dir)
    click.echo(str(html_path))
    click.echo(str(md_path))
