"""Detection on real images: Faster R-CNN on the DSB2018 nuclei (by tiles) and on Tux Paint's photo
composites (EfficientNet-Lite0 backbone), each with a picture of its test images.

    python benchmarks/detect_real.py [--out checkpoints/bench-detect-real] [--skip-train]
                                     [--tuxpaint-data checkpoints/data/human/tuxpaint-detect.csv]
                                     [--pictures docs/images] [--photos checkpoints/data/photos/photos.csv]

Runs (``cnnctl train RECIPE --name RUN --seed 0`` into OUT/RUN unless --skip-train):

- ``nuclei``: ``detect-nuclei``, trained on the top-left 384x384 of the bundled image, scored on the
  right-hand 512x128 strip, never seen in training, with 128x128 tiles (``detect.tile``);
- ``tuxpaint``: ``detect-tuxpaint`` on ``--tuxpaint-data`` (build it with ``cnnctl data tuxpaint DIR
  --detection``): one cut-out per photo, 17 categories, the caption split.

The table: test AP@0.5 (VOC rule), COCO mAP, proposal recall at IoU 0.5, training seconds and epochs
(from each run's metrics.json), and, at score >= 0.5, the boxes found against the true count. The
pictures (``--pictures DIR``): ``detect-nuclei.png``, the test strip with the true boxes (green) and
the detections at score >= 0.5 (red), turned to lie across (image, truth, detections from the top),
and ``detect-tuxpaint.png``, 8 test composites of different cut-outs with their detections at
score >= 0.5.

``--photos CSV`` (build it with ``cnnctl data photos DIR``): the ``tuxpaint`` run on real photos it
never saw, labelme's three Pascal VOC photos, sahi's terrain photo and imgaug's quokka, 18 boxes. Their
labels are mapped to the Tux Paint category a user would look for (``PHOTO_CATEGORY``: person ->
people, car and bus -> vehicles, bottle, chair and sofa -> household, animal -> animals). Printed: per
photo the detections at score >= 0.5 and how many true boxes they find (IoU >= 0.5, with the mapped
category, and with the category ignored); AP@0.5 over the photos with the mapped categories and class
agnostic. With --pictures also ``detect-photos.png``: sahi's and imgaug's photos (MIT; the VOC
photos are not for redistribution) at 256 px high, the true boxes in
green, the detections at score >= 0.5 in their category's colour with label and score.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def train(out: Path, name: str, recipe: str, extra: list[str]) -> None:
    if (out / name).exists():
        sys.exit(f"{out / name} exists: remove it or pass --skip-train")
    subprocess.run([sys.executable, "-m", "cnnctl", "train", recipe, "--out-dir", str(out), "--name", name,
                    "--seed", "0", *extra], check=True)


def found_at(run: Path, images: list, score: float = 0.5) -> list[dict]:
    from cnnctl.config import load_run_config
    from cnnctl.detector import detect_images, load_detector

    model, _ = load_detector(run)
    tiling = load_run_config(run).detect
    return detect_images(model, images, min_score=score, tile_overlap=tiling.tile_overlap if tiling.tile else None)


def outline(image: np.ndarray, boxes: np.ndarray, colour) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    for y0, x0, y1, x1 in np.round(boxes).astype(int):
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h) - 1, min(x1, w) - 1
        out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = colour
        out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = colour
    return out


# The real photos' labels (VOC's, sahi's, imgaug's) -> the Tux Paint top-level stamp folder that holds
# such things (detect-tuxpaint's classes).
PHOTO_CATEGORY = {"person": "people", "car": "vehicles", "bus": "vehicles", "bottle": "household",
                  "chair": "household", "sofa": "household", "animal": "animals"}

# Only the MIT-licensed photos go into a picture that ships in docs/; the VOC photos (Flickr, VOC terms
# of use) are for evaluation, not redistribution (labelme's NOTICE).
PICTURED = ("terrain2", "quokka")


def on_photos(run: Path, csv_path: str, pictures: str) -> None:
    """The tuxpaint detector on real photos (see the module docstring)."""
    from cnnctl.data.detection import load_detection
    from cnnctl.metrics.detection import _iou, voc_ap

    photos = load_detection(csv_path)
    sp = photos.splits["test"]
    classes = json.loads((run / "classes.json").read_text())
    # true classes in the run's numbering (1..K), through the label map
    truth = [np.array([1 + classes.index(PHOTO_CATEGORY[photos.class_names[c - 1]]) for c in cs], np.int32)
             for cs in sp.classes]
    scored = found_at(run, sp.images, score=0.0)
    print(f"\n{run.name} on {sp.count} real photos ({csv_path}), {sum(len(b) for b in sp.boxes)} true boxes; "
          "found = a true box matched at IoU >= 0.5 by a detection at score >= 0.5\n")
    print("| photo | true boxes | detections at score >= 0.5 | found, category right "
          "| found, category ignored |\n|---|---|---|---:|---:|")
    for name, boxes, cls, labels, det in zip(sp.names, sp.boxes, truth, sp.classes, scored):
        keep = det["scores"] >= 0.5
        overlap = _iou(boxes, det["boxes"][keep]) >= 0.5                   # (true, detections)
        right = overlap & (cls[:, None] == det["classes"][keep][None, :])
        named = ", ".join(f"{n} {photos.class_names[k - 1]}" for k, n in zip(*np.unique(labels, return_counts=True)))
        said = ", ".join(f"{classes[k - 1]} {s:.2f}" for k, s in zip(det["classes"][keep], det["scores"][keep]))
        print(f"| {name} | {named} | {said or '-'} | {int(right.any(axis=1).sum())} of {len(boxes)} "
              f"| {int(overlap.any(axis=1).sum())} of {len(boxes)} |")
    gt = [{"boxes": b, "classes": c} for b, c in zip(sp.boxes, truth)]
    mapped = voc_ap(gt, scored, len(classes))
    present = sorted({int(k) for c in truth for k in c})
    per = ", ".join(f"{classes[k - 1]} {mapped['ap'][k - 1]:.3f}" for k in present)
    agnostic = voc_ap([{"boxes": b, "classes": np.ones(len(b), np.int32)} for b in sp.boxes],
                      [{**d, "classes": np.ones(len(d["scores"]), np.int32)} for d in scored], 1)
    print(f"\nAP@0.5 over the photos, mapped categories: mean {mapped['map']:.3f} ({per}); "
          f"category ignored: {agnostic['map']:.3f}")
    if pictures:
        from PIL import Image

        from cnnctl.detector import draw_boxes

        panels = []
        for name, image, boxes, det in zip(sp.names, sp.images, sp.boxes, scored):
            if name not in PICTURED:
                continue
            f = 256 / image.shape[0]
            image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
            small = np.asarray(Image.fromarray(image).resize((round(image.shape[1] * f), 256), Image.BILINEAR))
            shown = {k: v[det["scores"] >= 0.5] for k, v in det.items()}
            shown["boxes"] = shown["boxes"] * f
            panels += [draw_boxes(outline(small, boxes * f, (0, 255, 0)), shown, classes),
                       np.full((256, 8, 3), 255, np.uint8)]
        Image.fromarray(np.concatenate(panels[:-1], axis=1)).save(Path(pictures) / "detect-photos.png")
        print(f"picture: {Path(pictures) / 'detect-photos.png'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="checkpoints/bench-detect-real")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--tuxpaint-data", default="checkpoints/data/human/tuxpaint-detect.csv")
    ap.add_argument("--pictures", default="")
    ap.add_argument("--photos", default="", help="the CSV of cnnctl data photos: show the tuxpaint run on it")
    ap.add_argument("--runs", nargs="+", choices=["nuclei", "tuxpaint"], default=["nuclei", "tuxpaint"])
    a = ap.parse_args()
    out = Path(a.out)
    if not a.skip_train:
        if "nuclei" in a.runs:
            train(out, "nuclei", "detect-nuclei", [])
        if "tuxpaint" in a.runs:
            train(out, "tuxpaint", "detect-tuxpaint", ["--data", a.tuxpaint_data])

    from cnnctl.data.detection import load_detection, nuclei

    data = {}
    if "nuclei" in a.runs:
        data["nuclei"] = nuclei().splits["test"]
    if "tuxpaint" in a.runs:
        data["tuxpaint"] = load_detection(a.tuxpaint_data).splits["test"]
    print("\n| run | test images | true boxes | test AP@0.5 | COCO mAP | proposal recall @0.5 | boxes at score >= 0.5 "
          "| epochs | train s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    found = {}
    for name, sp in data.items():
        m = json.loads((out / name / "metrics.json").read_text())
        found[name] = found_at(out / name, sp.images)
        print(f"| {name} | {sp.count} | {sum(len(b) for b in sp.boxes)} | {m['test_map50']:.3f} | "
              f"{m['test_coco_map']:.3f} | {m['test_proposal_recall50']:.3f} | "
              f"{sum(len(f['boxes']) for f in found[name])} | {m['epochs_trained']} | {m['train_time_s']:.0f} |")
    if a.pictures:
        from PIL import Image

        from cnnctl.detector import draw_boxes

        folder = Path(a.pictures)
        if "nuclei" in found:
            strip = np.repeat(data["nuclei"].images[0], 3, axis=-1)               # (512, 128, 3)
            truth = outline(strip, data["nuclei"].boxes[0], (0, 255, 0))
            dets = outline(strip, found["nuclei"][0]["boxes"], (255, 0, 0))
            gap = np.full((strip.shape[0], 8, 3), 255, np.uint8)
            # the 512x128 strip lies on its side: three panels, the image, the truth, the detections
            panel = np.concatenate([strip, gap, truth, gap, dets], axis=1)
            Image.fromarray(np.ascontiguousarray(np.rot90(panel, k=-1))).save(folder / "detect-nuclei.png")
            print(f"\npicture: {folder / 'detect-nuclei.png'}")
        if "tuxpaint" in found:
            classes = json.loads((out / "tuxpaint" / "classes.json").read_text())
            # every 4th test composite: 8 different cut-outs (each is pasted onto 4 photos)
            picked = range(0, min(32, data["tuxpaint"].count), 4)
            tiles = [draw_boxes(data["tuxpaint"].images[i], found["tuxpaint"][i], classes) for i in picked]
            Image.fromarray(np.concatenate(tiles, axis=1)).save(folder / "detect-tuxpaint.png")
            print(f"\npicture: {folder / 'detect-tuxpaint.png'}")
    if a.photos and "tuxpaint" in a.runs:
        on_photos(out / "tuxpaint", a.photos, a.pictures)


if __name__ == "__main__":
    main()
