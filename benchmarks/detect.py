"""Detection on Fashion-MNIST free scenes: Fast R-CNN (selective search proposals) against Faster R-CNN
(a Region Proposal Network) on the same data, backbone, optimiser and epochs, side by side.

    python benchmarks/detect.py [--runs faster fast] [--out checkpoints/bench-detect] [--skip-train]
                                [--search-speed N] [--picture PNG]

Runs (each ``cnnctl train RECIPE --name RUN --seed S [--set ...]`` into OUT/RUN, unless --skip-train):

- ``faster``: ``detect-scenes``, Faster R-CNN (RPN at stride 8, anchors 27/55/109 x 0.5/1/2, approximate
  joint training);
- ``rcnn``: ``detect-scenes-rcnn``, R-CNN: selective search's proposals warped to 56x56 with context,
  each through the same backbone and fc layers, SVMs and ridge box regressors fitted after the epochs;
- ``fast``: ``detect-scenes-fast``, Fast R-CNN on selective search's proposals (OpenCV-contrib, "fast"
  mode), everything else as ``faster``;
- ``faster-alternating``: ``detect-scenes`` trained by the paper's 4-step alternating scheme (sec. 3.2;
  ``model.alternating = [2, 2, 1, 1]``: RPN, detector on its proposals, RPN on the frozen shared
  convolutions, detector again; 6 epochs in all, as ``faster``'s joint training);
- ``faster-pretrained`` / ``fast-pretrained``: the same two on the bundled Fashion-MNIST classifier cut
  as Fast R-CNN sec. 2.2 cuts VGG16 (``model.encoder = "fashion_cnn:fashion_mnist"``: its convolutions
  up to the last max pooling, which RoI pooling replaces; the detector's fc6 starts from its fc1).

Scenes: 128x128 canvases of 1-5 real Fashion-MNIST items in a synthetic layout (shared/SCENES.md);
test scenes are built from Fashion-MNIST's test images, which training never sees.

The table: VOC mAP@0.5 (area under the interpolated precision/recall curve; VOC 2007's 11-point
figure beside it), COCO mAP@[.5:.95] (pycocotools), the proposals' recall of the test boxes at IoU
0.5 and 0.7 and their number per image (all from each run's metrics.json), and seconds per image timed
here, one run after another in one process, on the first ``--time-scenes`` test scenes (batches of 8
as ``cnnctl detect``): with selective search (its memo cleared) and the networks alone.

``--search-speed N``: seconds per image of selective search alone on N test scenes (the memo cleared),
the CPU cost Fast R-CNN pays before its network runs.

``--calibration N``: on the first N test scenes, each run's mAP and what ``--score 0.5`` keeps (boxes
per image, their precision, the recall); an R-CNN run fitted before its scores were Platt-calibrated
is also calibrated in memory on its validation scenes and shown both ways.

``--picture PNG``: the first test scenes with each run's detections at score >= 0.5, one row per run.

Prints markdown tables (docs/detection.md carries them).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ENCODER = "model.encoder='fashion_cnn:fashion_mnist'"
RUNS = {   # name: (recipe, overrides, detector, proposals)
    "rcnn": ("detect-scenes-rcnn", [], "R-CNN (SVMs + box regression)", "selective search"),
    "faster": ("detect-scenes", [], "Faster R-CNN", "RPN"),
    "fast": ("detect-scenes-fast", [], "Fast R-CNN", "selective search"),
    "faster-alternating": ("detect-scenes", ["model.alternating=[2, 2, 1, 1]"],
                           "Faster R-CNN, 4-step alternating training", "RPN"),
    "faster-pretrained": ("detect-scenes", [ENCODER], "Faster R-CNN", "RPN"),
    "fast-pretrained": ("detect-scenes-fast", [ENCODER], "Fast R-CNN", "selective search"),
}


def train(out: Path, name: str, seed: int, extra: list[str]) -> float:
    recipe, overrides = RUNS[name][:2]
    if (out / name).exists():
        sys.exit(f"{out / name} exists: remove it or pass --skip-train")
    cmd = [sys.executable, "-m", "cnnctl", "train", recipe, "--out-dir", str(out), "--name", name,
           "--seed", str(seed)] + [x for o in overrides + extra for x in ("--set", o)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def search_speed(count: int) -> float:
    from cnnctl.data.detection import free_scenes
    from cnnctl.detection import selective_search as ss

    images = free_scenes((0, 0, count)).splits["test"].images
    ss._CACHE.clear()
    t0 = time.perf_counter()
    for image in images:
        ss.selective_search(image)
    return (time.perf_counter() - t0) / count


def timing(out: Path, names: list[str], count: int) -> dict[str, tuple[float, float]]:
    """Seconds per image of each run's detector on the first ``count`` test scenes, in this process, one
    run after another (batches of 8 as ``cnnctl detect``): -> {name: (whole, network)}: whole includes
    selective search (its memo cleared first), network is a second pass with the proposals memoised.
    One warm-up batch first (graph tracing)."""
    from cnnctl.data.detection import free_scenes
    from cnnctl.detection import selective_search as ss
    from cnnctl.detector import detect_images, load_detector

    images = free_scenes((0, 0, count)).splits["test"].images
    out_times = {}
    for name in names:
        model, _ = load_detector(out / name)
        detect_images(model, images[:8], batch=8)
        ss._CACHE.clear()
        t0 = time.perf_counter()
        detect_images(model, images, batch=8)
        whole = (time.perf_counter() - t0) / count
        t0 = time.perf_counter()
        detect_images(model, images, batch=8)
        out_times[name] = (whole, (time.perf_counter() - t0) / count)
    return out_times


def independent(out: Path, name: str, count: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Scenes written from SCENES.md by benchmarks/independent_scenes.py (its own random stream: the
    spec fixes the scenes' distribution, not the generator, so the two sets are different draws),
    detected by ``cnnctl detect --json`` and scored with the VOC rule -> ((their mAP@0.5, bootstrap SE),
    (mAP@0.5 on cnnctl's own first ``count`` test scenes, bootstrap SE))."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    import independent_scenes

    folder = out / f"independent-{count}"
    if not (folder / "boxes.csv").is_file():
        independent_scenes.write(folder, count)
    classes = json.loads((out / name / "classes.json").read_text())
    gt: dict[str, dict] = {}
    with (folder / "boxes.csv").open() as f:
        for row in csv.DictReader(f):
            g = gt.setdefault(str(folder / row["image"]), {"boxes": [], "classes": []})
            if row["label"]:
                x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
                g["boxes"].append([y0, x0, y1, x1])
                g["classes"].append(classes.index(row["label"]) + 1)
    paths = sorted(gt)
    found = subprocess.run([sys.executable, "-m", "cnnctl", "detect", *paths, "--model", str(out / name),
                            "--score", "0", "--json"], check=True, capture_output=True, text=True).stdout
    detections = []
    for row in json.loads(found):
        ds = row["detections"]
        detections.append({"boxes": np.array([[d["box"][1], d["box"][0], d["box"][3], d["box"][2]] for d in ds]).reshape(-1, 4),
                           "scores": np.array([d["score"] for d in ds]),
                           "classes": np.array([classes.index(d["label"]) + 1 for d in ds])})
    return with_error([gt[p] for p in paths], detections, len(classes)), own_scenes_map(out / name, count)


def with_error(gt: list, detections: list, num_classes: int, draws: int = 200) -> tuple[float, float]:
    """VOC mAP@0.5 and its standard error over images (bootstrap: images drawn with replacement)."""
    import numpy as np

    from cnnctl.metrics.detection import voc_ap

    rng = np.random.default_rng(0)
    boot = []
    for _ in range(draws):
        pick = rng.integers(0, len(gt), len(gt))
        boot.append(voc_ap([gt[i] for i in pick], [detections[i] for i in pick], num_classes)["map"])
    return voc_ap(gt, detections, num_classes)["map"], float(np.std(boot))


def own_scenes_map(run: Path, count: int) -> tuple[float, float]:
    """The run's model on cnnctl's own first ``count`` test scenes, scored the same way."""
    from cnnctl.data.detection import free_scenes
    from cnnctl.detector import detect_images, load_detector

    test = free_scenes((0, 0, count)).splits["test"]
    model, classes = load_detector(run)
    found = detect_images(model, test.images, min_score=0.0)
    gt = [{"boxes": b, "classes": c} for b, c in zip(test.boxes, test.classes)]
    return with_error(gt, found, len(classes))


def at_score(gt: list, found: list, threshold: float) -> tuple[float, float, float]:
    """Detections at score >= ``threshold`` -> (boxes per image, precision, recall): a box is correct
    when it takes a not yet taken ground-truth box of its class at IoU >= 0.5, best scores first."""
    import numpy as np

    from cnnctl.detection.boxes import iou

    kept = correct = 0
    for g, d in zip(gt, found):
        keep = np.asarray(d["scores"]) >= threshold
        order = np.argsort(-np.asarray(d["scores"])[keep])
        boxes, classes = np.asarray(d["boxes"])[keep][order], np.asarray(d["classes"])[keep][order]
        taken = np.zeros(len(g["boxes"]), bool)
        for box, c in zip(boxes, classes):
            same = (np.asarray(g["classes"]) == c) & ~taken
            if same.any():
                ious = np.where(same, np.asarray(iou(box[None].astype(np.float32),
                                                     np.asarray(g["boxes"], np.float32)))[0], 0.0)
                if ious.max() >= 0.5:
                    taken[int(np.argmax(ious))] = True
                    correct += 1
        kept += len(boxes)
    total = sum(len(g["boxes"]) for g in gt)
    return kept / len(gt), correct / max(kept, 1), correct / max(total, 1)


def calibration(out: Path, names: list[str], count: int) -> None:
    """What ``--score 0.5`` keeps for each run on the first ``count`` test scenes; an R-CNN run fitted
    before its scores were calibrated is also shown calibrated now, on its own validation scenes."""
    import tomllib

    from cnnctl.data.detection import free_scenes
    from cnnctl.detector import detect_images, load_detector
    from cnnctl.metrics.detection import voc_ap

    test = free_scenes((0, 0, count)).splits["test"]
    gt = [{"boxes": b, "classes": c} for b, c in zip(test.boxes, test.classes)]
    print("\n| run | scores | mAP@0.5 | boxes / image at score >= 0.5 | their precision | recall |"
          "\n|---|---|---:|---:|---:|---:|")
    for name in names:
        model, classes = load_detector(out / name)
        rows = [("as trained", model)]
        metrics = json.loads((out / name / "metrics.json").read_text())
        if hasattr(model, "calibrate_scores") and "platt_slope" not in metrics:
            cfg = tomllib.loads((out / name / "config.toml").read_text())
            val = free_scenes((0, cfg["data"]["scene_counts"][1], 0), cfg["data"].get("scene_seed", 0)).splits["val"]
            calibrated, _ = load_detector(out / name)
            calibrated.calibrate_scores(val.images, val.boxes, val.classes, log=lambda m: None)
            rows = [("sigmoid(SVM margin), as trained", model),
                    (f"Platt-calibrated now on its {len(val.images)} validation scenes", calibrated)]
        for label, m in rows:
            found = detect_images(m, test.images, min_score=0.0)
            per_image, precision, recall = at_score(gt, found, 0.5)
            print(f"| {name} | {label} | {voc_ap(gt, found, len(classes))['map']:.3f} | {per_image:.2f} | "
                  f"{precision:.3f} | {recall:.3f} |")
    print(f"\n({count} test scenes, {sum(len(g['boxes']) for g in gt)} boxes)")


def picture(out: Path, names: list[str], path: Path, count: int = 4) -> None:
    import numpy as np
    from PIL import Image

    from cnnctl.data.detection import free_scenes
    from cnnctl.detector import detect_images, draw_boxes, load_detector

    images = free_scenes((0, 0, count)).splits["test"].images
    rows = []
    for name in names:
        model, classes = load_detector(out / name)
        found = detect_images(model, images, min_score=0.5)
        rows.append(np.concatenate([draw_boxes(img, d, classes) for img, d in zip(images, found)], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", default="checkpoints/bench-detect")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="passed to every run")
    ap.add_argument("--search-speed", type=int, default=0)
    ap.add_argument("--picture", default="")
    ap.add_argument("--time-scenes", type=int, default=200, help="test scenes the s / image columns time")
    ap.add_argument("--calibration", type=int, default=0,
                    help="what --score 0.5 keeps for each run on this many test scenes (R-CNN also calibrated)")
    ap.add_argument("--independent", type=int, default=0,
                    help="score each run on this many scenes written by benchmarks/independent_scenes.py")
    a = ap.parse_args()
    out = Path(a.out)
    walls = {}
    for name in a.runs:
        if not a.skip_train:
            walls[name] = train(out, name, a.seed, a.overrides)
            print(f"{name}: {walls[name]:.0f} s", flush=True)

    times = timing(out, a.runs, a.time_scenes)
    print("\n| run | detector | proposals | backbone | train scenes | epochs | train s | params | test mAP@0.5 | "
          "VOC07 11-pt | COCO mAP | proposal recall @0.5 / @0.7 | proposals / image | s / image "
          "(selective search included) | s / image, network only |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.runs:
        run = out / name
        m = json.loads((run / "metrics.json").read_text())
        cfg = tomllib.loads((run / "config.toml").read_text())
        train_scenes = cfg["data"]["scene_counts"][0]
        wall = m["train_time_s"]          # fit time alone (the run's wall time adds data and evaluation)
        _, _, detector, proposals = RUNS[name]
        encoder = cfg["model"].get("encoder", "")
        backbone = f"{encoder} to its last pooling (stride 2)" if encoder else "VGG-style from scratch (stride 8)"
        if not cfg["model"].get("batch_norm", True):
            backbone += ", no batch norm"
        whole, network = times[name]
        print(f"| {name} | {detector} | {proposals} | {backbone} | {train_scenes} | {m['epochs_trained']} | {wall:.0f} | "
              f"{m['params']:,} | {m['test_map50']:.3f} | {m['test_map50_voc07']:.3f} | {m['test_coco_map']:.3f} | "
              f"{m['test_proposal_recall50']:.3f} / {m['test_proposal_recall70']:.3f} | "
              f"{m['test_proposals_per_image']:.0f} | {whole:.4f} | {network:.4f} |")
    if {"rcnn", "fast"} <= set(times):
        print(f"\nFast R-CNN against R-CNN at test: {times['rcnn'][0] / times['fast'][0]:.1f}x faster per image "
              f"with selective search, {times['rcnn'][1] / times['fast'][1]:.1f}x for the networks alone")
    if {"fast", "faster"} <= set(times):
        print(f"Faster R-CNN against Fast R-CNN at test: {times['fast'][0] / times['faster'][0]:.1f}x faster per image "
              f"(selective search included), {times['fast'][1] / times['faster'][1]:.1f}x for the networks alone")
    print("\nPaper figures (PASCAL VOC 2007 test, VGG16, K40 GPU): R-CNN 66.0 mAP at 47 s/image, Fast R-CNN "
          "66.9 at 0.32 s (+ ~2 s of CPU selective search), Faster R-CNN 69.9 at 0.2 s (Fast R-CNN Table 4, "
          "Faster R-CNN Tables 3 and 5).")

    if a.search_speed:
        print(f"\nselective search alone (fast mode, 128x128 scenes, one core): "
              f"{search_speed(a.search_speed):.4f} s / image over {a.search_speed} test scenes")
    if a.calibration:
        calibration(out, a.runs, a.calibration)
    if a.independent:
        print(f"\n| run | mAP@0.5 on {a.independent} test scenes written by benchmarks/independent_scenes.py "
              f"(cnnctl detect --json) | on cnnctl's own first {a.independent} test scenes | difference / its SE |"
              "\n|---|---:|---:|---:|")
        for name in a.runs:
            (theirs, se1), (ours, se2) = independent(out, name, a.independent)
            print(f"| {name} | {theirs:.3f} +- {se1:.3f} | {ours:.3f} +- {se2:.3f} | "
                  f"{(theirs - ours) / (se1 * se1 + se2 * se2) ** 0.5:+.2f} |", flush=True)
    if a.picture:
        picture(out, a.runs, Path(a.picture))
        print(f"\nwrote {a.picture}")


if __name__ == "__main__":
    main()
