"""``cnnctl export``: a run's network as SavedModel, ONNX, LiteRT or .keras, taking uint8 images."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from cnnctl.cli.common import console, quiet_tensorflow, report_errors


class Format(str, Enum):
    savedmodel = "savedmodel"
    onnx = "onnx"
    litert = "litert"
    keras = "keras"


@report_errors
def export(
    run: Path = typer.Argument(..., help="A run directory (classification, segmentation, GAN, captioning, detection)."),
    format_: Format = typer.Option(Format.savedmodel, "--format", "-f", help="savedmodel (TF Serving), onnx, litert (.tflite) or keras."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write it (default: RUN/export/model[.onnx|.tflite|.keras])."),
    last: bool = typer.Option(False, "--last", help="Export model.keras (the last epoch) instead of best.keras."),
):
    """Export a trained network; images go in as uint8 (batch, height, width, channels).

    Examples:

        cnnctl export checkpoints/RUN                      # SavedModel with a serving_default signature

        cnnctl export checkpoints/RUN --format onnx --out model.onnx

        cnnctl export checkpoints/RUN --format litert --out model.tflite
    """
    quiet_tensorflow()
    from cnnctl.export import export as run_export

    path, what = run_export(run, format_.value, out, best=not last)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    out_console = console()
    out_console.print(f"{what.task} run -> {format_.value}: {path} ({size / 1e6:.2f} MB)", soft_wrap=True, markup=False)
    for g in what.graphs:
        ins = ", ".join(f"{k} {spec.dtype.name}{_shape(spec.shape)}" for k, spec in g.inputs.items())
        out_console.print(f"  {g.name}: {ins}", soft_wrap=True, markup=False)
    if what.note:
        out_console.print(f"  {what.note}", soft_wrap=True, markup=False)


def _shape(shape) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"
