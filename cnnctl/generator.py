"""A trained GAN ready to draw images: a run folder -> its ``GAN`` and class names; image files out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError


def load_generator(folder: str | Path, best: bool = True):
    """-> (the run's ``GAN``, its class names). ``best``: best.keras (lowest FID) when the run has it."""
    from cnnctl.inference import load_keras_file
    from cnnctl.models.gans import GAN
    from cnnctl.train.rundir import RunDir

    folder = Path(folder)
    if not folder.is_dir():
        raise CnnctlError(f"{folder}: no such run directory", hint="give a folder written by `cnnctl train`")
    run = RunDir.open(folder)
    which = "best" if best and run.file("best.keras").is_file() else "model"
    path = run.file(f"{which}.keras")
    if not path.is_file():
        raise CnnctlError(f"{path} does not exist", hint="the run has not finished an epoch yet")
    model = load_keras_file(path, hint="the file is damaged; use the run's other .keras file (--last)")
    if not isinstance(model, GAN):
        raise CnnctlError(f"{folder} is not a GAN run (its model is {model.name!r})",
                          hint="give a run trained with task = \"generate\" (e.g. `cnnctl train dcgan-fashion`)")
    classes = run.read_json("classes.json") if run.file("classes.json").is_file() else []
    if model.num_classes and len(classes) != model.num_classes:
        raise CnnctlError(f"{path} draws {model.num_classes} classes but classes.json lists {len(classes)}",
                          hint="the run directory has been mixed with another run's files")
    return model, classes


def tile(images: np.ndarray, columns: int, pad: int = 2) -> np.ndarray:
    """uint8 ``(n, h, w, c)`` -> one uint8 picture of ``columns`` per row on white, ``pad`` px apart."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = im
    return canvas


def save_png(picture: np.ndarray, path: Path) -> None:
    from PIL import Image

    from cnnctl.files import atomic_write

    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), suffix=".png")


def write_images(images: np.ndarray, folder: Path, columns: int) -> list[Path]:
    """``folder/000000.png`` ... one per image, and ``folder/grid.png`` with all of them."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnctlError(f"cannot create {folder}: {e}", hint="choose another --out folder") from None
    files = []
    for i, im in enumerate(images):
        files.append(folder / f"{i:06d}.png")
        save_png(im, files[-1])
    save_png(tile(images, columns), folder / "grid.png")
    return files
