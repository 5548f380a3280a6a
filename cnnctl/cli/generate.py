"""``cnnctl generate``: images from a trained GAN run (task = "generate")."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def generate(
    run: Path = typer.Argument(..., metavar="RUN", help="A GAN run directory (task = \"generate\")."),
    n: int = typer.Option(64, "--n", "-n", help="How many images."),
    label: str | None = typer.Option(None, "--label", "-l", help="Class of every image (conditional runs only)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise: the same seed gives the same images."),
    interpolate: int = typer.Option(0, "--interpolate", help="Walk straight lines in z between random points, "
                                    "this many images per line (DCGAN Fig. 4); --n counts the images."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/generated)."),
    last: bool = typer.Option(False, "--last", help="Use the run's last model.keras instead of best.keras."),
    json_: bool = typer.Option(False, "--json", help='Print [{"file", "label"}] as JSON.'),
):
    """Generate images: DIR/000000.png ... and DIR/grid.png (one row per line with --interpolate).

    Examples:

        cnnctl generate checkpoints/dcgan-fashion_mnist-20261203 --n 100

        cnnctl generate checkpoints/cgan_mlp-fashion_mnist-20261203 --label sneaker --json

        cnnctl generate RUN --interpolate 8 --n 64
    """
    from cnnctl.errors import CnnctlError

    if n <= 0 or interpolate < 0 or interpolate == 1:
        raise CnnctlError("--n must be positive and --interpolate 0 (off) or at least 2")
    quiet_tensorflow()
    import numpy as np

    from cnnctl.generator import load_generator, write_images

    model, classes = load_generator(run, best=not last)
    labels = None
    if label is not None:
        if not model.num_classes:
            raise CnnctlError(f"{run} is an unconditional GAN: it takes no --label",
                              hint="train a conditional model (cgan_mlp, or dcgan with --set model.conditional=true)")
        # exact, else case-insensitive ("sneaker" for Fashion-MNIST's "Sneaker")
        matches = [c for c in classes if c == label] or [c for c in classes if c.lower() == label.lower()]
        if len(matches) != 1:
            raise CnnctlError(f"unknown label {label!r}", hint="valid labels: " + ", ".join(classes))
        labels = np.full(n, classes.index(matches[0]))
    from cnnctl.tasks.generate import balanced_labels, fixed_noise
    from cnnctl.tasks.generate import generate as draw

    if interpolate:
        lines = max(1, n // interpolate)
        ends = fixed_noise(model, 2 * lines, seed).reshape(lines, 2, -1)
        t = np.linspace(0.0, 1.0, interpolate, dtype=np.float32)[None, :, None]
        z = ((1 - t) * ends[:, :1] + t * ends[:, 1:]).reshape(lines * interpolate, -1)   # (lines * steps, dim)
        if labels is None and model.num_classes:
            labels = np.repeat(np.arange(lines) % model.num_classes, interpolate)
        columns = interpolate
    else:
        z = fixed_noise(model, n, seed)
        columns = int(np.ceil(np.sqrt(n)))
    if labels is None:
        labels = balanced_labels(len(z), model.num_classes)
    else:
        labels = labels[: len(z)] if len(labels) >= len(z) else np.full(len(z), labels[0])
    images = draw(model, z, labels)
    folder = out or (run / "generated")
    files = write_images(images, folder, columns)
    rows = [{"file": str(f), "label": None if labels is None else classes[int(y)]}
            for f, y in zip(files, labels if labels is not None else [None] * len(files))]
    if json_:
        echo_json(rows)
        return
    console().print(f"{len(files)} images in {folder} (grid.png shows them all)", soft_wrap=True, markup=False)
