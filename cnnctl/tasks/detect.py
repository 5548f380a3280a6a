"""Object detection (R-CNN, Fast R-CNN, Faster R-CNN) as a task on the one engine.

Data (``cnnctl.data.detection``): images with labelled boxes, held in memory, every image at the
network's input size (other sizes are resized, boxes with them, and predictions are mapped back to
the original pixels for scoring). A batch is ``(images (b, H, W, c) uint8, boxes (b, G, 4)
(y0, x0, y1, x1) with absent rows -1, classes (b, G) 1..K with absent rows 0)``, G the most boxes any
image has. Order and flips are functions of (seed, epoch, position), so a resumed run sees the
batches an uninterrupted one would; the model's seed generator (anchor and RoI sampling) is in the
resume backup.

Progress: the four losses of the two papers' eq. 1 (RPN objectness and boxes, detector classes and
boxes); after each epoch, VOC mAP@0.5 on the validation images (``val_map50``, the default monitor).

Evaluation: VOC mAP@0.5 (area under the interpolated PR curve; VOC 2007's 11-point figure too) with
per-class AP, COCO mAP@[.5:.95] by ``pycocotools``, the RPN's proposal recall at its test proposals
(IoU 0.5 and 0.7), and seconds per image.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import keras
import numpy as np

from cnnctl.data.pipeline import shard_by_example
from cnnctl.errors import CnnctlError
from cnnctl.tasks.base import (
    TASKS,
    ClassNamesRunFile,
    Field,
    Task,
    build_model,
    model_input_shape,
)

PAPER_REFERENCES = {   # PASCAL VOC 2007 test mAP (%), VGG-16, and seconds per image on a K40 GPU
    "R-CNN (Fast R-CNN Table 4, with box regression)": 66.0, "Fast R-CNN (Table 4)": 66.9,
    "Faster R-CNN (Table 3, VOC 07 data)": 69.9,
    "seconds per image: R-CNN": 47.0, "seconds per image: Fast R-CNN": 0.32, "seconds per image: Faster R-CNN": 0.2,
}


def fit_to(image: np.ndarray, boxes: np.ndarray, size: tuple[int, int], channels: int):
    """One image and its boxes at the network's (h, w) and channels -> (image, boxes, (sy, sx) scale)."""
    from PIL import Image

    if image.shape[-1] != channels:
        if channels == 1:
            image = np.asarray(Image.fromarray(image if image.shape[-1] == 3 else image[..., :3]).convert("L"))[..., None]
        else:
            image = np.repeat(image[..., :1], 3, axis=-1)
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image, boxes, (1.0, 1.0)
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    image = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR)).reshape(size[0], size[1], channels)
    sy, sx = size[0] / h, size[1] / w
    return image, boxes * np.array([sy, sx, sy, sx], np.float32), (sy, sx)


class DetectDataModule:
    """The engine's data protocol for detection."""

    def __init__(self, cfg, batch_size: int, seed: int, log=print):
        from cnnctl.data.detection import load_detection

        self.cfg, self.batch_size, self.seed, self.log = cfg, batch_size, seed, log
        unknown = [a for a in cfg.data.augment if a != "flip"]
        if unknown:
            raise CnnctlError(f"data.augment = {unknown} is not something detection does",
                              hint="detection takes flip (left-right, the boxes mirrored with the pixels)")
        raw = load_detection(cfg.data.path, cfg.data.scene_counts, cfg.data.scene_seed)
        for note in raw.notes:
            log(note)
        self.source, self.class_names = raw.source, raw.class_names
        splits = dict(raw.splits)
        if splits["train"] is None:
            raise CnnctlError(f"{cfg.data.path} has no training images", hint="give data with a training split")
        if splits["val"] is None and cfg.data.val_split > 0 and splits["train"].count > 1:
            splits["train"], splits["val"] = _hold_out(splits["train"], cfg.data.val_split, seed)
        if splits["test"] is None and splits["val"] is not None:
            log("no test split in the data: the validation split is used as the test set")
            splits["test"] = splits["val"]
        shape = model_input_shape(cfg)
        self.size, self.channels = (int(shape[0]), int(shape[1])), int(shape[-1])
        # the images as given, for scoring; with detect.tile the splits the network sees are their tiles
        self.whole = dict(splits)
        self.tile_overlap = int(cfg.detect.tile_overlap) if cfg.detect.tile else None
        if self.tile_overlap is not None and self.tile_overlap >= min(self.size):
            raise CnnctlError(f"detect.tile_overlap = {self.tile_overlap} px does not fit tiles of "
                              f"{self.size[1]}x{self.size[0]} (the network's input)",
                              hint=f"give an overlap below {min(self.size)}, at least the largest object's side")
        if self.tile_overlap is not None:
            splits = {name: None if sp is None else tile_split(sp, self.size, self.tile_overlap)
                      for name, sp in splits.items()}
        self.train, self.val, self.test = splits["train"], splits["val"], splits["test"]
        self.max_boxes = max(1, *(len(b) for sp in (self.train, self.val, self.test) if sp is not None
                                  for b in sp.boxes))
        # every image at the network's size: (images (n, h, w, c), boxes per image, scale per image)
        self.arrays = {name: self._fit(getattr(self, name)) for name in ("train", "val", "test")
                       if getattr(self, name) is not None}

    def _fit(self, sp):
        fitted = [fit_to(img, box, self.size, self.channels) for img, box in zip(sp.images, sp.boxes)]
        return (np.stack([f[0] for f in fitted]), [f[1] for f in fitted], np.array([f[2] for f in fitted]))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_examples(self) -> int:
        return self.train.count

    def steps(self, split: str = "train") -> int:
        sp = getattr(self, split)
        return 0 if sp is None else math.ceil(sp.count / self.batch_size)

    def describe(self) -> str:
        unit = "tiles" if self.tile_overlap is not None else "images"
        parts = [f"{sp.count} {s} {unit}" for s, sp in (("train", self.train), ("val", self.val),
                                                        ("test", self.test)) if sp is not None]
        boxes = sum(len(b) for b in self.train.boxes)
        return (", ".join(parts) + f" at {self.size[1]}x{self.size[0]}, {self.num_classes} classes, "
                f"{boxes} training boxes (at most {self.max_boxes} per image)")

    def padded(self, split: str, rows: np.ndarray, flips: np.ndarray | None = None):
        """rows (b,) -> (images, boxes (b, G, 4) -1 padded, classes (b, G) 0 padded)."""
        images, boxes, _ = self.arrays[split]
        sp = getattr(self, split)
        x = images[rows].copy()
        b = -np.ones((len(rows), self.max_boxes, 4), np.float32)
        c = np.zeros((len(rows), self.max_boxes), np.int32)
        for j, i in enumerate(rows):
            n = len(boxes[i])
            b[j, :n], c[j, :n] = boxes[i], sp.classes[i]
            if flips is not None and flips[j]:
                x[j] = x[j, :, ::-1]
                width = self.size[1]
                b[j, :n, 1], b[j, :n, 3] = width - boxes[i][:, 3], width - boxes[i][:, 1]
        return x, b, c

    def _dataset(self, split: str, order: np.ndarray, epoch: int | None, skip: int):
        import tensorflow as tf

        bsz = self.batch_size
        flip = epoch is not None and "flip" in self.cfg.data.augment
        starts = list(range(skip * bsz, len(order), bsz))

        def batches():
            for s in starts:
                rows = order[s:s + bsz]
                if epoch is not None and len(rows) < bsz:
                    # a training batch is always full: the last one is topped up from the epoch's start,
                    # so no replica of a distribution strategy gets an empty batch (batch norm's
                    # statistics of no image are NaN and would poison its moving averages)
                    rows = np.resize(np.concatenate([rows, order]), bsz)
                flips = np.random.default_rng([self.seed, 0xF11B, epoch, s]).random(len(rows)) < 0.5 if flip else None
                yield self.padded(split, rows, flips)

        h, w = self.size
        # training batches are always full (above): a static batch size lets the traced step specialise
        # its shapes (measured ~15% faster per Faster R-CNN step here); evaluation keeps a partial last one
        b = bsz if epoch is not None else None
        spec = (tf.TensorSpec((b, h, w, self.channels), tf.uint8),
                tf.TensorSpec((b, self.max_boxes, 4), tf.float32), tf.TensorSpec((b, self.max_boxes), tf.int32))
        return shard_by_example(tf.data.Dataset.from_generator(batches, output_signature=spec)).prefetch(2)

    def train_dataset(self, epoch: int, skip_batches: int = 0):
        from cnnctl.data.pipeline import epoch_permutation

        return self._dataset("train", epoch_permutation(self.train.count, self.seed, epoch), epoch, skip_batches)

    def eval_dataset(self, split: str = "val"):
        sp = getattr(self, split)
        return None if sp is None else self._dataset(split, np.arange(sp.count), None, 0)


def tile_split(sp, size: tuple[int, int], overlap: int):
    """Every image of ``sp`` cut into ``size`` tiles (``cnnctl.detection.tiles``), each tile with the boxes
    at least half inside it, clipped; names ``NAME@y,x``."""
    from cnnctl.data.detection import DetSplit
    from cnnctl.detection import tiles

    out = DetSplit([], [], [], [], None if sp.difficult is None else [])
    for i, image in enumerate(sp.images):
        padded = tiles.pad_to(image, size)
        name = sp.names[i] if sp.names else str(i)
        for y0, x0, _ in tiles.tile_grid(padded.shape[0], padded.shape[1], size, overlap):
            # the "classes" passed are row numbers, so the kept rows pick classes and difficult flags
            boxes, rows = tiles.boxes_in_tile(sp.boxes[i], np.arange(len(sp.boxes[i])), y0, x0, size)
            out.images.append(tiles.crop(padded, y0, x0, size))
            out.boxes.append(boxes)
            out.classes.append(np.asarray(sp.classes[i], np.int32)[rows])
            out.names.append(f"{name}@{y0},{x0}")
            if sp.difficult is not None:
                out.difficult.append(np.asarray(sp.difficult[i])[rows])
    return out


def _hold_out(sp, fraction: float, seed: int):
    from cnnctl.data.detection import DetSplit

    order = np.random.default_rng([seed, 0xDE7]).permutation(sp.count)
    held = np.sort(order[:max(1, round(fraction * sp.count))])
    kept = np.sort(order[len(held):])

    def take(idx):
        pick = lambda a: None if a is None else [a[i] for i in idx]
        return DetSplit(pick(sp.images), pick(sp.boxes), pick(sp.classes), pick(sp.names), pick(sp.difficult))
    return take(kept), take(held)


# ----------------------------------------------------------------------------- running the detector
def detect_arrays(model, images: np.ndarray, batch: int = 16) -> list[dict]:
    """images (n, H, W, c) uint8 at the network's size -> per image {"boxes", "scores", "classes"}.
    Batches go through the model's traced inference function (``cnnctl.inference``)."""
    from cnnctl.inference import inference_function

    forward = inference_function(model)
    out = []
    for s in range(0, len(images), batch):
        det = forward(images[s:s + batch])
        det = {k: np.asarray(v) for k, v in det.items()}
        for j in range(len(det["count"])):
            n = int(det["count"][j])
            out.append({"boxes": det["boxes"][j, :n], "scores": det["scores"][j, :n], "classes": det["classes"][j, :n]})
    return out


def to_original(detections: list[dict], scales: np.ndarray) -> list[dict]:
    """Boxes from the network's pixels back to each image's own (scales: (n, 2) of (sy, sx))."""
    return [{**d, "boxes": d["boxes"] / np.array([sy, sx, sy, sx], np.float32)} for d, (sy, sx) in zip(detections, scales)]


def score_split(model, data, split: str, full: bool = True) -> dict[str, Any]:
    """Detections on ``split`` scored against its boxes (in the images' own pixels)."""
    from cnnctl.detector import detect_images, propose_in_tiles
    from cnnctl.metrics.detection import coco_map, proposal_recall, voc_ap

    tiled = data.tile_overlap is not None
    sp = data.whole[split] if tiled else getattr(data, split)
    images, _, scales = data.arrays[split]
    t0 = time.perf_counter()
    if tiled:                                  # each whole image through its tiles
        found = detect_images(model, sp.images, batch=data.batch_size, tile_overlap=data.tile_overlap)
    else:
        found = to_original(detect_arrays(model, images, data.batch_size), scales)
    seconds = (time.perf_counter() - t0) / max(1, sp.count)
    gt = [{"boxes": b, "classes": c, "difficult": None if sp.difficult is None else sp.difficult[i]}
          for i, (b, c) in enumerate(zip(sp.boxes, sp.classes))]
    voc = voc_ap(gt, found, data.num_classes)
    out = {"map50": voc["map"]}
    if not full:
        return out
    out["map50_voc07"] = voc_ap(gt, found, data.num_classes, eleven_point=True)["map"]
    out["ap50_per_class"] = {name: (None if math.isnan(a) else a) for name, a in zip(data.class_names, voc["ap"])}
    out.update(coco_map(gt, found, data.class_names, [img.shape[:2] for img in sp.images]))
    if tiled:
        proposals = propose_in_tiles(model, sp.images, data.tile_overlap, data.batch_size)
    else:
        proposals = []
        for s in range(0, len(images), data.batch_size):
            boxes, valid = (np.asarray(t) for t in model.propose(images[s:s + data.batch_size]))
            proposals += [b[:v] for b, v in zip(boxes, valid)]
        proposals = [p / np.array([sy, sx, sy, sx], np.float32) for p, (sy, sx) in zip(proposals, scales)]
    out["proposal_recall50"] = proposal_recall(sp.boxes, proposals, 0.5)
    out["proposal_recall70"] = proposal_recall(sp.boxes, proposals, 0.7)
    out["proposals_per_image"] = float(np.mean([len(p) for p in proposals]))
    out["seconds_per_image"] = seconds
    return out


class ValidationMAP(keras.callbacks.Callback):
    """After each epoch: VOC mAP@0.5 on the validation images into the logs (``val_map50``)."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.data.val is not None:
            logs["val_map50"] = score_split(self.model, self.data, "val", full=False)["map50"]


@TASKS.register("detect", about="object detection: R-CNN, Fast R-CNN, Faster R-CNN; VOC and COCO mAP")
class DetectTask(ClassNamesRunFile, Task):
    name = "detect"
    progress_fields = (Field("loss", "loss"), Field("rpn_cls", "rpn_cls"), Field("rpn_box", "rpn_box"),
                       Field("cls", "cls"), Field("box", "box"), Field("map50", "mAP50"))
    monitor = "val_map50"
    modes: ClassVar[dict[str, str]] = {"loss": "min", "rpn_cls": "min", "rpn_box": "min", "cls": "min",
                                       "box": "min", "map50": "max"}

    def data(self, cfg, batch_size: int, log):
        return DetectDataModule(cfg, batch_size, cfg.train.seed, log)

    def build(self, cfg, data, log):
        from cnnctl.models.rcnn import RegionCNN

        model = build_model(cfg, data.num_classes)
        if not isinstance(model, RegionCNN):
            raise CnnctlError(f"{cfg.model.name} is not a detector", hint="use model.name = \"faster_rcnn\", \"fast_rcnn\" or \"rcnn\"")
        stages = getattr(model, "stage_epochs", None)
        if stages and sum(stages) != cfg.train.epochs:
            raise CnnctlError(f"model.alternating = {list(stages)} adds up to {sum(stages)} epochs, but train.epochs "
                              f"is {cfg.train.epochs}", hint=f"pass --epochs {sum(stages)} or change the steps' epochs")
        return model, []

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        model.compile(optimizer=optimizer, jit_compile=False)

    def epoch_callbacks(self, run, data, cfg) -> list:
        from cnnctl.models.rcnn_alternating import TrainingStages

        return [TrainingStages(), ValidationMAP(data)]

    def after_training(self, run, model, data, log) -> dict[str, Any]:
        """R-CNN's second stage (SVMs and box regressors on the fine-tuned network's features), fitted on
        the training images, then its scores calibrated on the validation images (when there are
        any), for ``model.keras`` and for ``best.keras`` (once when both hold the same network); the
        other detectors have none."""
        if not hasattr(model, "fit_second_stage"):
            return {}
        from cnnctl.train.rundir import atomic_save_model

        images, boxes, _ = data.arrays["train"]

        def second_stage(m):
            stats = m.fit_second_stage(images, boxes, data.train.classes, log)
            if data.val is not None:
                val_images, val_boxes, _ = data.arrays["val"]          # at the network's input size
                stats.update(m.calibrate_scores(val_images, val_boxes, data.val.classes, log))
            return stats

        out = second_stage(model)
        atomic_save_model(model, run.file("model.keras"))
        best_path = run.file("best.keras")
        if best_path.is_file():
            best = keras.saving.load_model(best_path, compile=False)
            if not best.fitted.numpy():
                networks = lambda m: m.backbone.get_weights() + m.detector.get_weights()
                if all(np.array_equal(a, b) for a, b in zip(networks(best), networks(model))):
                    atomic_save_model(model, best_path)           # the best epoch was the last
                else:
                    second_stage(best)
                    atomic_save_model(best, best_path)
        return out

    def final_metrics(self, model, data) -> dict[str, Any]:
        if data.test is None:
            return {}
        out = {f"test_{k}": v for k, v in score_split(model, data, "test").items()}
        out["test_images"] = data.whole["test"].count
        out["paper_references"] = PAPER_REFERENCES
        return out

    def summary_keys(self) -> tuple[str, ...]:
        return ("test_map50", "test_coco_map", "test_proposal_recall50", "test_seconds_per_image", "val_map50")
