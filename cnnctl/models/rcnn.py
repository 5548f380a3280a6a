"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015): a Region Proposal Network and a Fast R-CNN
detector (Girshick, ICCV 2015) on one shared convolutional backbone, trained jointly.

Paper figures (PASCAL VOC 2007 test, VGG-16): Faster R-CNN 69.9 mAP at 0.2 s/image on a K40 GPU
(Table 3 / Table 5, 07+12 data: 73.2); Fast R-CNN with selective search 66.9 mAP at 0.32 s (+ ~1.5 s
of CPU selective search per image); R-CNN 66.0 with box regression, 47 s/image (Fast R-CNN Table 4).

The parts, each as the papers define them:

- backbone: images (b, H, W, c) raw pixels -> the last shared feature map (b, H/s, W/s, C); a small
  VGG-style stack trained from scratch, or the convolutions of a pretrained network
  (``encoder = "efficientnet_lite0:imagenet"`` or a cnnctl run) at the recipe's stride.
- RPN (sec. 3.1): a 3x3 convolution (512-d for VGG), then sibling 1x1 convolutions giving k objectness
  scores (the paper's "alternatively, logistic regression" form of its 2k-way softmax) and 4k box
  deltas for the k = len(scales) x len(ratios) anchors at each position.
- proposals: every anchor's box decoded and clipped to the image, those under ``min_size`` dropped,
  NMS at IoU 0.7, the top ``post_nms_train`` (2000) to train and ``post_nms_test`` (300) to test.
- detector (Fast R-CNN sec. 2): RoI max pooling to 7x7, two fully connected layers (4096-d for
  VGG), then sibling layers: softmax over K + 1 classes and per-class box deltas.
- losses: RPN: log loss over 256 sampled anchors per image (up to 1:1 positive:negative, sec. 3.1.3),
  plus lambda (10) x smooth L1 on positives normalised by the number of anchor positions (eq. 1);
  detector: log loss plus smooth L1 on foreground RoIs of the true class (Fast R-CNN eq. 1, lambda 1)
  over ``rois_per_image`` RoIs with 25 % foreground. Approximate joint training (sec. 3.2): the
  proposals are constants to the detector's loss; both losses train the shared backbone.
- test: per class, the detector's boxes at softmax score >= ``score_threshold``, NMS at 0.3 (Fast
  R-CNN's test setting), at most ``max_detections`` per image.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.detection import boxes as box_ops
from cnnctl.detection import sampling
from cnnctl.detection.anchors import grid_anchors
from cnnctl.layers import RoIPool
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register


# ----------------------------------------------------------------------------- the parts
def conv_backbone(input_shape, widths=(16, 32, 64, 128), convs: int = 2, batch_norm: bool = True) -> keras.Model:
    """VGG-style: per width, ``convs`` 3x3 same convolutions (+ BN) and ReLU, then 2x2 max pooling after
    every stage but the last (the RPN reads the last convolution, as VGG16's conv5_3): stride
    2^(len(widths) - 1)."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    for i, width in enumerate(widths):
        for j in range(convs):
            x = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=f"conv{i + 1}_{j + 1}")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"conv{i + 1}_{j + 1}_bn")(x)
            x = layers.ReLU(name=f"conv{i + 1}_{j + 1}_relu")(x)
        if i < len(widths) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    return keras.Model(inputs, x, name="backbone")


def pretrained_backbone(input_shape, encoder: str, stride: int) -> keras.Model:
    """The deepest feature map of pretrained ``encoder`` at ``stride`` or finer; if the network stops short
    (a 28x28 classifier reaches stride 4), 2x2 max pooling brings it to ``stride``. Grey images into an RGB
    network are repeated to three channels."""
    import math

    from cnnctl.models.backbone import pyramid_outputs
    from cnnctl.models.encoders import network_at

    h, w, c = (int(d) for d in input_shape)
    net = network_at(encoder, (h, w), log=lambda *a: None)
    pyramid = pyramid_outputs(net)
    want = int(math.log2(stride))
    have = max((k for k in range(1, want + 1) if f"P{k}" in pyramid), default=0)
    if not have:
        raise ValueError(f"{encoder} has no feature map at stride 2..{stride}")
    trunk = keras.Model(net.inputs[0], pyramid[f"P{have}"], name="encoder")
    inputs = keras.Input((h, w, c), name="pixels")
    x = inputs
    wants = int(net.inputs[0].shape[-1])
    if wants == 3 and c == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    elif wants != c:
        raise ValueError(f"{encoder} takes {wants}-channel images, the data has {c}")
    x = trunk(x)
    for k in range(have, want):
        x = layers.MaxPooling2D(2, name=f"pool_to_stride_{2 ** (k + 1)}")(x)
    return keras.Model(inputs, x, name="backbone")


def rpn_head(channels: int, anchors_per_position: int, width: int) -> keras.Model:
    """(b, fh, fw, C) -> [objectness logits (b, fh, fw, k), deltas (b, fh, fw, 4k)]."""
    features = keras.Input((None, None, channels), name="features")
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="rpn_conv")(features)
    init = keras.initializers.RandomNormal(stddev=0.01)          # the paper's N(0, 0.01) for new layers
    logits = layers.Conv2D(anchors_per_position, 1, kernel_initializer=init, name="rpn_cls")(x)
    deltas = layers.Conv2D(4 * anchors_per_position, 1, kernel_initializer=init, name="rpn_box")(x)
    return keras.Model(features, [logits, deltas], name="rpn")


def box_head(pool: int, channels: int, num_classes: int, width: int, dropout: float) -> keras.Model:
    """(n, pool, pool, C) RoI features -> [class logits (n, K + 1), per-class deltas (n, 4K)]."""
    pooled = keras.Input((pool, pool, channels), name="roi_features")
    x = layers.Flatten(name="flatten")(pooled)
    for i in (6, 7):                                              # VGG's fc6, fc7
        x = layers.Dense(width, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{i}")(x)
    cls = layers.Dense(num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                       name="cls_score")(x)
    box = layers.Dense(4 * num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                       name="bbox_pred")(x)
    return keras.Model(pooled, [cls, box], name="detector")


def _smooth_l1(x):
    """Fast R-CNN eq. 3, elementwise: 0.5 x^2 if |x| < 1 else |x| - 0.5."""
    import tensorflow as tf

    a = tf.abs(x)
    return tf.where(a < 1.0, 0.5 * a * a, a - 0.5)


DEFAULTS = {
    "anchor_scales": (128, 256, 512), "anchor_ratios": (0.5, 1.0, 2.0),
    "rpn_batch": 256, "rpn_positive_fraction": 0.5, "rpn_positive_iou": 0.7, "rpn_negative_iou": 0.3,
    "rpn_lambda": 10.0, "nms_iou": 0.7, "min_size": 16.0, "post_nms_train": 2000, "post_nms_test": 300,
    "rois_per_image": 64, "foreground_fraction": 0.25, "foreground_iou": 0.5, "background_iou": (0.1, 0.5),
    "pool_size": 7, "score_threshold": 0.05, "test_nms_iou": 0.3, "max_detections": 100,
}


# ----------------------------------------------------------------------------- the model
@keras.saving.register_keras_serializable(package="cnnctl")
class FasterRCNN(keras.Model):
    """Backbone + RPN + Fast R-CNN detector with the joint training step.

    ``fit`` takes batches ``(images (b, H, W, c) uint8, boxes (b, G, 4) (y0, x0, y1, x1) pixels with
    absent rows all -1, classes (b, G) int32 1..K, 0 where absent)``. ``model(images)`` returns the
    detections: ``{"boxes" (b, D, 4), "scores" (b, D), "classes" (b, D) int32 1..K, "count" (b,)}``,
    rows past ``count`` zero."""

    def __init__(self, backbone, rpn, detector, num_classes: int, stride: int, **settings):
        super().__init__(name=settings.pop("name", "faster_rcnn"))
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown Faster R-CNN settings {sorted(unknown)}; valid: {', '.join(DEFAULTS)}")
        self.backbone, self.rpn, self.detector = backbone, rpn, detector
        self.num_classes, self.stride = int(num_classes), int(stride)
        self.settings = {k: settings.get(k, v) for k, v in DEFAULTS.items()}
        s = self.settings
        self.image_size = tuple(int(d) for d in backbone.inputs[0].shape[1:3])
        fh, fw = (int(d) for d in backbone.outputs[0].shape[1:3])
        self.feature_size = (fh, fw)
        self.anchors = grid_anchors(fh, fw, self.stride, s["anchor_scales"], s["anchor_ratios"])   # (A, 4)
        self.roi_pool = RoIPool((s["pool_size"], s["pool_size"]), 1.0 / self.stride, name="roi_pool")
        self.seed_generator = keras.random.SeedGenerator(name="rcnn_seed")
        self.trackers = {k: keras.metrics.Mean(name=k) for k in self.metric_keys()}
        self.built = True

    @staticmethod
    def metric_keys() -> tuple[str, ...]:
        return ("loss", "rpn_cls", "rpn_box", "cls", "box")

    @property
    def metrics(self):
        return list(self.trackers.values())

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        s = {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()}
        return {"name": self.name, "backbone": keras.saving.serialize_keras_object(self.backbone),
                "rpn": keras.saving.serialize_keras_object(self.rpn),
                "detector": keras.saving.serialize_keras_object(self.detector),
                "num_classes": self.num_classes, "stride": self.stride, **s}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        parts = [keras.saving.deserialize_keras_object(config.pop(k)) for k in ("backbone", "rpn", "detector")]
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(*parts, **config)

    # ------------------------------------------------------------------ shared pieces
    def _seed(self):
        import tensorflow as tf

        seed = tf.cast(self.seed_generator.next(), tf.int64)
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        return seed + tf.constant([0, 1_000_003], tf.int64) * tf.cast(replica, tf.int64)

    def _rpn(self, images, training):
        """-> features, objectness logits (b, A), deltas (b, A, 4)."""
        import tensorflow as tf

        features = self.backbone(images, training=training)
        logits, deltas = self.rpn(features, training=training)
        b = tf.shape(images)[0]
        return (features, tf.reshape(tf.cast(logits, tf.float32), (b, -1)),
                tf.reshape(tf.cast(deltas, tf.float32), (b, -1, 4)))

    def proposals(self, logits, deltas, count: int):
        """Decode, clip, drop boxes under ``min_size``, NMS -> (boxes (b, count, 4), valid (b,) int32)."""
        import tensorflow as tf

        s = self.settings
        h, w = self.image_size
        b = tf.shape(logits)[0]
        anchors = tf.tile(tf.constant(self.anchors)[None], [b, 1, 1])
        boxes = box_ops.clip(box_ops.decode(tf.reshape(deltas, (-1, 4)), tf.reshape(anchors, (-1, 4))), h, w)
        boxes = tf.reshape(boxes, (b, -1, 4))
        big = ((boxes[..., 2] - boxes[..., 0] >= s["min_size"]) & (boxes[..., 3] - boxes[..., 1] >= s["min_size"]))
        scores = tf.where(big, tf.sigmoid(logits), -1.0)           # too small: below the score threshold
        count = min(int(count), len(self.anchors))
        # one "class": the batched C++ NMS (non_max_suppression_padded is a slower TF-ops version)
        out = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores[..., None], count, count, iou_threshold=s["nms_iou"], score_threshold=0.0,
            pad_per_class=False, clip_boxes=False)
        return out.nmsed_boxes, out.valid_detections

    def _detect_head(self, features, rois, training):
        """rois (b, r, 4) -> class logits (b, r, K + 1), deltas (b, r, K, 4)."""
        import tensorflow as tf

        b, r = tf.shape(rois)[0], tf.shape(rois)[1]
        pooled = self.roi_pool([features, tf.stop_gradient(rois)])                 # (b, r, P, P, C)
        p = self.settings["pool_size"]
        flat = tf.reshape(pooled, (-1, p, p, pooled.shape[-1]))
        logits, deltas = self.detector(flat, training=training)
        return (tf.reshape(tf.cast(logits, tf.float32), (b, r, self.num_classes + 1)),
                tf.reshape(tf.cast(deltas, tf.float32), (b, r, self.num_classes, 4)))

    # ------------------------------------------------------------------ training
    def _rpn_targets(self, gt_boxes, seeds):
        """Per image: sampled anchor labels (b, A) in {1, 0, -1} and regression targets (b, A, 4)."""
        import tensorflow as tf

        s = self.settings
        h, w = self.image_size
        anchors = tf.constant(self.anchors)

        def one(args):
            boxes, seed = args
            real = tf.boolean_mask(boxes, boxes[:, 2] > boxes[:, 0])                 # drop the -1 rows
            labels, matched = sampling.label_anchors(anchors, real, h, w, s["rpn_positive_iou"],
                                                     s["rpn_negative_iou"])
            labels = sampling.sample_labels(labels, s["rpn_batch"], s["rpn_positive_fraction"], seed)
            target_boxes = tf.gather(tf.concat([real, tf.zeros((1, 4))], 0), matched)
            positive = labels == sampling.POSITIVE
            targets = box_ops.encode(tf.where(positive[:, None], target_boxes, anchors), anchors)
            return labels, targets

        return tf.map_fn(one, (gt_boxes, seeds), fn_output_signature=(
            tf.TensorSpec((len(self.anchors),), tf.int32), tf.TensorSpec((len(self.anchors), 4), tf.float32)))

    def _roi_targets(self, proposals, valid, gt_boxes, gt_classes, seeds):
        import tensorflow as tf

        s = self.settings
        n = s["rois_per_image"]

        def one(args):
            props, count, boxes, classes, seed = args
            real = boxes[:, 2] > boxes[:, 0]
            return sampling.sample_rois(props[:count], tf.boolean_mask(boxes, real), tf.boolean_mask(classes, real),
                                        n, seed, s["foreground_fraction"], s["foreground_iou"],
                                        tuple(s["background_iou"]))

        return tf.map_fn(one, (proposals, valid, gt_boxes, gt_classes, seeds), fn_output_signature=(
            tf.TensorSpec((n, 4), tf.float32), tf.TensorSpec((n,), tf.int32), tf.TensorSpec((n, 4), tf.float32),
            tf.TensorSpec((n,), tf.float32)))

    def losses_of(self, images, gt_boxes, gt_classes, training: bool):
        """The four losses of one batch (eq. 1 of each paper) -> dict of scalars."""
        import tensorflow as tf

        s = self.settings
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        gt_classes = tf.cast(gt_classes, tf.int32)
        b = tf.shape(images)[0]
        seed = self._seed()
        seeds = seed[None, :] + tf.stack([tf.zeros((b,), tf.int64), 2 * tf.range(tf.cast(b, tf.int64))], axis=1)
        features, logits, deltas = self._rpn(images, training)
        labels, targets = self._rpn_targets(gt_boxes, seeds)
        sampled = tf.cast(labels >= 0, tf.float32)
        positive = tf.cast(labels == sampling.POSITIVE, tf.float32)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=logits)
        rpn_cls = tf.reduce_sum(ce * sampled) / tf.maximum(tf.reduce_sum(sampled), 1.0)
        positions = tf.cast(b, tf.float32) * float(self.feature_size[0] * self.feature_size[1])   # N_reg
        rpn_box = s["rpn_lambda"] * tf.reduce_sum(
            tf.reduce_sum(_smooth_l1(deltas - targets), -1) * positive) / positions

        proposals, valid = self.proposals(tf.stop_gradient(logits), tf.stop_gradient(deltas),
                                          s["post_nms_train"] if training else s["post_nms_test"])
        rois, classes, roi_targets, weights = self._roi_targets(proposals, valid, gt_boxes, gt_classes,
                                                                seeds + tf.constant([0, 1], tf.int64))
        cls_logits, box_deltas = self._detect_head(features, rois, training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes, logits=cls_logits)
        norm = tf.maximum(tf.reduce_sum(weights), 1.0)
        cls = tf.reduce_sum(ce * weights) / norm
        fg = tf.cast(classes > 0, tf.float32) * weights
        own = tf.gather(box_deltas, tf.maximum(classes - 1, 0), batch_dims=2)      # (b, r, 4) of the true class
        box = tf.reduce_sum(tf.reduce_sum(_smooth_l1(own - roi_targets), -1) * fg) / norm
        return {"loss": rpn_cls + rpn_box + cls + box, "rpn_cls": rpn_cls, "rpn_box": rpn_box, "cls": cls, "box": box}

    def train_step(self, data):
        import tensorflow as tf

        images, gt_boxes, gt_classes = data
        with tf.GradientTape() as tape:
            parts = self.losses_of(images, gt_boxes, gt_classes, training=True)
            loss = parts["loss"]
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        weights = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, weights), weights)
        return self._report(parts)

    def test_step(self, data):
        images, gt_boxes, gt_classes = data
        return self._report(self.losses_of(images, gt_boxes, gt_classes, training=False))

    def _report(self, parts):
        for k, tracker in self.trackers.items():
            tracker.update_state(parts[k])
        return {k: t.result() for k, t in self.trackers.items()}

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False):
        import tensorflow as tf

        s = self.settings
        h, w = self.image_size
        features, logits, deltas = self._rpn(images, training)
        rois, valid = self.proposals(logits, deltas, s["post_nms_test"])
        cls_logits, box_deltas = self._detect_head(features, rois, training)
        b, r, k = tf.shape(rois)[0], tf.shape(rois)[1], self.num_classes
        probs = tf.nn.softmax(cls_logits)[..., 1:]                                     # (b, r, K)
        probs = tf.where((tf.range(r)[None, :] < valid[:, None])[..., None], probs, 0.0)
        rep = tf.reshape(tf.tile(rois[:, :, None, :], [1, 1, k, 1]), (-1, 4))
        boxes = box_ops.clip(box_ops.decode(tf.reshape(box_deltas, (-1, 4)), rep, sampling.HEAD_WEIGHTS), h, w)
        boxes = tf.reshape(boxes, (b, r, k, 4))
        d = s["max_detections"]
        out = tf.image.combined_non_max_suppression(
            boxes, probs, max_output_size_per_class=d, max_total_size=d, iou_threshold=s["test_nms_iou"],
            score_threshold=s["score_threshold"], pad_per_class=False, clip_boxes=False)
        return {"boxes": out.nmsed_boxes, "scores": out.nmsed_scores,
                "classes": tf.cast(out.nmsed_classes, tf.int32) + 1, "count": out.valid_detections}

    def propose(self, images):
        """The RPN's test proposals -> (boxes (b, post_nms_test, 4), valid (b,)): for proposal recall."""
        _, logits, deltas = self._rpn(images, False)
        return self.proposals(logits, deltas, self.settings["post_nms_test"])


def output_stride(backbone) -> int:
    return round(backbone.inputs[0].shape[1] / backbone.outputs[0].shape[1])


@register("faster_rcnn", task="detect", input_shape=(128, 128, 1), num_classes=10,
          paper="Ren, He, Girshick & Sun, Faster R-CNN (NeurIPS 2015), sec. 3; Girshick, Fast R-CNN (ICCV 2015)")
def faster_rcnn(num_classes: int = 10, input_shape=(128, 128, 1), encoder: str = "", stride: int = 8,
                widths=(16, 32, 64, 128), batch_norm: bool = True, rpn_width: int = 128, head_width: int = 256,
                dropout: float = 0.0, anchor_scales=(128, 256, 512), anchor_ratios=(0.5, 1.0, 2.0),
                rpn_batch: int = 256, rpn_positive_fraction: float = 0.5, rpn_positive_iou: float = 0.7,
                rpn_negative_iou: float = 0.3, rpn_lambda: float = 10.0, nms_iou: float = 0.7, min_size: float = 16.0,
                post_nms_train: int = 2000, post_nms_test: int = 300, rois_per_image: int = 64,
                foreground_fraction: float = 0.25, foreground_iou: float = 0.5, background_iou=(0.1, 0.5),
                pool_size: int = 7, score_threshold: float = 0.05, test_nms_iou: float = 0.3,
                max_detections: int = 100) -> keras.Model:
    """Faster R-CNN on a small VGG-style backbone (``widths``: one stage per entry, stride
    2^(len - 1)) or on ``encoder``'s convolutions at ``stride``. The rest: see ``DEFAULTS`` and the
    module docstring; the defaults are the papers' (anchors for ~600 px images: scale them for small ones)."""
    settings = {k: v for k, v in locals().items() if k in DEFAULTS}
    if encoder:
        backbone = pretrained_backbone(input_shape, encoder, stride)
    else:
        backbone = conv_backbone(input_shape, tuple(widths), batch_norm=batch_norm)
    channels = int(backbone.outputs[0].shape[-1])
    rpn = rpn_head(channels, len(anchor_scales) * len(anchor_ratios), rpn_width)
    detector = box_head(pool_size, channels, num_classes, head_width, dropout)
    return FasterRCNN(backbone, rpn, detector, num_classes, output_stride(backbone), **settings)
