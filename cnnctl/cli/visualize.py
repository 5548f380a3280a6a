"""``cnnctl visualize KIND RUN_DIR [IMAGE...]``: pictures of what a trained network does, as PNG files."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, quiet_tensorflow, report_errors

app = typer.Typer(help="Pictures of what a trained network learned (PNG files in the run directory or --out).",
                  no_args_is_help=True)

RUN = typer.Argument(..., help="A run directory written by `cnnctl train` or `cnnctl finetune`.")
IMAGES = typer.Argument(None, help="Image files; default: the first test images of the run's data, one per class first.")
OUT = typer.Option(None, "--out", "-o", help="Folder for the PNG files (default: RUN_DIR/visualize).")
COUNT = typer.Option(8, "--count", "-n", help="How many test images when no IMAGE is given.")
BEST = typer.Option(False, "--best", help="Use best.keras instead of the last model.keras.")


def _setup(run_dir: Path, out: Path | None, best: bool):
    quiet_tensorflow()
    from cnnctl.inference import load_run_model

    model, classes, cfg = load_run_model(run_dir, "best" if best else "model")
    folder = Path(out) if out else Path(run_dir) / "visualize"
    folder.mkdir(parents=True, exist_ok=True)
    return model, classes, cfg, folder


def _log(message: str) -> None:
    console(stderr=True).print(message, style="dim", markup=False, soft_wrap=True)


@app.command("stn")
@report_errors
def stn(run_dir: Path = RUN, images: list[str] | None = IMAGES, out: Path | None = OUT, count: int = COUNT,
        best: bool = BEST):
    """Inputs beside the output of each spatial transformer: a trained RTS model undoes rotation and centres the object.

    Examples:

        cnnctl visualize stn checkpoints/st_cnn-distorted-20261123-120000

        cnnctl visualize stn checkpoints/my-st-run photo1.png photo2.png --out pictures/
    """
    model, classes, cfg, folder = _setup(run_dir, out, best)
    from cnnctl.viz.inputs import run_images
    from cnnctl.viz.stn import stn_grid

    x, labels, names = run_images(model, cfg, images or [], count, log=_log)
    path = folder / "stn.png"
    layers = stn_grid(model, x, path, names, classes, labels)
    console().print(f"wrote {path} ({len(x)} images x {', '.join(layers)})", markup=False, soft_wrap=True)
