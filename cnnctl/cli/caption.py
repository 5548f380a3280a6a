"""``cnnctl caption``: describe image files in a sentence, with a trained caption run or the bundled one."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def caption(
    images: list[str] = typer.Argument(..., metavar="IMAGE...", help="Image files (JPEG, PNG, BMP, GIF, WebP, TIFF)."),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="A caption run directory (task = \"caption\"); "
                                           "repeat it to decode with several runs as one ensemble (the mean of "
                                           "their word probabilities; the first run's settings). Default: the "
                                           "bundled captioner (see the README's model card)."),
    beam: int = typer.Option(0, "--beam", "-b", help="Beam width (1 = greedy). Default: the run's caption.beam (3 unless its recipe chose another)."),
    max_words: int = typer.Option(0, "--max-words", help="Longest caption. Default: the run's caption.max_words."),
    length_norm: bool | None = typer.Option(None, "--length-norm/--no-length-norm",
                                            help="Rank beams by log-probability per word."),
    last: bool = typer.Option(False, "--last", help="Use the run's last model.keras instead of best.keras."),
    json_: bool = typer.Option(False, "--json", help='Print [{"image", "caption", "log_prob"}] as JSON.'),
):
    """Caption images: one sentence each, with its log-probability.

    Examples:

        cnnctl caption photo.jpg

        cnnctl caption --model checkpoints/show_and_tell-scenes-grid-20261203 scenes/*.png --beam 5 --json

        cnnctl caption -m checkpoints/run-seed-0 -m checkpoints/run-seed-1 photo.jpg
    """
    from cnnctl.errors import CnnctlError

    if beam < 0 or max_words < 0:
        raise CnnctlError("--beam and --max-words must be positive")
    for p in images:
        if not Path(p).is_file():
            raise CnnctlError(f"image {p} does not exist")
    for m in model or []:
        if not Path(m).is_dir():
            raise CnnctlError(f"--model {m}: no such run directory", hint="give a folder written by `cnnctl train`")
    quiet_tensorflow()
    from cnnctl.captioner import Captioner

    first, *rest = model or [None]
    captioner = Captioner(first, best=not last)
    if rest:
        captioner.ensemble([Captioner(m, best=not last) for m in rest])
    rows = captioner.caption(images, beam or None, max_words or None, length_norm)
    if json_:
        echo_json(rows)
        return
    out = console()
    from rich.markup import escape

    for r in rows:
        out.print(f"[bold]{escape(r['image'])}[/]: {escape(r['caption'])}  [dim](log p = {r['log_prob']:.2f})[/]",
                  soft_wrap=True)
