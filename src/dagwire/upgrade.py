"""`dagwire upgrade DIR...`: older run and sweep records rewritten so that their places resolve on another machine.

Runs and sweeps record where their data (and a graph file) are relative to the checkout
(portable.py); records written before that hold absolute paths. This rewrites every sweep.yaml
and every run's config.yaml under each DIR in the portable form, the same places and every other
value unchanged, and rebuilds each sweep's runs table from its run directories, so that it gains
the columns added since (the schedule's, say) with every number it held kept. A sweep resuming an older DIR does the same for its own records
(`sweep.plan.upgrade_run_configs`, `upgrade_sweep_file`). A sweep directory that a live sweep holds is refused, untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from .errors import DagwireError

def upgrade_records(root: str | os.PathLike) -> list[Path]:
    """Every sweep.yaml and run config.yaml under `root` in the portable form, each sweep held meanwhile; the files rewritten."""
    from contextlib import ExitStack

    from .sweep.hold import hold_sweep_dir
    from .sweep.plan import SWEEP_FILE, upgrade_run_configs, upgrade_sweep_file

    root = Path(root)
    if not root.is_dir():
        raise DagwireError(f"{root} is not a directory")
    sweeps = sorted(path.parent for path in root.rglob(SWEEP_FILE))
    rewritten = []
    with ExitStack() as held:
        for sweep in sweeps:  # before anything is written: a sweep running in one of them refuses all
            held.enter_context(hold_sweep_dir(sweep))
        for sweep in sweeps:
            if upgrade_sweep_file(sweep):
                rewritten.append(sweep / SWEEP_FILE)
        rewritten += upgrade_run_configs(root)
        for sweep in sweeps:
            rewritten += upgrade_runs_table(sweep)
    return rewritten


def upgrade_runs_table(sweep: Path) -> list[Path]:
    """Rebuild a sweep's runs table from its run directories, keeping what it measured; the files rewritten."""
    from .sweep.table import collect_runs
    from .tables import RUNS_CSV, write_runs_table

    if not (sweep / RUNS_CSV).is_file():
        return []
    return write_runs_table(collect_runs(sweep), sweep)


@click.command("upgrade")
@click.argument("dirs", metavar="DIR...", nargs=-1, required=True)
def upgrade_command(dirs: tuple[str, ...]) -> None:
    """Rewrite the run and sweep records under each DIR with their places relative to the checkout."""
    for directory in dirs:
        rewritten = upgrade_records(directory)
        for path in rewritten:
            click.echo(str(path))
        click.echo(f"{directory}: {len(rewritten)} record(s) rewritten, the same places and values", err=True)
