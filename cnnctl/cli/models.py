"""``cnnctl models``: every registered architecture with its size and paper."""

from __future__ import annotations

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def models(
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    name: str | None = typer.Argument(None, help="Show one model only."),
):
    """List the architectures: task, parameters, multiply-adds at the default input, paper, reported error.

    Examples:

        cnnctl models

        cnnctl models resnet20 --json
    """
    from cnnctl import model_catalog
    from cnnctl.registry import unknown_name

    # The counts come from the shipped table, without TensorFlow; only model families edited since
    # the table was written are built (python -m cnnctl.model_catalog writes it again).
    catalog = model_catalog.read()
    stale = model_catalog.stale_families(catalog)
    if stale:
        quiet_tensorflow()
    with console(stderr=True).status(f"building {len(stale)} edited model famil{'y' if len(stale) == 1 else 'ies'} to count them..."
                                     if stale else "reading the model table..."):
        every = model_catalog.rows_of(catalog, stale)
    rows = [r for r in every if r["name"] == name] if name else every
    if not rows:
        raise unknown_name("model", name, [r["name"] for r in every])
    if json_:
        echo_json(rows)
        return
    from rich.table import Table

    table = Table(title="cnnctl models", show_lines=False)
    for col, just in (("name", "left"), ("task", "left"), ("params", "right"), ("MACs", "right"),
                      ("input", "left")):
        table.add_column(col, justify=just, no_wrap=True)
    table.add_column("paper / reported error", overflow="fold", ratio=1)
    for r in rows:
        table.add_row(r["name"], r["task"], f"{r['params']:,}", _human(r["macs"]),
                      "x".join(str(s) for s in r["input_shape"]),
                      f"{r['paper']}\n[dim]reported: {r.get('reported_error', '-')}[/]")
    console().print(table)


def _human(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)
