"""``cnnctl detect``: labelled boxes on image files with a trained detection run."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def detect(
    images: list[str] = typer.Argument(..., metavar="IMAGE...", help="Image files (PNG, JPEG, TIFF, ...)."),
    model: Path = typer.Option(..., "--model", "-m", help="A detection run directory (task = \"detect\")."),
    score: float = typer.Option(0.5, "--score", help="Keep detections with at least this class probability."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/detected)."),
    last: bool = typer.Option(False, "--last", help="Use the run's last model.keras instead of best.keras."),
    json_: bool = typer.Option(False, "--json", help='Print [{"image", "detections": [{"box": [x_min, y_min, '
                               'x_max, y_max], "label", "score"}]}] as JSON (pixels of the input image).'),
):
    """Detect objects: DIR/STEM.boxes.png (each box with its label and score) and a table, or JSON.

    Images of another size than the network's input are resized for the network, or, for a run trained
    with detect.tile, cut into overlapping tiles of its size; boxes are given in the pixels of the
    image as it is on disk.

    Examples:

        cnnctl detect scene.png --model checkpoints/faster_rcnn-scenes-free-20261204

        cnnctl detect photos/*.jpg --model RUN --score 0.3 --json
    """
    from cnnctl.errors import CnnctlError

    if not 0.0 <= score <= 1.0:
        raise CnnctlError(f"--score {score} is not a probability", hint="give a value in [0, 1], e.g. 0.5")
    for p in images:
        if not Path(p).is_file():
            raise CnnctlError(f"image {p} does not exist")
    quiet_tensorflow()
    from PIL import Image

    from cnnctl.data.segmentation import read_image
    from cnnctl.detector import detect_images, draw_boxes, load_detector

    net, classes = load_detector(model, best=not last)
    channels = int(net.backbone.inputs[0].shape[-1])
    pixels = []
    for p in images:
        try:
            pixels.append(read_image(Path(p), channels))
        except Exception as e:  # noqa: BLE001 - a user's file: one clear message
            raise CnnctlError(f"cannot read image {p}: {e}", hint="give a readable image file") from None
    from cnnctl.config import load_run_config

    tiling = load_run_config(model).detect
    found = detect_images(net, pixels, min_score=score, tile_overlap=tiling.tile_overlap if tiling.tile else None)
    folder = out or (model / "detected")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, img, det in zip(images, pixels, found):
        drawn = folder / f"{Path(p).stem}.boxes.png"
        Image.fromarray(draw_boxes(img, det, classes)).save(drawn)
        rows.append({"image": p, "boxes_png": str(drawn), "detections": [
            {"box": [round(float(b[1]), 2), round(float(b[0]), 2), round(float(b[3]), 2), round(float(b[2]), 2)],
             "label": classes[int(k) - 1], "score": round(float(s), 4)}
            for b, s, k in zip(det["boxes"], det["scores"], det["classes"])]})
    if json_:
        echo_json([{"image": r["image"], "detections": r["detections"]} for r in rows])
        return
    from rich.markup import escape

    out_console = console()
    for r in rows:
        what = ", ".join(f"{d['label']} {d['score']:.2f}" for d in r["detections"]) or "nothing"
        out_console.print(f"[bold]{escape(r['image'])}[/]: {escape(what)} -> {escape(r['boxes_png'])}", soft_wrap=True)
