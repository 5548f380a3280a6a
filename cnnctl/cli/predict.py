"""``cnnctl predict``: top-k labels of image files from a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `cnnctl train`."),
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, BMP, GIF, WebP, TIFF)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many labels to show per image."),
    best: bool = typer.Option(False, "--best", help="Use best.keras instead of the last model.keras."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Classify images with a trained run: top-k labels with probabilities.

    Examples:

        cnnctl predict checkpoints/fashion_cnn-fashion_mnist-20261123-120000 shoe.png

        cnnctl predict checkpoints/my-run photos/*.jpg --top-k 3 --json
    """
    quiet_tensorflow()
    import numpy as np

    from cnnctl.data.images import ImageError, load_image
    from cnnctl.errors import CnnctlError
    from cnnctl.inference import input_spec, load_run_model, softmax

    if top_k <= 0:
        raise CnnctlError(f"--top-k {top_k} must be positive")
    for p in images:
        if not p.is_file():
            raise CnnctlError(f"image {p} does not exist")
    model, classes, _ = load_run_model(run_dir, "best" if best else "model")
    spec = input_spec(model)
    batch, problems = [], []
    for p in images:
        try:
            batch.append(load_image(str(p), spec.channels, (spec.height, spec.width)))
        except ImageError as e:
            problems.append((p, str(e)))
    if problems:
        raise CnnctlError("cannot read " + "; ".join(f"{p}: {why}" for p, why in problems),
                          hint="give JPEG, PNG, BMP, GIF, WebP or TIFF files")
    x = np.stack(batch).astype(np.float32)
    probs = softmax(np.asarray(model.predict(x, verbose=0, batch_size=64), dtype=np.float64))
    k = min(top_k, len(classes))
    results = []
    for p, row in zip(images, probs):
        order = np.argsort(-row)[:k]
        results.append({"image": str(p),
                        "top": [{"label": classes[i], "index": int(i), "probability": float(row[i])} for i in order]})
    if json_:
        echo_json(results)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"predictions ({spec.height}x{spec.width}x{spec.channels} input)")
    table.add_column("image", overflow="fold")
    table.add_column("rank", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for r in results:
        for rank, t in enumerate(r["top"], start=1):
            table.add_row(escape(r["image"]) if rank == 1 else "", str(rank), escape(t["label"]),
                          f"{t['probability']:.4f}")
    console().print(table)
