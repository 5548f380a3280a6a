"""``cnnctl launch``: run a training command as N local workers of one MultiWorkerMirroredStrategy job."""

from __future__ import annotations

import typer

from cnnctl.cli.common import report_errors


@report_errors
def launch(
    command: list[str] = typer.Argument(..., help="The cnnctl command to run on every worker, after `--`."),
    workers: int = typer.Option(2, "--workers", "-n", help="Number of local worker processes."),
    port: int | None = typer.Option(None, "--port", help="First of N consecutive localhost ports (default: free ones)."),
):
    """Start N local workers of one multi-worker job, merge their output, stop all when one fails.

    Each worker is `cnnctl COMMAND` with its own TF_CONFIG; the global batch is split across
    them. For trying multi-worker training on one machine; on a cluster, start one
    `cnnctl train` per machine (docs/scale-out.md).

    Examples:

        cnnctl launch --workers 2 -- train --epochs 1

        cnnctl launch --workers 2 -- train --resume checkpoints/fashion_cnn-fashion_mnist-20261204-120000
    """
    from cnnctl.launch import launch as run

    code = run(workers, list(command), port)
    if code:
        raise typer.Exit(code)
