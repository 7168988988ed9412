"""`dagwire sweep`: the command line (its train flags come from options.py, so nothing imports cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ..options import train_option_params
from ..tables import RUNS_CSV, RUNS_PARQUET
from .plan import DEFAULT_SEEDS, PRESETS, make_plan, plan_from_identity, read_sweep_file
from .runner import run_sweep


@click.command("sweep")
@click.option("--datasets", help="Comma-separated datasets (cmnist, cfashionmnist, ..., npz:FILE, folder:DIR).")
@click.option("--seeds", help=f"Seeds: 0-9, 0,3,5 or 0-2,7 (default {DEFAULT_SEEDS}, or the preset's).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (rerun to resume).")
@click.option("--preset", help=f"Named settings ({', '.join(sorted(PRESETS))}); --config and flags win.")
@click.option("--address", help="An existing Ray cluster (HOST:PORT, ray://HOST:PORT, auto); default: local Ray.")
@click.option("--cpus-per-run", type=int, default=1, show_default=True, help="CPU cores (torch threads) per run.")
@click.option("--gpus-per-run", type=float, default=0.0, show_default=True, help="GPUs per run (fractions share one).")
@click.option("--runs-at-once", type=int,
              help="At most N runs at a time (default: as many as the cluster's CPUs and GPUs hold); "
                   "leaves the other cores to other work.")
@click.option("--retrain", is_flag=True, default=False,
              help="Also retrain each run's pruned network from scratch (same C and fitted C) into "
                   "RUN/retrain-τ[-fitC]; part of the sweep's configuration.")
@click.option("--batch-seeds", type=int, default=1, show_default=True,
              help="Train K seeds of a dataset as members of one network, one Ray task (same math; a GPU lever).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--skip-doctor", is_flag=True, help="Run even if `dagwire doctor`'s quick check fails (not advised).")
def sweep_command(datasets, seeds, out, preset, address, cpus_per_run, gpus_per_run, runs_at_once, retrain, batch_seeds,
                  quiet, skip_doctor, config_path=None, **flags) -> None:
    """Run every (dataset, seed) as an independent training run through Ray; rerun to resume.

    Each run also gets thresholds.csv, features.json and dynamics.json; DIR/runs.csv and
    DIR/runs.parquet hold one row per run. Exit code 1 when some run failed (rerun retries it).
    """
    sweep_dir = Path(out)
    nothing_given = (datasets is None and seeds is None and preset is None and config_path is None
                     and all(v is None for k, v in flags.items() if k != "device"))
    stored = read_sweep_file(sweep_dir) if nothing_given else None
    if stored is not None:
        # `dagwire sweep --out DIR` alone continues the sweep stored there.
        plan = plan_from_identity(stored, flags.get("device"))
        plan.retrain = plan.retrain or retrain  # --retrain on a sweep made without it is refused below
        for dataset in plan.datasets:
            plan.run_config(dataset, plan.seeds[0])
    else:
        plan = make_plan(datasets, seeds, preset, config_path, check_files=address is None, retrain=retrain,
                         **flags)
    if address is None:  # a local sweep checks this machine first; on a cluster each node checks itself
        from ..doctor import check_before_training

        check_before_training(plan.device, skip_doctor, threads=cpus_per_run)
    result = run_sweep(plan, sweep_dir, address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                       runs_at_once=runs_at_once, batch_seeds=batch_seeds, progress=not quiet,
                       check_kernels=not skip_doctor)
    total = len(result.table)
    click.echo(f"sweep {sweep_dir}: {result.done}/{total} done, {result.failed} failed "
               f"({result.ran} run now); table in {sweep_dir / RUNS_CSV} and {RUNS_PARQUET}")
    if result.failed:
        click.echo(f"dagwire: {result.failed} of {total} runs failed (errors in {sweep_dir / RUNS_CSV}); "
                   "rerun the same command to retry them", err=True)
        click.get_current_context().exit(1)


# Every `dagwire train` flag, after the sweep's own options: built from TrainConfig in options.py.
sweep_command.params.extend(train_option_params())


def _lam_axis_option(params: list) -> None:
    """--lam of a sweep also takes several λ (0,1e-3,5e-3): the λ axis, every run at each (make_plan parses it)."""
    for param in params:
        if param.name == "lam":
            param.type = click.STRING
            shown = (param.help or "")[(param.help or "").rfind(" [default"):] if "[default" in (param.help or "") else ""
            param.help = ("λ of the L1 resources term; several, comma-separated (0,1e-3,5e-3), make a λ axis: "
                          "every (dataset, seed) at each λ, in runs/<dataset>/lam<λ>/seed<s>." + shown)


_lam_axis_option(sweep_command.params)
