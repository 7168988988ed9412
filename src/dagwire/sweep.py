"""Multi-seed, multi-dataset sweeps on Ray (placeholder: being written)."""

import click


@click.command("sweep")
def sweep_command() -> None:
    """Run every (dataset, seed) as an independent training run through Ray."""
    raise click.UsageError("sweep is not implemented yet")
