"""Semantic segmentation (U-Net, Ronneberger et al. 2015) as a task on the one engine.

Data: images with per-pixel class labels (``cnnctl.data.segmentation``), held in memory. A network
maps an input tile of side T to a label map of side O (O = T with "same" padding; the paper's
valid-padding U-Net gives 388 for 572). Training examples are *windows*: output squares of side O
on an image, with the T-side input around them taken from the image mirrored at its borders (the
paper's overlap-tile strategy, Fig. 2). By default the windows tile every image; with
``segment.tiles_per_epoch = N`` each epoch draws N windows at random positions instead (for a few
large images). Window order, positions and flips are functions of (seed, epoch, position), so a
resumed run sees the batches an uninterrupted one would.

Loss: per-pixel softmax cross-entropy, each pixel weighted by the paper's weight map
(``segment.weight_map``: class balance + the border term between touching instances) or by 1;
pixels outside the image (a window hanging over its edge) weigh 0. The loss and the bar's pixel
accuracy and mIoU are ``cnnctl.tasks.pixel_objectives``' fast versions of Keras' own.

Evaluation: overlap-tile prediction of every test image whole, decoded as the run's ``[segment]``
table says (``cnnctl.segmenter.Decoding``: flip TTA, one class per object; the bar's validation mIoU
is always the plain per-pixel argmax) -> pixel accuracy, per-class IoU, mIoU and Dice from the
confusion matrix; with instance labels, instance F1 at IoU 0.5 and the DSB2018 score of the
objects ``segment.instances`` makes (components of each class, or of the foreground;
``cnnctl.metrics.segmentation``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

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
from cnnctl.tasks.pixel_objectives import PixelAccuracy, PixelCrossEntropy, PixelMeanIoU

PAPER_REFERENCES = {  # Ronneberger et al. 2015, Table 2 (ISBI cell tracking challenge 2015), IoU
    "PhC-U373": 0.9203, "DIC-HeLa": 0.7756,
}


def output_side(cfg) -> int:
    """The label-map side the recipe's network gives for its input tile (its registry entry says how)."""
    from cnnctl.models import MODELS

    side = model_input_shape(cfg)[0]
    fn = MODELS.get(cfg.model.name).meta.get("output_side")
    if fn is None:
        return side
    options = {k: v for k, v in cfg.model.options.items() if k != "input_shape"}
    try:
        return int(fn(side, **options))
    except ValueError as e:
        raise CnnctlError(f"{cfg.model.name}: {e}", hint="set model.input_shape to a size the network takes") from None


class Windows:
    """Where the windows of one split are: ``(image, y, x)`` rows of output squares of side ``out``
    on the images, and the images/labels/weights padded so that every window's input is a slice."""

    def __init__(self, images, labels, weights, in_side: int, out_side: int):
        """images: (n, H, W, c) or a list of (H_i, W_i, c); labels, weights: the same without c
        (``weights`` None: every pixel weighs 1)."""
        self.in_side, self.out_side = in_side, out_side
        self.margin = m = (in_side - out_side) // 2
        self.sizes = [lab.shape for lab in labels]                      # (H_i, W_i) per image
        if weights is None:
            weights = [None] * len(self.sizes)
        self.images, self.labels, self.weights = [], [], []
        for img, lab, wt in zip(images, labels, weights):
            h, w = lab.shape
            extra_h, extra_w = max(0, out_side - h), max(0, out_side - w)
            if (extra_h or extra_w) and wt is None:
                wt = np.ones((h, w), np.float32)                        # the overhang gets weight 0 below
            if not (m or extra_h or extra_w):                           # the windows are slices already
                self.images.append(img)
                self.labels.append(lab)
                self.weights.append(wt)
                continue
            mode = "reflect" if min(h, w) > 1 else "edge"
            self.images.append(np.pad(img, ((m, m + extra_h), (m, m + extra_w), (0, 0)), mode=mode))
            # labels and weights mirrored like the image (a deformation may pull them in from the
            # margin), then 0-weight beyond an image smaller than the window
            edge = ((m, m), (m, m))
            self.labels.append(np.pad(np.pad(lab, edge, mode=mode), ((0, extra_h), (0, extra_w))))
            self.weights.append(None if wt is None else
                                np.pad(np.pad(wt, edge, mode=mode), ((0, extra_h), (0, extra_w))))
        # every pixel weighs 1 (no weight map, class balance, void pixels or overhang): batches then
        # carry no weights, which spares the loss a multiply over every pixel
        self.unweighted = all(w is None or float(w.min()) == 1.0 == float(w.max()) for w in self.weights)
        self.grid = np.array([(i, y, x) for i, (h, w) in enumerate(self.sizes) for y in _starts(h, out_side)
                              for x in _starts(w, out_side)], np.int64).reshape(-1, 3)

    def random(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` windows at uniform positions inside the images (images drawn uniformly)."""
        i = rng.integers(0, len(self.sizes), count)
        room = np.array([(max(1, h - self.out_side + 1), max(1, w - self.out_side + 1)) for h, w in self.sizes])
        y = (rng.random(count) * room[i, 0]).astype(np.int64)
        x = (rng.random(count) * room[i, 1]).astype(np.int64)
        return np.stack([i, y, x], axis=1)

    def batch(self, rows: np.ndarray, flips: np.ndarray | None = None, fields: list | None = None):
        """rows (b, 3) -> (inputs (b, T, T, c) uint8, labels (b, O, O) int32, weights (b, O, O) float32,
        or None when every pixel weighs 1).

        ``fields``: per row a (2, T, T) elastic displacement field (or None): the input tile, its
        labels and its weights move together (bilinear for the image, nearest for the others)."""
        from cnnctl.data.elastic import warp

        t, o, m = self.in_side, self.out_side, self.margin
        xs, ys, ws = [], [], []
        for j, (i, y, xx) in enumerate(rows):
            img, lab = self.images[i][y:y + t, xx:xx + t], self.labels[i][y:y + t, xx:xx + t]
            wt = None if self.unweighted else self._weights(i)[y:y + t, xx:xx + t]
            if fields is not None and fields[j] is not None:
                img, lab = warp(img, fields[j], order=1), warp(lab, fields[j], order=0)
                if wt is not None:            # weights of all ones stay all ones
                    wt = warp(wt, fields[j], order=0)
            xs.append(img)
            ys.append(lab[m:m + o, m:m + o])
            if wt is not None:
                ws.append(wt[m:m + o, m:m + o])
        x, y_ = np.stack(xs), np.stack(ys).astype(np.int32)
        w = np.stack(ws) if ws else None
        if flips is not None:             # (b, 2) bools: vertical, horizontal; image and labels alike
            for j, (fv, fh) in enumerate(flips):
                for flip, axis in ((fv, 0), (fh, 1)):
                    if flip:
                        x[j], y_[j] = np.flip(x[j], axis), np.flip(y_[j], axis)
                        if w is not None:
                            w[j] = np.flip(w[j], axis)
        return x, y_, w

    def _weights(self, i: int) -> np.ndarray:
        """Image i's (padded) weights; ones where it was given none."""
        wt = self.weights[i]
        return wt if wt is not None else np.ones(self.labels[i].shape, np.float32)


def _starts(size: int, window: int) -> list[int]:
    """Window origins covering [0, size): every ``window`` pixels, the last flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, window))
    return starts if starts[-1] == size - window else [*starts, size - window]


class SegmentDataModule:
    """The engine's data protocol for segmentation: ``train`` / ``val`` / ``test`` splits, steps, datasets."""

    def __init__(self, cfg, batch_size: int, seed: int, log=print):
        from cnnctl.data.segmentation import VOID, is_free_scenes, load_segmentation
        from cnnctl.data.weight_map import class_balance

        self.cfg, self.batch_size, self.seed, self.log = cfg, batch_size, seed, log
        unknown = [a for a in cfg.data.augment if a not in ("flip", "vflip", "elastic")]
        if unknown:
            raise CnnctlError(f"data.augment = {unknown} is not something segmentation does",
                              hint="segmentation takes flip (left-right), vflip (also upside down) and elastic")
        scene_items = cfg.data.scene_items
        if scene_items and not is_free_scenes(cfg.data.path):
            # a scenes recipe pointed at the user's own data (--data DIR): its packing means nothing there
            log(f"data.scene_items packs scenes:free training scenes: not used for {cfg.data.path}")
            scene_items = []
        raw = load_segmentation(cfg.data.path, cfg.data.scene_counts, cfg.data.scene_seed, scene_items)
        self.source, self.class_names = raw.source, raw.class_names
        splits = dict(raw.splits)
        if splits["val"] is None and cfg.data.val_split > 0 and splits["train"].count > 1:
            splits["train"], splits["val"] = _hold_out(splits["train"], cfg.data.val_split, seed)
        if splits["test"] is None and splits["val"] is not None:
            log("no test split in the data: the validation split is used as the test set")
            splits["test"] = splits["val"]
        self.train, self.val, self.test = splits["train"], splits["val"], splits["test"]
        for name in ("train", "val", "test"):
            sp = getattr(self, name)
            top = max((int(lab[lab != VOID].max(initial=0)) for lab in sp.labels), default=0) if sp is not None else 0
            if top >= len(self.class_names):
                raise CnnctlError(f"the {name} split has label {top}, beyond the "
                                  f"{len(self.class_names)} classes", hint="fix the masks or classes.txt")
        self.in_side = model_input_shape(cfg)[0]
        self.out_side = output_side(cfg)
        channels = model_input_shape(cfg)[-1]
        have = self.train.images[0].shape[-1]
        if have != channels:
            raise CnnctlError(f"the images have {have} channel(s), the network takes {channels}",
                              hint=f"set model.input_shape = [{self.in_side}, {self.in_side}, "
                                   f"{have}]")
        sc = cfg.segment
        self.class_weights = np.ones(self.num_classes)
        if sc.class_balance or sc.weight_map:
            labelled = np.concatenate([lab[lab != VOID] for lab in self.train.labels])
            self.class_weights = class_balance(labelled, self.num_classes)
        self.windows = {name: self._windows(getattr(self, name), sc) for name in ("train", "val")
                        if getattr(self, name) is not None}

    def _windows(self, sp, sc) -> Windows:
        from cnnctl.data.segmentation import VOID
        from cnnctl.data.weight_map import weight_map

        if sc.weight_map and sp.instances is None:
            raise CnnctlError("segment.weight_map needs instance labels, and this data has none",
                              hint="use data with instances (nuclei, scenes:free) or set segment.weight_map = false")
        # void pixels (Pascal VOC's 255) become background with weight 0: never trained on
        void = [bool((lab == VOID).any()) for lab in sp.labels]
        labels = [np.where(lab == VOID, 0, lab).astype(np.uint8) if v else lab.astype(np.uint8, copy=False)
                  for lab, v in zip(sp.labels, void)]
        if sc.weight_map or sc.class_balance:
            weights = [weight_map(lab, inst if sc.weight_map else None, self.class_weights, sc.w0, sc.sigma)
                       for lab, inst in zip(labels, sp.instances if sp.instances is not None else [None] * sp.count)]
        elif not any(void):
            return Windows(sp.images, labels, None, self.in_side, self.out_side)   # every pixel weighs 1
        else:
            weights = [np.ones(lab.shape, np.float32) for lab in labels]
        weights = [np.where(raw == VOID, 0, w).astype(np.float32) if v else w.astype(np.float32, copy=False)
                   for raw, w, v in zip(sp.labels, weights, void)]
        return Windows(sp.images, labels, weights, self.in_side, self.out_side)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _count(self, split: str) -> int:
        if split == "train" and self.cfg.segment.tiles_per_epoch:
            return self.cfg.segment.tiles_per_epoch
        w = self.windows.get(split)
        return 0 if w is None else len(w.grid)

    def steps(self, split: str = "train") -> int:
        return math.ceil(self._count(split) / self.batch_size)

    @property
    def train_examples(self) -> int:
        """What the engine's images/s counts: training windows per epoch."""
        return self._count("train")

    def describe(self) -> str:
        parts = [f"{sp.count} {s} images" for s, sp in (("train", self.train), ("val", self.val),
                                                         ("test", self.test)) if sp is not None]
        sizes = {lab.shape for lab in self.train.labels}
        size = "{1}x{0}".format(*next(iter(sizes))) if len(sizes) == 1 else "various sizes"
        return (", ".join(parts) + f" of {size}, {self.num_classes} classes; tiles {self.in_side} -> "
                f"{self.out_side}, {self._count('train')} training windows per epoch")

    def _dataset(self, windows: Windows, rows: np.ndarray, epoch: int | None, skip: int):
        import tensorflow as tf

        b = self.batch_size
        augment = self.cfg.data.augment if epoch is not None else []
        # "flip": left-right mirror images; "vflip": also upside-down ones (microscopy has no up)
        allowed = np.array(["vflip" in augment, "flip" in augment or "vflip" in augment])
        elastic = "elastic" in augment
        starts = list(range(skip * b, len(rows), b))
        t, sigma = self.in_side, self.cfg.segment.elastic_sigma

        def batches():
            from cnnctl.data.elastic import displacement_field

            for s in starts:
                pick = rows[s:s + b]
                flips = fields = None
                if allowed.any():
                    flips = (np.random.default_rng([self.seed, 0x5E6, epoch, s]).random((len(pick), 2)) < 0.5) & allowed
                if elastic:       # one field per window, a function of (seed, epoch, position)
                    fields = [displacement_field((t, t), np.random.default_rng([self.seed, 0xE1A5, epoch, s + j]),
                                                 sigma) for j in range(len(pick))]
                batch = windows.batch(pick, flips, fields)
                yield batch[:2] if windows.unweighted else batch

        t, o, c = self.in_side, self.out_side, windows.images[0].shape[-1]
        spec = (tf.TensorSpec((None, t, t, c), tf.uint8), tf.TensorSpec((None, o, o), tf.int32),
                tf.TensorSpec((None, o, o), tf.float32))[:2 if windows.unweighted else 3]
        return shard_by_example(tf.data.Dataset.from_generator(batches, output_signature=spec)).prefetch(2)

    def train_dataset(self, epoch: int, skip_batches: int = 0):
        from cnnctl.data.pipeline import epoch_permutation

        w = self.windows["train"]
        n = self.cfg.segment.tiles_per_epoch
        rows = (w.random(n, np.random.default_rng([self.seed, 0x711E, epoch])) if n
                else w.grid[epoch_permutation(len(w.grid), self.seed, epoch)])
        return self._dataset(w, rows, epoch, skip_batches)

    def eval_dataset(self, split: str = "val"):
        w = self.windows.get(split)
        return None if w is None else self._dataset(w, w.grid, None, 0)


def freeze_encoder(model, cfg, log) -> list[str]:
    """Apply ``finetune.freeze`` to a pretrained encoder (the nested ``encoder`` layer of a U-Net built with
    ``model.encoder``), as ``cnnctl finetune`` does to a classifier's body -> the variable paths of its
    unfrozen layers, which train at ``finetune.body_lr_scale`` x lr. The decoder always trains in full."""
    from cnnctl.train.finetune import frozen_layers

    mode = cfg.finetune.freeze
    encoder = next((layer for layer in model.layers if layer.name == "encoder"), None)
    if encoder is None:
        if mode:
            raise CnnctlError(f"finetune.freeze = {mode!r} needs a pretrained encoder to freeze",
                              hint="set model.encoder (e.g. efficientnet_lite0:imagenet or a run folder)")
        return []
    if mode == "features":
        raise CnnctlError("finetune.freeze = 'features' does not apply to segmentation: the decoder reads the "
                          "encoder's maps at every level, and augmentation changes them every epoch",
                          hint="use conv (the encoder frozen), partial:N, until:LAYER or none")
    frozen = frozen_layers(encoder, mode or "none", set())
    for layer in frozen:
        layer.trainable = False
    body = [w.path for layer in encoder.layers if layer.trainable for w in layer.trainable_weights]
    log(f"encoder {cfg.model.options.get('encoder')}: {len(frozen)} layer(s) frozen ({mode or 'none'}), "
        f"{len(body)} variable(s) at lr x {cfg.finetune.body_lr_scale}")
    return body


def _hold_out(sp, fraction: float, seed: int):
    from cnnctl.data.segmentation import SegSplit

    order = np.random.default_rng([seed, 0x5E6]).permutation(sp.count)
    held = np.sort(order[:max(1, round(fraction * sp.count))])
    kept = np.sort(order[len(held):])

    def take(idx):
        pick = (lambda a: a[idx]) if isinstance(sp.images, np.ndarray) else (lambda a: [a[i] for i in idx])
        return SegSplit(pick(sp.images), pick(sp.labels), None if sp.instances is None else pick(sp.instances),
                        [sp.names[i] for i in idx] if sp.names else [])
    return take(kept), take(held)


@TASKS.register("segment", about="semantic segmentation: per-pixel classes (U-Net), overlap-tile inference")
class SegmentTask(ClassNamesRunFile, Task):
    """Per-pixel classification: ``classes.json`` (background first), pixel accuracy and mIoU."""

    name = "segment"
    progress_fields = (Field("loss", "loss"), Field("accuracy", "acc"), Field("miou", "mIoU"))
    monitor = "val_miou"
    modes: ClassVar[dict[str, str]] = {"loss": "min", "accuracy": "max", "miou": "max"}

    def data(self, cfg, batch_size: int, log):
        return SegmentDataModule(cfg, batch_size, cfg.train.seed, log)

    def build(self, cfg, data, log):
        model = build_model(cfg, data.num_classes)
        got = tuple(model.output_shape[1:3])
        if got != (data.out_side, data.out_side):
            raise CnnctlError(f"{cfg.model.name} gives {got[0]}x{got[1]} maps, the task expected "
                              f"{data.out_side}x{data.out_side}", hint="this is a bug in the model's output_side")
        return model, freeze_encoder(model, cfg, log)

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        model.compile(optimizer=optimizer, loss=PixelCrossEntropy(label_smoothing=cfg.train.label_smoothing),
                      metrics=[PixelAccuracy(), PixelMeanIoU(data.num_classes)],
                      jit_compile=cfg.train.jit)

    def final_metrics(self, model, data) -> dict[str, Any]:
        from cnnctl.metrics.segmentation import instance_scores, semantic_scores
        from cnnctl.segmenter import Decoding, predict_labels

        if data.test is None:
            return {}
        decoding = Decoding.of(data.cfg.segment)
        predicted = predict_labels(model, data.test.images, batch=data.batch_size, decoding=decoding)
        out = {f"test_{k}": v for k, v in semantic_scores(data.test.labels, predicted, data.class_names).items()}
        if data.test.instances is not None:
            out.update({f"test_{k}": v for k, v in instance_scores(data.test.instances, predicted,
                                                                   by=data.cfg.segment.instances).items()})
        out["test_images"] = data.test.count
        out["test_decoding"] = decoding.describe()
        out["paper_iou_reference"] = PAPER_REFERENCES
        return out

    def summary_keys(self) -> tuple[str, ...]:
        return ("test_miou", "test_pixel_accuracy", "test_dice", "test_instance_f1", "val_miou")
