"""Multi-seed, multi-dataset sweeps on Ray (SPEC §9): every (dataset, seed) an independent, resumable run.

`dagwire sweep --datasets a,b --seeds 0-9 [train flags] --out DIR` lays out

    DIR/sweep.yaml                   the sweep's configuration, written once; a rerun must match it
                                     (data_dir relative to the checkout where it can be: `portable`)
    DIR/.dagwire-lock                held by the sweep command that runs on DIR, one at a time (`hold`)
    DIR/.dagwire-marker              a random token, rewritten when a sweep command starts; each task
                                     checks that it reads the same before it touches DIR
    DIR/runs/<dataset>/seed<k>/      one `dagwire train` run directory, plus
        thresholds.csv, .png         accuracy (no fine-tuning) and sparsity over τ (Fig. 2)
        features.json                SPEC §5 features at the config's τ and C
        dynamics.json                SPEC §7 (A)-(D), edges and the epoch-1 DSC scores
        retrain-<τ>/, retrain-<τ>-fitC/  with --retrain: the pruned network (τ: the config's threshold)
                                     trained from scratch, same C and C fitted to the complete
                                     network's parameter count (App. B–C; `dagwire retrain`'s dirs)
        status.json                  {"status": "done" | "failed", ...}, written last, atomically
        error.log                    the traceback of a failed run
    DIR/runs.csv, DIR/runs.parquet   one row per run, rewritten atomically whenever a run finishes

Each run is a Ray task (`--cpus-per-run`, `--gpus-per-run`), on an embedded local Ray instance by
default or on an existing cluster with `--address` (then DIR must be on a filesystem every node
mounts at the same path, and dagwire installed on every node: README, "On a cluster"). A task on a
node that does not see DIR's marker fails its runs with an error naming the node and DIR, without
writing anything there; the driver records those failures. The runs table's `ray_node` column
says which node each run ran on. Rerunning the same command skips done runs, resumes
unfinished ones from their checkpoints and retries failed ones. Exit codes: 0 when every run is
done, 1 when some run failed (its error is in runs.csv and its status.json), 2 for bad input.

The package, in the order a sweep runs: `plan` (presets, datasets × seeds, sweep.yaml, the plan
shown), `portable` (data_dir as sweep.yaml records it, resolved on this machine), `hold` (one
sweep per DIR), `cluster` (connecting to Ray), `runner` (submitting the runs, recording them),
`worker` (what a Ray task does), `table` (the runs table from the run directories, τ*),
`command` (the click command).
"""

from .cluster import check_reachable, check_token, connect_ray
from .command import sweep_command
from .plan import (DEFAULT_SEEDS, MARKER_FILE, PRESETS, SWEEP_FILE, SWEEP_FORMAT, SweepPlan, _shared_data_dir,
                   describe_plan, first_difference, lr_phases, make_plan, normalise_dataset, parse_datasets,
                   parse_seeds, plan_from_identity, read_sweep_file, run_dir_names)
from .runner import SweepResult, prepare_dir, run_sweep, seed_groups
from .table import collect_runs, is_done, make_row, result_from_disk, with_tau_star, write_tables
from .worker import Job, check_marker, measure_run, node_here, run_task, train_runs, write_marker

__all__ = [
    "DEFAULT_SEEDS", "MARKER_FILE", "PRESETS", "SWEEP_FILE", "SWEEP_FORMAT", "Job", "SweepPlan", "SweepResult",
    "_shared_data_dir", "check_marker", "check_reachable", "check_token", "collect_runs", "connect_ray",
    "describe_plan", "first_difference", "is_done", "lr_phases", "make_plan", "make_row", "measure_run",
    "node_here", "normalise_dataset", "parse_datasets", "parse_seeds", "plan_from_identity", "prepare_dir",
    "read_sweep_file", "result_from_disk", "run_dir_names", "run_sweep", "run_task", "seed_groups",
    "sweep_command", "train_runs", "with_tau_star", "write_marker", "write_tables",
]
