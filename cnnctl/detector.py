"""Running a trained detection run on image files: ``cnnctl detect`` and the benchmark share this."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError


def load_detector(folder: str | Path, best: bool = True):
    """-> (the run's detector, its class names). ``best``: best.keras (highest val mAP) when present."""
    import tomllib

    from cnnctl.inference import load_keras_file
    from cnnctl.train.rundir import RunDir

    folder = Path(folder)
    if not folder.is_dir():
        raise CnnctlError(f"{folder}: no such run directory", hint="give a folder written by `cnnctl train`")
    run = RunDir.open(folder)
    try:
        task = tomllib.loads(run.file("config.toml").read_text()).get("task")
    except (OSError, tomllib.TOMLDecodeError):
        task = None
    if task != "detect":
        raise CnnctlError(f"{folder} is not a detection run (its task is {task!r})",
                          hint="give a run trained with task = \"detect\" (e.g. `cnnctl train detect-scenes`)")
    which = "best" if best and run.file("best.keras").is_file() else "model"
    path = run.file(f"{which}.keras")
    if not path.is_file():
        raise CnnctlError(f"{path} does not exist", hint="the run has not finished an epoch yet")
    model = load_keras_file(path, hint="the file is damaged; use the run's other .keras file (--last)")
    return model, run.read_json("classes.json")


def detect_images(model, images: list[np.ndarray], min_score: float = 0.0, batch: int = 16,
                  tile_overlap: int | None = None) -> list[dict]:
    """Images of any size (H, W, c) uint8 -> per image {"boxes" (d, 4) (y0, x0, y1, x1) in its own pixels,
    "scores", "classes" 1..K}, detections at ``min_score`` or above, best first. Each image is resized
    to the network's input, or, with ``tile_overlap`` (a run trained with ``detect.tile``), cut into
    input-sized tiles overlapping by that many pixels (``cnnctl.detection.tiles``)."""
    from cnnctl.tasks.detect import detect_arrays, fit_to, to_original

    h, w = model.image_size                        # R-CNN's backbone takes warped regions, not images
    c = int(model.backbone.inputs[0].shape[-1])
    if tile_overlap is not None:
        def run(tiles):
            return detect_arrays(model, tiles, batch)

        found = in_tiles(images, (h, w), c, tile_overlap, run, batch)
    else:
        fitted = [fit_to(img, np.zeros((0, 4), np.float32), (h, w), c) for img in images]
        found = to_original(detect_arrays(model, np.stack([f[0] for f in fitted]), batch),
                            np.array([f[2] for f in fitted]))
    return [{k: v[d["scores"] >= min_score] for k, v in d.items()} for d in found]


def propose_in_tiles(model, images: list[np.ndarray], tile_overlap: int, batch: int = 16) -> list[np.ndarray]:
    """The detector's proposals on each image's tiles -> per image (n, 4) in its own pixels."""
    h, w = model.image_size
    c = int(model.backbone.inputs[0].shape[-1])

    def run(tiles):
        boxes, valid = (np.asarray(t) for t in model.propose(tiles))
        return [{"boxes": b[:v]} for b, v in zip(boxes, valid)]

    return [d["boxes"] for d in in_tiles(images, (h, w), c, tile_overlap, run, batch)]


def in_tiles(images: list[np.ndarray], size: tuple[int, int], channels: int, overlap: int, run, batch: int) -> list[dict]:
    """``run`` (tiles (n, h, w, c) uint8 -> per tile {"boxes" (d, 4) in tile pixels, other per-box arrays})
    over each image's tiles -> per image the same dict in image pixels: the boxes each tile's core keeps
    (clipped to the image), best score first when there are scores."""
    from cnnctl.detection import tiles
    from cnnctl.tasks.detect import fit_to

    jobs, crops = [], []
    for i, image in enumerate(images):
        image = fit_to(image, np.zeros((0, 4), np.float32), image.shape[:2], channels)[0]   # channels only
        padded = tiles.pad_to(image, size)
        for y0, x0, core in tiles.tile_grid(padded.shape[0], padded.shape[1], size, overlap):
            jobs.append((i, y0, x0, core))
            crops.append(tiles.crop(padded, y0, x0, size))
    results = []
    for s in range(0, len(crops), batch):
        results += run(np.stack(crops[s:s + batch]))
    parts: list[list[dict]] = [[] for _ in images]
    for (i, y0, x0, core), found in zip(jobs, results):
        boxes = np.asarray(found["boxes"], np.float32).reshape(-1, 4) + np.array([y0, x0, y0, x0], np.float32)
        keep = tiles.in_core(boxes, core)
        parts[i].append({k: (boxes if k == "boxes" else np.asarray(v))[keep] for k, v in found.items()})
    out = []
    for image, pieces in zip(images, parts):
        merged = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
        h, w = image.shape[:2]
        merged["boxes"] = np.minimum(merged["boxes"], np.array([h, w, h, w], np.float32))   # the padding
        if "scores" in merged:
            order = np.argsort(-merged["scores"], kind="stable")
            merged = {k: v[order] for k, v in merged.items()}
        out.append(merged)
    return out


def draw_boxes(image: np.ndarray, detection: dict, class_names: list[str]) -> np.ndarray:
    """The image (as RGB, enlarged to at least 256 px on its short side so labels stay legible) with each
    box in its class's colour and ``label score`` above it."""
    from PIL import Image, ImageDraw

    from cnnctl.segmenter import palette

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    scale = max(1, int(np.ceil(256 / min(rgb.shape[:2]))))
    pil = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(pil)
    colours = palette(len(class_names) + 1)
    for (y0, x0, y1, x1), s, k in zip(detection["boxes"], detection["scores"], detection["classes"]):
        colour = tuple(int(v) for v in colours[int(k)])
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=colour, width=2)
        text = f"{class_names[int(k) - 1]} {s:.2f}"
        top = max(0, y0 * scale - 11)
        draw.rectangle([x0 * scale, top, x0 * scale + 6 * len(text) + 2, top + 10], fill=colour)
        draw.text((x0 * scale + 1, top - 1), text, fill=(0, 0, 0))
    return np.asarray(pil)
