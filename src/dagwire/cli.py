"""The `dagwire` command line. Bad input: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from .config import DEFAULT_TAU
from .options import train_options
from .errors import DagwireError, TrainingDiverged
from .rundir import RunDir


class LazyGroup(click.Group):
    """A group whose big commands are imported only when used (click's documented lazy-loading pattern)."""

    def __init__(self, *args, lazy_subcommands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}  # name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_subcommands:
            module, attribute = self.lazy_subcommands[name].split(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


# Commands that live beside their own module.
LAZY_COMMANDS = {"sweep": "dagwire.sweep.command:sweep_command", "report": "dagwire.report:report_command",
                 "ordering": "dagwire.ordering:ordering_command",
                 "trajectory": "dagwire.trajectory_command:trajectory_command",
                 "upgrade": "dagwire.upgrade:upgrade_command", "front": "dagwire.front:front_command"}


@click.group(cls=LazyGroup, lazy_subcommands=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagwire")
def cli() -> None:
    """dagwire: train a CNN wired as a complete DAG under an L1 resources penalty, then study the graph it learns."""


def _config_from_flags(config_path, **flags):
    from .config import build_config, given_values

    return build_config(config_path, **given_values(flags))


@cli.command()
@train_options
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create (--batch-seeds K > 1: OUT/seed<s> each).")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory (or the OUT/seed* runs of --batch-seeds).")
@click.option("--batch-seeds", type=int, default=1, show_default=True,
              help="Train seeds seed..seed+K-1 as K members of one network (same math as K runs).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--skip-doctor", is_flag=True, help="Train even if `dagwire doctor`'s quick check fails (not advised).")
def train(config_path, out, resume, batch_seeds, quiet, skip_doctor, **flags) -> None:
    """Train the DAG network on a dataset; write metrics, edge history, checkpoints and graph.json."""
    from .doctor import check_before_training
    from .train import load_run_config, seed_configs, train_seeds

    if resume:
        if out and Path(out) != Path(resume):
            raise DagwireError("give either --out for a new run or --resume for an existing one, not both")
        given = {k: v for k, v in flags.items() if v is not None}
        if set(given) - {"device"}:
            raise DagwireError(f"--resume takes its options from {resume}/config.yaml; only --device may change")
        members = [Path(resume)]
        if not RunDir(resume).config.exists():  # the OUT of a --batch-seeds run: its seed<s> runs
            members = sorted(p for p in Path(resume).glob("seed*") if RunDir(p).config.exists()) or members
        configs = [load_run_config(run, device=given.get("device")) for run in members]
        results = train_seeds(configs, members, resume=True, progress=not quiet,
                              before_training=lambda: check_before_training(configs[0].device, skip_doctor))
    else:
        if not out:
            raise DagwireError("--out DIR is required (the run directory to create)")
        configs = seed_configs(_config_from_flags(config_path, **flags), batch_seeds)
        members = [Path(out)] if batch_seeds == 1 else [Path(out) / f"seed{c.seed}" for c in configs]
        results = train_seeds(configs, members, progress=not quiet,
                              before_training=lambda: check_before_training(configs[0].device, skip_doctor))
    for config, result in zip(configs, results):
        click.echo(
            f"done: test accuracy {result.test_accuracy:.4f} (training subset, no augmentation: "
            f"{result.train_eval_accuracy:.4f}), thresholded (τ={config.threshold}) "
            f"{result.thresholded_accuracy:.4f}; graph in {result.out / 'graph.json'}"
            + ("; COLLAPSED in its first lr phase" if result.collapsed else "")
        )


@cli.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.option("--full", is_flag=True, help="Every C from 1 to 16 at 1-3 stages, 1 and 2 members (about a minute).")
@click.option("--threads", type=int, default=0, help="Torch threads in the checks (default: torch's own).")
def doctor(device, full, threads) -> None:
    """Check the network's forward and backward against float64 on this machine's kernels (exit 1 on failure)."""
    from .doctor import doctor as run_doctor
    from .train import resolve_device

    resolve_device(device)
    if threads < 0:
        raise DagwireError(f"--threads must be 0 or more, got {threads}")
    if not run_doctor(device, full=full, threads=threads, say=click.echo):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("--nodes", type=int, default=60, show_default=True)
@click.option("--stages", type=int, default=3, show_default=True)
@click.option("--channels", type=int, default=11, show_default=True)
@click.option("--graph", default="complete", show_default=True, help="complete, local, or a graph.json path.")
@click.option("--local-window", type=int, default=10, show_default=True)
@click.option("--image-size", type=int, default=32, show_default=True)
@click.option("--classes", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def describe(nodes, stages, channels, graph, local_window, image_size, classes, as_json) -> None:
    """Size of the network (parameters, edges, FLOPs) without training."""
    from . import counts
    from . import spec as specs

    if channels < 1:
        raise DagwireError(f"--channels must be at least 1, got {channels}")
    if graph == "complete":
        g = specs.complete(nodes, stages)
    elif graph == "local":
        g = specs.local(nodes, stages, local_window)
    else:
        g = specs.load(graph)
    info = {
        "nodes": g.num_nodes,
        "stages": list(g.stages),
        "channels": channels,
        "edges": g.num_edges,
        "reduce_blocks": len(counts.reduce_blocks(g)),
        "parameters": counts.parameter_count(g, channels, num_classes=classes),
        "flops_per_image": counts.flops_per_image(g, channels, image_size, num_classes=classes),
        "image_size": image_size,
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key:16s} {value}")


def _graph_channels(graph, channels):
    """--channels if given, else the channels the graph was trained with, else 11."""
    if channels is not None:
        if channels < 1:
            raise DagwireError(f"--channels must be at least 1, got {channels}")
        return channels
    return int(graph.meta.get("channels", 11))


TAU_HELP = "τ: edges below it are erased; 'star': the run's τ* (its sweep's, or its own hold-out one)."


def _graph_tau(text: str, graph_file: str) -> float:
    """--threshold of a command on GRAPH.json: a number >= 0, or 'star' for the τ* of the run it is in."""
    from .config import STAR, parse_tau

    tau = parse_tau(text)
    if tau == STAR:
        from .taustar import run_tau_star

        return run_tau_star(Path(graph_file).parent)
    if not tau >= 0 or tau == float("inf"):
        raise DagwireError(f"--threshold must be a number >= 0 or '{STAR}', got {text}")
    return float(tau)


def _pruning_line(g, tau: float, graph_file: str, tau_name: str) -> str:
    """graphs.pruning_summary, with the test accuracy before and after pruning when the run's threshold curve has τ."""
    from . import graphs

    rows = RunDir(Path(graph_file).parent).threshold_rows()
    at_tau = [r for r in rows if abs(r["threshold"] - tau) <= 1e-12]
    if rows and at_tau:
        return graphs.pruning_summary(g, tau, rows[0]["test_accuracy"], at_tau[0]["test_accuracy"], tau_name)
    return graphs.pruning_summary(g, tau, tau_name=tau_name)


@cli.command()
@click.argument("graph_file", metavar="GRAPH.json")
@click.option("--threshold", default=str(DEFAULT_TAU), show_default=True, help=TAU_HELP)
@click.option("--channels", type=int, help="C for the parameter count (default: the graph's own, else 11).")
def features(graph_file, threshold, channels) -> None:
    """Graph features of the learned graph after threshold and dead-path removal (one JSON object)."""
    from . import graphs
    from . import spec as specs

    g = specs.load(graph_file)
    if g.weights is None:
        raise DagwireError(f"{graph_file} has no edge weights")
    result = graphs.recorded_features(g, _graph_tau(threshold, graph_file), _graph_channels(g, channels))
    click.echo(json.dumps(result))


@cli.command()
@click.argument("graph_file", metavar="GRAPH.json")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.png or FILE.svg")
@click.option("--threshold", default=str(DEFAULT_TAU), show_default=True,
              help="Draw the graph pruned at τ (0: all edges; 'star': the run's τ*).")
@click.option("--show-removed", is_flag=True,
              help="Draw every initial edge too, the cut ones faded, beside the learned graph.")
@click.option("--title", help="Title above the drawing.")
def draw(graph_file, output, threshold, show_removed, title) -> None:
    """Draw a graph in a Kamada-Kawai layout, nodes coloured by stage, edge width by weight."""
    from . import spec as specs
    from .config import STAR
    from .draw import draw_graph, draw_pruning

    if Path(output).suffix.lower() not in (".png", ".svg"):
        raise DagwireError(f"-o {output}: the file must end in .png or .svg")
    g = specs.load(graph_file)
    tau = _graph_tau(threshold, graph_file) if g.weights is not None else None
    if show_removed and tau is None:
        raise DagwireError(f"--show-removed needs edge weights; {graph_file} has none")
    if title is None:
        title = " ".join(str(g.meta[k]) for k in ("dataset",) if k in g.meta) or Path(graph_file).stem
        title += f" seed {g.meta['seed']}" if "seed" in g.meta else ""
    if show_removed:
        tau_name = "τ*" if threshold.strip().lower() == STAR else "τ"
        draw_pruning(g, tau, output, title=title, summary=_pruning_line(g, tau, graph_file, tau_name))
    else:
        draw_graph(g, output, title=title, tau=tau)
    click.echo(f"wrote {output}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--grid", help=f"Comma-separated thresholds (default 0..0.3 including {DEFAULT_TAU}).")
@click.option("--device", help="Evaluate on this device (default: the run's).")
@click.option("--tolerance", type=float, metavar="POINTS",
              help="Points of hold-out accuracy τ* may cost (default: the run's tau_tolerance, the paper's 0.5 unless "
                   "its config sets another); 'star' then uses it.")
@click.option("--quiet", is_flag=True)
def thresholds(run, grid, device, tolerance, quiet) -> None:
    """Test accuracy and sparsity of the trained network over thresholds τ, without fine-tuning (Fig. 2)."""
    from .draw import plot_threshold_curve
    from .config import TAU_GRID
    from .prune import load_run, threshold_curve, write_rows_csv
    from .taustar import check_tolerance

    if tolerance is not None:
        check_tolerance(tolerance)
    taus = TAU_GRID
    if grid:
        try:
            taus = tuple(float(v) for v in grid.split(",") if v.strip())
        except ValueError:
            raise DagwireError(f"--grid must be comma-separated numbers, got {grid!r}") from None
        if not taus or any(not t >= 0 for t in taus):
            raise DagwireError("--grid thresholds must be numbers >= 0")
    trained = load_run(run, device)
    rows = threshold_curve(trained, taus, progress=not quiet)
    files = RunDir(run)
    write_rows_csv(rows, files.thresholds_csv)
    plot_threshold_curve(rows, files.thresholds_png, title=f"{trained.config.dataset} seed {trained.config.seed}")
    held = "holdout_accuracy" in rows[0]
    click.echo(f"{'τ':>8} {'accuracy':>9}" + (f" {'hold-out':>9}" if held else "") + f" {'sparsity':>9} {'nodes':>6}")
    for r in rows:
        note = "  disconnected" if r["disconnected"] else ""
        click.echo(f"{r['threshold']:8.4f} {r['test_accuracy']:9.4f}" + (f" {r['holdout_accuracy']:9.4f}" if held else "")
                   + f" {r['sparsity']:9.4f} {r['nodes']:6d}{note}")
    click.echo(f"wrote {files.thresholds_csv} and {files.thresholds_png.name}")
    if held:
        from .taustar import own_tau_star, record_tolerance

        points = trained.config.tau_tolerance if tolerance is None else tolerance
        record_tolerance(run, points)
        tau = own_tau_star(run, points)
        click.echo(f"τ* (the largest τ whose accuracy on the {trained.config.holdout} hold-out images stays within "
                   f"{points:g} point{'' if points == 1 else 's'} of the unpruned network's): "
                   f"{_pruning_line(trained.learned, tau, files.graph, 'τ*')}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--threshold", default=str(DEFAULT_TAU), show_default=True, help=TAU_HELP)
@click.option("--fit-channels", is_flag=False, flag_value="full", default=None,
              help="Fit C so the parameter count is nearest to TARGET (default: the complete network's).")
@click.option("--control", "control_kinds", multiple=True, type=click.Choice(["random", "width"]),
              help="Train controls instead, each into RUN/retrain-τ-<control>: 'random', random graphs on the "
                   "pruned graph's live nodes with its edges per stage; 'width', the complete DAG at the C "
                   "nearest its parameters. Repeat for both.")
@click.option("--controls", "control_count", type=int, default=2, show_default=True,
              help="How many random controls (--control random).")
@click.option("--seed", type=int, help="Seed of the new initialisation, and of the random controls' graphs "
                                       "(default: the run's + 1000).")
@click.option("--epochs", type=int, help="Epochs (default: the run's).")
@click.option("--device", help="Device (default: the run's).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default RUN/retrain-τ[-fitC]).")
@click.option("--resume", is_flag=True, help="Continue an interrupted retraining in --out.")
@click.option("--quiet", is_flag=True)
def retrain(run, threshold, fit_channels, control_kinds, control_count, seed, epochs, device, out, resume,
            quiet) -> None:
    """Train the pruned architecture of RUN from scratch with a new seed, same regime (App. B–C); or its controls."""
    from .config import parse_tau
    from .export import resolve_tau
    from .prune import full_parameter_count, load_run, network_facts, retrain_run

    tau_given = parse_tau(threshold)
    if not isinstance(tau_given, str) and not (tau_given >= 0 and tau_given != float("inf")):
        raise DagwireError(f"--threshold must be a number >= 0 or 'star', got {threshold}")
    if control_kinds and (out or fit_channels is not None):
        raise DagwireError("--control trains into RUN/retrain-τ-<control> at the run's C: drop --out and --fit-channels")
    trained = load_run(run, device)
    tau = resolve_tau(trained, tau_given)
    if control_kinds:
        _retrain_controls(trained, tau, control_kinds, control_count, seed, epochs, device, resume, quiet)
        return
    target = None
    if fit_channels is not None:
        try:
            target = full_parameter_count(trained) if fit_channels == "full" else int(float(fit_channels))
        except ValueError:
            raise DagwireError(f"--fit-channels takes a parameter count, got {fit_channels!r}") from None
        if target < 1:
            raise DagwireError(f"--fit-channels target must be positive, got {target}")
    config, result = retrain_run(trained, tau, fit=target is not None, target=target, seed=seed, out=out,
                                 resume=resume, progress=not quiet, epochs=epochs, device=device)
    facts = network_facts(result.out, {"family": "learned_fit" if target is not None else "learned", "tau": tau})
    click.echo(
        f"done: retrained C={config.channels}, seed {config.seed}: test accuracy {result.test_accuracy:.4f} "
        f"({facts['parameters']} parameters); run in {result.out}"
    )


def _retrain_controls(trained, tau: float, kinds, count: int, seed, epochs, device, resume: bool, quiet: bool) -> None:
    """`dagwire retrain --control`: plan the controls of RUN at τ, train each, one line on each."""
    from . import counts
    from .prune import connected_pruning, io_sizes, network_facts, plan_controls, retrain_control

    learned = counts.parameter_count(connected_pruning(trained, tau), trained.config.channels, *io_sizes(trained))
    for control in plan_controls(trained, tau, kinds, count, seed):
        config, result = retrain_control(trained, tau, control, seed=seed, resume=True if resume else None,
                                         progress=not quiet, epochs=epochs, device=device)
        facts = network_facts(result.out)
        if facts["family"] == "width":
            what = (f"width control, the complete DAG at C={config.channels}: {facts['parameters']} parameters "
                    f"({facts['residual']:+d} against the learned graph's {learned} at τ={tau:g})")
        else:
            what = (f"random control {facts['control']} (graph seed {facts['graph_seed']}): {facts['nodes']} nodes, "
                    f"edges per stage {'/'.join(map(str, facts['edges_per_stage']))}, {facts['parameters']} parameters")
        click.echo(f"done: {what}; seed {config.seed}: test accuracy {result.test_accuracy:.4f}; run in {result.out}")


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--tau", help="τ: a number, or 'star' for the run's τ* (its sweep's, or its own hold-out one; "
                            "default: the run's own threshold).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.pt2 or FILE.onnx")
def export_command(run, tau, output) -> None:
    """Write RUN's network pruned at τ as a torch.export program (.pt2) or ONNX (.onnx), with FILE.json beside it.

    FILE.json (m.pt2 -> m.pt2.json) holds what feeding the file needs: input shape, normalisation
    mean and std, class names, τ, and the pruned graph with its features.
    """
    from .config import parse_tau
    from .export import export

    result = export(run, output, parse_tau(tau))
    click.echo(f"wrote {result.path} (τ={result.tau:g}: {result.nodes} nodes, {result.parameters} parameters) "
               f"and {result.sidecar}")


@cli.command()
@click.option("--nodes", type=int, default=60, show_default=True)
@click.option("--stages", type=int, default=3, show_default=True)
@click.option("--channels", type=int, default=11, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--image-size", type=int, default=32, show_default=True)
@click.option("--steps", type=int, default=5, show_default=True, help="Timed steps (median) after 3 warm-up steps.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-reference", is_flag=True, help="Skip the slow straightforward implementation.")
@click.option("--batch-seeds", type=int, default=1, show_default=True,
              help="Also time K seeds in one network (batch_seeds_speedup: vs K steps one after another).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: autocast the steps as `train --precision bf16` does.")
@click.option("--epoch-images", type=int, default=0, show_default=True,
              help="Also time one epoch's training steps on this many images (epoch_s; 0: skip).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(nodes, stages, channels, batch_size, image_size, steps, device, no_reference, batch_seeds, precision,
          epoch_images, as_json) -> None:
    """Time one training step of the complete DAG, a pruned graph and a straightforward reference."""
    from . import spec as specs
    from .bench import run_benchmark
    from .train import resolve_device

    specs.equal_stages(nodes, stages)
    if min(channels, batch_size, image_size, steps, batch_seeds) < 1:
        raise DagwireError("--channels, --batch-size, --image-size, --steps and --batch-seeds must be positive")
    if epoch_images < 0:
        raise DagwireError(f"--epoch-images must be 0 or more, got {epoch_images}")
    resolve_device(device)
    log = None if as_json else (lambda message: click.echo(f"timing {message} ...", err=True))
    result = run_benchmark(nodes, stages, channels, batch_size, image_size, device, steps, not no_reference, log,
                           batch_seeds, precision, epoch_images)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:22s} {value:.4g}" if isinstance(value, float) else f"{key:22s} {value}")




def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    try:
        code = cli.main(args=argv, prog_name="dagwire", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"dagwire: error: {exc.format_message()}", err=True)
        return 2
    except DagwireError as exc:
        click.echo(f"dagwire: error: {exc}", err=True)
        return 2
    except TrainingDiverged as exc:
        click.echo(f"dagwire: stopped: {exc}", err=True)
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("dagwire: interrupted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    # In non-standalone mode click returns (not raises) the code of ctx.exit(n).
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
