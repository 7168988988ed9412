"""The sweep report: tables and figures as HTML and Markdown (placeholder: being written)."""

import click


@click.command("report")
def report_command() -> None:
    """Write DIR/report.html and DIR/report.md from a sweep directory."""
    raise click.UsageError("report is not implemented yet")
