"""The `dagwire` command line. Bad input: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import DagwireError, TrainingDiverged


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagwire")
def cli() -> None:
    """dagwire: train a CNN wired as a complete DAG under an L1 resources penalty, then study the graph it learns."""


def train_options(fn):
    """The flags shared by `train` (and every command that starts training runs)."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file of options (flags win)."),
        click.option("--dataset", help="cmnist, ckmnist, cfashionmnist, cifar10, <name>_t8, folder:DIR, npz:FILE."),
        click.option("--data-dir", help="Where the dataset files are (also searched: $DAGWIRE_DATA, cache, /usr/share/datasets)."),
        click.option("--limit-train", type=int, help="Stratified, seeded subset of N training images."),
        click.option("--limit-test", type=int, help="Stratified, seeded subset of N test images."),
        click.option("--carve-test", type=float, help="Carve train and test (this fraction) from the official test split only."),
        click.option("--data-seed", type=int, help="Seed of the data subset (default 0, the same for every run seed)."),
        click.option("--nodes", type=int, help="Number of DAG nodes (default 60)."),
        click.option("--stages", type=int, help="Number of equal stages (default 3)."),
        click.option("--channels", type=int, help="Channels C of stage 0 (default 11)."),
        click.option("--graph", help="Initial DAG: complete (default), local, or a graph.json path."),
        click.option("--local-window", type=int, help="Window k of the local graph (j - i <= k, default 10)."),
        click.option("--epochs", type=int, help="Epochs (default 100)."),
        click.option("--batch-size", type=int, help="Batch size (default 128)."),
        click.option("--lr", type=float, help="Initial learning rate (default 0.1)."),
        click.option("--momentum", type=float, help="SGD momentum (default 0.9)."),
        click.option("--weight-decay", type=float, help="Weight decay (default 1e-4)."),
        click.option("--lam", type=float, help="λ of the L1 resources term (default 1e-3)."),
        click.option("--lr-milestones", help="Comma-separated epochs where lr drops (default 80%,90% of epochs)."),
        click.option("--augment/--no-augment", default=None, help="Random crop + flip (default on)."),
        click.option("--seed", type=int, help="Seed of initialisation and data order (default 0)."),
        click.option("--device", help="cpu (default), cuda, cuda:N."),
        click.option("--threshold", type=float, help="τ for the thresholded accuracy at the end (default 0.006)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config_from_flags(config_path, **flags):
    from .config import build_config

    milestones = flags.pop("lr_milestones", None)
    if milestones is not None:
        try:
            flags["lr_milestones"] = [int(v) for v in milestones.split(",") if v.strip()]
        except ValueError:
            raise DagwireError(f"--lr-milestones must be comma-separated integers, got {milestones!r}") from None
    return build_config(config_path, **flags)


@cli.command()
@train_options
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config_path, out, resume, quiet, **flags) -> None:
    """Train the DAG network on a dataset; write metrics, edge history, checkpoints and graph.json."""
    from .train import load_run_config, train as run_training

    if resume:
        if out and Path(out) != Path(resume):
            raise DagwireError("give either --out for a new run or --resume for an existing one, not both")
        given = {k: v for k, v in flags.items() if v is not None}
        if set(given) - {"device"}:
            raise DagwireError(f"--resume takes its options from {resume}/config.yaml; only --device may change")
        config = load_run_config(resume, device=given.get("device"))
        result = run_training(config, resume, resume=True, progress=not quiet)
    else:
        if not out:
            raise DagwireError("--out DIR is required (the run directory to create)")
        config = _config_from_flags(config_path, **flags)
        result = run_training(config, out, progress=not quiet)
    click.echo(
        f"done: test accuracy {result.test_accuracy:.4f}, thresholded (τ={config.threshold}) "
        f"{result.thresholded_accuracy:.4f}; graph in {result.out / 'graph.json'}"
    )


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="dagwire", standalone_mode=False)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
