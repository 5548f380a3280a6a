"""``cnnctl segment``: per-pixel class maps of image files with a trained segmentation run."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def segment(
    images: list[str] = typer.Argument(..., metavar="IMAGE...", help="Image files of any size (PNG, JPEG, TIFF, ...)."),
    model: Path = typer.Option(..., "--model", "-m", help="A segmentation run directory (task = \"segment\")."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/segmented)."),
    margin: int = typer.Option(-1, "--margin", help="Context pixels dropped at each tile side (same-padding "
                               "networks; default: an eighth of the tile)."),
    instances: bool = typer.Option(False, "--instances", help="Also separate the objects: connected components "
                                   "of each predicted class, or of the foreground (the run's segment.instances) -> "
                                   "STEM.instances.png (16-bit ids), the count, and each object's most probable class."),
    last: bool = typer.Option(False, "--last", help="Use the run's last model.keras instead of best.keras."),
    json_: bool = typer.Option(False, "--json", help='Print [{"image", "mask", "overlay", "pixels": {class: n}}] '
                               'as JSON; --instances adds "instances", "instances_file" and "objects": '
                               '[{"id", "class", "pixels"}].'),
):
    """Segment images: DIR/STEM.mask.png (uint8 class ids: 0 = background, then the run's classes in
    order; for scene runs the SCENES.md encoding) and DIR/STEM.overlay.png (colours over the image).

    Images larger or smaller than the network's tile are segmented tile by tile (overlap-tile,
    mirrored borders). The run's [segment] table says how scores become labels, as for its test
    scores: segment.tta = "flip" averages the image with its mirror image; segment.vote = "objects"
    gives each connected object one class; segment.instances = "foreground" makes the --instances
    objects of the whole predicted foreground rather than of each class.

    Examples:

        cnnctl segment scene.png --model checkpoints/unet-scenes-free-20261203

        cnnctl segment cells/*.tif --model RUN --instances --json
    """
    from cnnctl.errors import CnnctlError

    for p in images:
        if not Path(p).is_file():
            raise CnnctlError(f"image {p} does not exist")
    quiet_tensorflow()
    import numpy as np
    from PIL import Image

    from cnnctl.data.segmentation import read_image
    from cnnctl.metrics.segmentation import components
    from cnnctl.segmenter import (
        labels_of,
        load_segmenter,
        object_classes,
        overlay,
        predict_probs,
    )

    net, classes, decoding = load_segmenter(model, best=not last)
    channels = int(net.input_shape[-1])
    folder = out or (model / "segmented")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in images:
        try:
            image = read_image(Path(p), channels)
        except Exception as e:  # noqa: BLE001 - a user's file: one clear message
            raise CnnctlError(f"cannot read image {p}: {e}", hint="give a readable image file") from None
        probs = predict_probs(net, image, None if margin < 0 else margin, flip=decoding.flip)
        labels = labels_of(probs, decoding)
        stem = Path(p).stem
        mask_path, overlay_path = folder / f"{stem}.mask.png", folder / f"{stem}.overlay.png"
        Image.fromarray(labels).save(mask_path)
        Image.fromarray(overlay(image, labels, len(classes))).save(overlay_path)
        counts = np.bincount(labels.reshape(-1), minlength=len(classes))
        row = {"image": p, "mask": str(mask_path), "overlay": str(overlay_path),
               "pixels": {c: int(n) for c, n in zip(classes, counts) if n}}
        if instances:
            ids = components(labels, decoding.instances)
            inst_path = folder / f"{stem}.instances.png"
            Image.fromarray(ids.astype(np.uint16)).save(inst_path)
            sizes = np.bincount(ids.reshape(-1), minlength=int(ids.max()) + 1)
            row.update(instances=int(ids.max()), instances_file=str(inst_path),
                       objects=[{"id": i + 1, "class": classes[c], "pixels": int(sizes[i + 1])}
                                for i, c in enumerate(object_classes(probs, ids))])
        rows.append(row)
    if json_:
        echo_json(rows)
        return
    out_console = console()
    from rich.markup import escape

    for r in rows:
        top = ", ".join(f"{c} {n}" for c, n in sorted(r["pixels"].items(), key=lambda kv: -kv[1]) if c != classes[0])
        extra = f"; {r['instances']} object(s)" if instances else ""
        out_console.print(f"[bold]{escape(r['image'])}[/]: {escape(top or 'background only')} px{extra} -> "
                          f"{escape(r['mask'])}", soft_wrap=True)
