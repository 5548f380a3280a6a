"""R-CNN (Girshick, Donahue, Darrell & Malik, CVPR 2014): every region proposal warped to the CNN's
input and run through the whole network on its own; per-class linear SVMs score it and per-class ridge
regressors move its box.

Paper figures (PASCAL VOC 2007 test): AlexNet ("T-Net") 54.2 mAP, 58.5 with box regression (Table 2);
VGG16 ("O-Net") 66.0 with box regression (Table 3); fc7 softmax instead of the SVMs 50.9 against 54.2
(appendix B); 13 s/image on a GPU with AlexNet (sec. 2.2), 47 s/image with VGG16 (Fast R-CNN Table 4).

The parts, as the paper defines them:

- proposals: selective search, "fast" mode, about 2k per image (sec. 2.1), as ``fast_rcnn``'s.
- warping (sec. 2.1, appendix A): each proposal's box is dilated so that, at the warped size, there
  are ``context`` pixels of image around it (16 at 227 x 227), then warped anisotropically (bilinear)
  to ``warp_size`` squared; pixels outside the image are the image's mean.
- the CNN: the shared convolutions (the backbone ``faster_rcnn`` and ``fast_rcnn`` use) on each warp,
  giving "pool5" (``pool_size`` squared maps), then fc6, fc7 and a K + 1-way softmax.
- fine-tuning (sec. 2.3): proposals of IoU >= 0.5 with a ground-truth box are that box's class, the
  rest background; minibatches of 128 windows, 32 foreground (``rois_per_image`` x batch = 128).
- SVMs (sec. 2.3, appendix B): one linear SVM per class on fc7 features scaled to a mean norm of 20;
  positives are the ground-truth boxes alone, negatives the proposals of IoU < 0.3 with every box of
  the class; hard-negative mining over the training images (``cnnctl.detection.svm``), C = 0.001,
  positives weighted 2 (the released code's settings).
- box regression (appendix C): per class, ridge regression (lambda = 1000) from pool5 features to
  (tx, ty, tw, th) for the proposals of IoU > 0.6 with a ground-truth box of that class.
- test: every proposal scored by every SVM, reported as sigmoid(a m + b) of its margin m, with each class's
  (a, b) fitted on held-out images by Platt scaling (ours; the paper ranks raw margins), so a score is
  the probability of a correct box (IoU >= 0.5), and moved by its class's regressor, then per-class
  NMS at 0.3.

Until the second stage is fitted (``fit_second_stage``, which the detect task runs after the last
epoch) the model scores with the fine-tuned softmax and leaves the boxes as proposed: the epochs'
validation mAP is appendix B's softmax figure.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from cnnctl.detection import boxes as box_ops
from cnnctl.detection.svm import mine_hard_negatives, ridge_regression
from cnnctl.models.rcnn import (
    SEARCH_DEFAULTS,
    FastRCNN,
    _shared_convolutions,
    box_head,
    output_stride,
)
from cnnctl.models.registry import register

RCNN_DEFAULTS = {
    **SEARCH_DEFAULTS, "rois_per_image": 16, "background_iou": (0.0, 0.5), "warp_size": 227, "context": 16,
    "svm_c": 0.001, "svm_positive_weight": 2.0, "svm_negative_iou": 0.3, "regression_iou": 0.6,
    "ridge_lambda": 1000.0, "feature_norm": 20.0, "bias_mult": 10.0,
}


def warp_regions(images, boxes, box_image, size: int, context: float):
    """R-CNN's warping: images (b, H, W, c) float, boxes (n, 4) (y0, x0, y1, x1) in pixels (max
    exclusive), box_image (n,) int -> (n, size, size, c). Each box is dilated by size / (size - 2 context)
    about its centre, so that ``context`` warped pixels of surround lie around the original box; the
    output pixel centres sample the dilated box at its (i + 0.5) / size points, bilinearly."""
    import tensorflow as tf

    boxes = tf.cast(boxes, tf.float32)
    h, w = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    grow = size / (size - 2.0 * context)
    cy, cx = 0.5 * (boxes[:, 0] + boxes[:, 2]), 0.5 * (boxes[:, 1] + boxes[:, 3])
    bh, bw = tf.maximum(boxes[:, 2] - boxes[:, 0], 1.0) * grow, tf.maximum(boxes[:, 3] - boxes[:, 1], 1.0) * grow
    y0, x0 = cy - 0.5 * bh, cx - 0.5 * bw
    # crop_and_resize samples y1 (H - 1) + i (y2 - y1) (H - 1) / (size - 1) in pixel-index coordinates;
    # the centre of output pixel i is at y0 - 0.5 + (i + 0.5) bh / size
    first_y, last_y = y0 - 0.5 + 0.5 * bh / size, y0 - 0.5 + (size - 0.5) * bh / size
    first_x, last_x = x0 - 0.5 + 0.5 * bw / size, x0 - 0.5 + (size - 0.5) * bw / size
    norm = tf.stack([first_y / (h - 1.0), first_x / (w - 1.0), last_y / (h - 1.0), last_x / (w - 1.0)], axis=1)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)                       # (b, 1, 1, c)
    crops = tf.image.crop_and_resize(images - mean, norm, tf.cast(box_image, tf.int32), (size, size),
                                     extrapolation_value=0.0)
    return crops + tf.gather(mean, tf.cast(box_image, tf.int32))


@keras.saving.register_keras_serializable(package="cnnctl")
class RCNN(FastRCNN):
    """R-CNN: selective search, warped regions through the backbone and fc layers, per-class SVMs and
    ridge box regressors (see the module docstring). ``backbone`` takes the warps (warp_size squared),
    ``detector`` maps pool5 to [class logits (n, K + 1), fc7 (n, D)]."""

    DEFAULTS = RCNN_DEFAULTS
    region_losses = ()

    def __init__(self, backbone, detector, num_classes: int, feature_stride: int, image_shape, **settings):
        name = settings.pop("name", "rcnn")
        super().__init__(backbone, detector, num_classes, feature_stride, name=name, **settings)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.image_size = self.image_shape[:2]
        fc7 = int(detector.outputs[1].shape[-1])
        pool5 = int(np.prod(backbone.outputs[0].shape[1:]))
        k = self.num_classes
        # the second stage, fitted after fine-tuning (zeros: softmax scores, boxes unmoved); float32
        # under mixed precision too (autocast=False): margins and box deltas are compared and added in
        # float32, and the fit writes float32 solutions
        def second_stage(shape, init, name):
            return self.add_weight(shape=shape, initializer=init, trainable=False, autocast=False, name=name)

        self.svm = second_stage((fc7 + 1, k), "zeros", "svm")
        self.regressors = second_stage((k, pool5 + 1, 4), "zeros", "box_regressors")
        self.feature_scales = second_stage((2,), "ones", "feature_scales")           # fc7's and pool5's
        self.fitted = second_stage((), "zeros", "second_stage_fitted")

    @classmethod
    def metric_keys(cls) -> tuple[str, ...]:
        return ("loss", "cls")

    def _extra_config(self) -> dict:
        return {"image_shape": list(self.image_shape)}

    # ------------------------------------------------------------------ the network on warped regions
    def region_outputs(self, images, boxes, box_image, training=False):
        """boxes (n, 4) of images[box_image] -> pool5 (n, P) flat, fc7 (n, D), class logits (n, K + 1)."""
        import tensorflow as tf

        s = self.settings
        crops = warp_regions(tf.cast(images, tf.float32), boxes, box_image, int(s["warp_size"]), float(s["context"]))
        pool5 = self.backbone(crops, training=training)
        logits, fc7 = self.detector(pool5, training=training)
        n = tf.shape(boxes)[0]
        return (tf.reshape(tf.cast(pool5, tf.float32), (n, -1)), tf.cast(fc7, tf.float32),
                tf.cast(logits, tf.float32))

    def losses_of(self, images, gt_boxes, gt_classes, training: bool):
        """Fine-tuning (sec. 2.3): log loss over the sampled windows."""
        import tensorflow as tf

        gt_boxes = tf.cast(gt_boxes, tf.float32)
        gt_classes = tf.cast(gt_classes, tf.int32)
        b = tf.shape(images)[0]
        seeds = self._image_seeds(b)
        proposals, valid = self._search(images)
        rois, classes, _, weights = self._roi_targets(proposals, valid, gt_boxes, gt_classes, seeds)
        r = tf.shape(rois)[1]
        _, _, logits = self.region_outputs(images, tf.reshape(rois, (-1, 4)), tf.repeat(tf.range(b), r), training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(classes, (-1,)), logits=logits)
        weights = tf.reshape(weights, (-1,))
        cls = tf.reduce_sum(ce * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        return {"loss": cls, "cls": cls}

    def call(self, images, training=False):
        import tensorflow as tf

        proposals, valid = self._search(images)                                     # (b, n, 4), (b,)
        b, n, k = tf.shape(proposals)[0], tf.shape(proposals)[1], self.num_classes
        where = tf.cast(tf.where(tf.range(n)[None, :] < valid[:, None]), tf.int32)  # (m, 2): (image, row)
        moved, margins, softmax = self._scored_regions(images, tf.gather_nd(proposals, where), where[:, 0], training)
        scores = tf.where(self.fitted > 0.5, tf.sigmoid(margins), softmax)
        per_class_boxes = tf.scatter_nd(where, moved, tf.stack([b, n, k, 4]))
        per_class_scores = tf.scatter_nd(where, scores, tf.stack([b, n, k]))
        return self._final_detections(per_class_boxes, per_class_scores)

    def _scored_regions(self, images, boxes, box_image, training=False):
        """boxes (m, 4) of images[box_image] -> each class's moved box (m, K, 4), SVM margin (m, K)
        (calibrated once ``calibrate_scores`` ran) and fine-tuned softmax probability (m, K)."""
        import tensorflow as tf

        s, k = self.settings, self.num_classes
        pool5, fc7, logits = self.region_outputs(images, boxes, box_image, training)
        m = tf.shape(boxes)[0]
        svm_in = tf.concat([fc7 * self.feature_scales[0], tf.fill((m, 1), s["bias_mult"])], axis=1)
        reg_in = tf.concat([pool5 * self.feature_scales[1], tf.ones((m, 1))], axis=1)
        deltas = tf.einsum("mp,kpq->mkq", reg_in, self.regressors)                   # zeros until fitted
        moved = box_ops.decode(tf.reshape(deltas, (-1, 4)), tf.repeat(boxes, k, axis=0))
        return (tf.reshape(box_ops.clip(moved, *self.image_size), (m, k, 4)), svm_in @ self.svm,
                tf.nn.softmax(logits)[:, 1:])

    def _search_one(self, image: np.ndarray) -> np.ndarray:
        """Selective search on one image with the model's settings -> (n, 4) boxes."""
        from cnnctl.detection.selective_search import selective_search

        s = self.settings
        return selective_search(image, int(s["max_proposals"]), s["search_mode"], int(s["search_min_size"]))

    def calibrate_scores(self, images: np.ndarray, gt_boxes: list, gt_classes: list, log=print,
                         batch: int = 16) -> dict:
        """Platt scaling of each class's SVM on held-out images (after ``fit_second_stage``): every
        proposal's moved box is correct for class c when its IoU with a box of class c is >= 0.5; the
        fitted sigmoid(a m + b) is folded into the SVM (its weights times a, b / bias_mult added to its
        bias row), so a score is that probability and ``--score 0.5`` means for R-CNN what it means
        for the softmax detectors. Within a class the order of the scores is unchanged.
        -> the (a, b) of each class for metrics.json."""
        import tensorflow as tf

        from cnnctl.detection.svm import platt_scale

        if not self.fitted.numpy():
            raise RuntimeError("calibrate_scores needs the fitted second stage (fit_second_stage)")
        s, k = self.settings, self.num_classes
        scored = tf.function(self._scored_regions, reduce_retracing=True)
        margins, correct = [], []
        for start in range(0, len(images), batch):
            chunk = np.asarray(images[start:start + batch])
            found = [self._search_one(im) for im in chunk]
            owner = np.concatenate([np.full(len(f), j) for j, f in enumerate(found)])
            moved, margin, _ = (np.asarray(t) for t in scored(chunk, np.concatenate(found).astype(np.float32), owner))
            margins.append(margin)
            hit = np.zeros(margin.shape, bool)
            for j in range(len(chunk)):
                gt = np.asarray(gt_boxes[start + j], np.float32).reshape(-1, 4)
                cls = np.asarray(gt_classes[start + j]).reshape(-1)
                rows = owner == j
                for c in np.unique(cls):
                    ious = np.asarray(box_ops.iou(moved[rows, c - 1], gt[cls == c]))
                    hit[rows, c - 1] = ious.max(axis=1) >= 0.5
            correct.append(hit)
        margins, correct = np.concatenate(margins), np.concatenate(correct)
        fits = [platt_scale(margins[:, c], correct[:, c]) for c in range(k)]
        # a slope <= 0 would reverse the class's ranking: its SVM does not rank held-out boxes, and
        # turning it round on the held-out images would be fitting them; keep the margin as it is
        inverted = [c for c, (a, _) in enumerate(fits) if a <= 0]
        fits = [(1.0, 0.0) if c in inverted else f for c, f in enumerate(fits)]
        if inverted:
            log(f"R-CNN calibration: the SVMs of {len(inverted)} class(es) rank held-out boxes no better than "
                f"reversed (classes {', '.join(str(c + 1) for c in inverted)}); their scores stay sigmoid(margin)")
        svm = self.svm.numpy()
        for c, (a, b) in enumerate(fits):
            svm[:, c] *= a
            svm[-1, c] += b / s["bias_mult"]
        self.svm.assign(svm)
        log(f"R-CNN scores calibrated (Platt) on {len(margins):,} regions of {len(images):,} held-out images: "
            f"slope {np.median([a for a, _ in fits]):.2f}, offset {np.median([b for _, b in fits]):+.2f} (medians)")
        return {"platt_slope": [a for a, _ in fits], "platt_offset": [b for _, b in fits],
                "platt_regions": len(margins)}

    # ------------------------------------------------------------------ the second stage
    def fit_second_stage(self, images: np.ndarray, gt_boxes: list, gt_classes: list, log=print,
                         batch: int = 16) -> dict:
        """Features of every training image's proposals and ground-truth boxes, then the SVMs with hard
        negative mining and the ridge box regressors; sets the model's second-stage weights.
        images (n, H, W, c) uint8 at the network's size; gt_boxes / gt_classes per image ((g, 4), (g,) 1..K).
        -> numbers for metrics.json."""
        import tensorflow as tf

        s = self.settings
        k = self.num_classes
        t0 = time.perf_counter()
        features = tf.function(self.region_outputs, reduce_retracing=True)
        fc7_rows, pool5_rows, overlap_rows, image_rows, class_rows = [], [], [], [], []
        reg_targets, reg_classes = [], []
        for start in range(0, len(images), batch):
            chunk = np.asarray(images[start:start + batch])
            boxes, owner, regress = [], [], []
            for j, image in enumerate(chunk):
                i = start + j
                gt = np.asarray(gt_boxes[i], np.float32).reshape(-1, 4)
                cls = np.asarray(gt_classes[i], np.int64).reshape(-1)
                found = self._search_one(image)
                cand = np.concatenate([gt, found])                                  # ground truth first
                ious = np.asarray(box_ops.iou(cand, gt)) if len(gt) else np.zeros((len(cand), 0), np.float32)
                per_class = np.zeros((len(cand), k), np.float32)             # best IoU with each class's boxes
                for c in np.unique(cls):
                    per_class[:, c - 1] = ious[:, cls == c].max(axis=1)
                keep = np.zeros(len(cand), bool)
                if len(gt):    # box regression pairs (appendix C): IoU > 0.6 with the best-overlapping box
                    best, which = ious.max(axis=1), ious.argmax(axis=1)
                    keep = best > s["regression_iou"]
                    reg_targets.append(np.asarray(box_ops.encode(gt[which[keep]], cand[keep])))
                    reg_classes.append(cls[which[keep]])
                boxes.append(cand)
                owner.append(np.full(len(cand), i))
                regress.append(keep)
                overlap_rows.append(per_class)
                class_rows.append(np.concatenate([cls, np.zeros(len(found), np.int64)]))   # 1..K on ground truth
            owner = np.concatenate(owner)
            pool5, fc7, _ = (np.asarray(t) for t in features(chunk, np.concatenate(boxes), owner - start))
            fc7_rows.append(fc7)
            pool5_rows.append(pool5[np.concatenate(regress)])
            image_rows.append(owner)
        fc7, pool5 = np.concatenate(fc7_rows), np.concatenate(pool5_rows)
        overlap, image, gt_class = np.concatenate(overlap_rows), np.concatenate(image_rows), np.concatenate(class_rows)
        targets = np.concatenate(reg_targets) if reg_targets else np.zeros((0, 4), np.float32)
        target_class = np.concatenate(reg_classes) if reg_classes else np.zeros((0,), np.int64)
        t_features = time.perf_counter() - t0
        log(f"R-CNN second stage: features of {len(fc7):,} regions of {len(images):,} images "
            f"({t_features:.0f} s)")

        # SVMs on fc7 scaled to a mean norm of feature_norm, bias as a constant feature (bias_mult)
        fc7_scale = s["feature_norm"] / max(float(np.mean(np.linalg.norm(fc7, axis=1))), 1e-12)
        x = np.concatenate([fc7 * fc7_scale, np.full((len(fc7), 1), s["bias_mult"])], axis=1)
        weights = np.zeros((x.shape[1], k))
        hard = 0
        for c in range(1, k + 1):
            positive = gt_class == c
            negative = overlap[:, c - 1] < s["svm_negative_iou"]
            weights[:, c - 1], report = mine_hard_negatives(x, positive, negative, image, s["svm_c"],
                                                            s["svm_positive_weight"])
            hard += report.hard_negatives
        # ridge box regressors on pool5, scaled the same way
        pool5_scale = s["feature_norm"] / max(float(np.mean(np.linalg.norm(pool5, axis=1))), 1e-12) if len(pool5) else 1.0
        xr = np.concatenate([pool5 * pool5_scale, np.ones((len(pool5), 1))], axis=1)
        regressors = np.stack([ridge_regression(xr[target_class == c], targets[target_class == c], s["ridge_lambda"])
                               for c in range(1, k + 1)])
        self.svm.assign(weights.astype(np.float32))
        self.regressors.assign(regressors.astype(np.float32))
        self.feature_scales.assign(np.array([fc7_scale, pool5_scale], np.float32))
        self.fitted.assign(1.0)
        seconds = time.perf_counter() - t0
        log(f"R-CNN second stage: {k} SVMs ({int(np.sum(gt_class > 0)):,} positives, {hard:,} hard negatives "
            f"kept), {k} box regressors ({len(targets):,} pairs) in {seconds:.0f} s")
        return {"second_stage_regions": len(fc7), "second_stage_hard_negatives": int(hard),
                "second_stage_regression_pairs": len(targets), "second_stage_time_s": round(seconds, 2)}


@register("rcnn", task="detect", input_shape=(128, 128, 1), num_classes=10,
          paper="Girshick, Donahue, Darrell & Malik, R-CNN (CVPR 2014), sec. 2 and appendices A-C")
def rcnn(num_classes: int = 10, input_shape=(128, 128, 1), encoder: str = "", widths=(16, 32, 64, 128),
         batch_norm: bool = True, head_width: int = 256, dropout: float = 0.0, warp_size: int = 0,
         context: float = -1.0, max_proposals: int = 2000, search_mode: str = "fast", search_min_size: int = 0,
         rois_per_image: int = 16, foreground_fraction: float = 0.25, foreground_iou: float = 0.5,
         background_iou=(0.0, 0.5), pool_size: int = 7, svm_c: float = 0.001, svm_positive_weight: float = 2.0,
         svm_negative_iou: float = 0.3, regression_iou: float = 0.6, ridge_lambda: float = 1000.0,
         feature_norm: float = 20.0, bias_mult: float = 10.0, score_threshold: float = 0.05,
         test_nms_iou: float = 0.3, max_detections: int = 100) -> keras.Model:
    """R-CNN on the same shared convolutions as ``fast_rcnn`` / ``faster_rcnn`` (``widths`` from scratch,
    or a pretrained ``encoder``), applied to each warped region. ``warp_size`` 0: the size at which the
    backbone gives ``pool_size`` squared maps (7 x 8 = 56 px for the stride-8 backbone); ``context`` < 0:
    the paper's 16 px at 227 scaled to ``warp_size``. ``rois_per_image`` x the batch is the paper's
    128-window minibatch (16 x 8)."""
    from cnnctl.detection.selective_search import MODES

    if search_mode not in MODES:
        raise ValueError(f"search_mode {search_mode!r}: valid modes are {', '.join(MODES)}")
    image_shape = tuple(int(d) for d in input_shape)
    if encoder:    # its stride, from the network at the images' size
        stride = _shared_convolutions(image_shape, encoder, widths, batch_norm, 8, pool_size)[1]
    else:
        stride = 2 ** (len(widths) - 1)
    warp_size = int(warp_size) or pool_size * stride
    if warp_size % stride or (warp_size // stride) % pool_size:
        raise ValueError(f"warp_size {warp_size} must give maps of a multiple of pool_size {pool_size} "
                         f"at the backbone's stride {stride}")
    context = 16.0 * warp_size / 227.0 if context < 0 else float(context)
    settings = {k: v for k, v in locals().items() if k in RCNN_DEFAULTS}
    backbone, stride, fcs = _shared_convolutions((warp_size, warp_size, image_shape[-1]), encoder, widths,
                                                 batch_norm, 8, pool_size)
    cells = warp_size // stride
    if cells != pool_size:                         # pool5: max-pool the warp's map to pool_size squared
        pooled = keras.layers.MaxPooling2D(cells // pool_size, name="pool5")(backbone.outputs[0])
        backbone = keras.Model(backbone.inputs, pooled, name="backbone")
    head = box_head(pool_size, int(backbone.outputs[0].shape[-1]), num_classes, head_width, dropout, fcs)
    last_fc = [layer.name for layer in head.layers if layer.name.startswith("fc")][-1]
    detector = keras.Model(head.inputs, [head.get_layer("cls_score").output, head.get_layer(last_fc).output],
                           name="detector")
    return RCNN(backbone, detector, num_classes, output_stride(backbone), image_shape, **settings)
