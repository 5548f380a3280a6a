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

import math

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


def pretrained_parts(input_shape, encoder: str, stride: int, pool_size: int):
    """A pretrained network cut as Fast R-CNN sec. 2.2 does: -> (backbone, hidden fc layers' weights).

    When the network ends ``... -> last max pooling -> flatten -> fc ... -> logits`` and that pooling gives
    ``pool_size`` x ``pool_size`` maps at the network's own input size (VGG16's 7x7 at 224; the bundled
    Fashion-MNIST classifier's 7x7 at 28), the RoI pooling layer replaces the last max pooling: the
    backbone ends at that pooling's input, and the detector's hidden fc layers start from the network's
    (``[(kernel, bias), ...]``). Otherwise (global-pooling networks such as EfficientNet) the backbone is
    the deepest feature map at ``stride`` or finer and the fc layers are new (an empty list). Grey images
    into an RGB network are repeated to three channels."""
    from cnnctl.models.backbone import pyramid_outputs
    from cnnctl.models.encoders import network_at, pretrained_network

    h, w, c = (int(d) for d in input_shape)
    trained = pretrained_network(encoder, log=lambda *a: None)
    net = network_at(encoder, (h, w), log=lambda *a: None)
    cut, fcs = _fast_rcnn_cut(trained, pool_size)
    if cut is not None:
        trunk = keras.Model(net.inputs[0], net.get_layer(cut).input, name="encoder")
    else:
        pyramid = pyramid_outputs(net)
        have = max((k for k in range(1, int(math.log2(stride)) + 1) if f"P{k}" in pyramid), default=0)
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
    return keras.Model(inputs, trunk(x), name="backbone"), fcs


def _fast_rcnn_cut(trained, pool_size: int):
    """-> (name of the last max pooling layer, [(kernel, bias) of the fc layers after it but the last]),
    or (None, []) when the network does not end in max pooling -> flatten -> fc layers at ``pool_size``."""
    order = [layer for layer in trained.layers if not isinstance(layer, keras.layers.InputLayer)]
    pools = [i for i, layer in enumerate(order) if isinstance(layer, keras.layers.MaxPooling2D)]
    if not pools:
        return None, []
    last = pools[-1]
    after = order[last + 1:]
    if not any(isinstance(layer, keras.layers.Flatten) for layer in after) or \
            any(len(getattr(layer, "output", ()).shape or ()) == 4 for layer in after if layer.weights):
        return None, []
    if tuple(order[last].output.shape[1:3]) != (pool_size, pool_size):
        return None, []
    dense = [layer for layer in after if isinstance(layer, keras.layers.Dense)]
    return order[last].name, [tuple(layer.get_weights()) for layer in dense[:-1]]


def rpn_head(feature_shape, anchors_per_position: int, width: int, pool: int = 1) -> keras.Model:
    """(b, fh, fw, C) = (b, *feature_shape) -> [objectness logits (b, fh/pool, fw/pool, k), deltas
    (b, fh/pool, fw/pool, 4k)].

    ``pool`` > 1 max-pools the shared map first, so the RPN slides over a coarser grid than the one
    the RoIs are pooled from (a backbone cut at stride 2 for the detector, anchors every 8 px)."""
    features = keras.Input(tuple(int(d) for d in feature_shape), name="features")
    x = layers.MaxPooling2D(pool, name="rpn_pool")(features) if pool > 1 else features
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="rpn_conv")(x)
    init = keras.initializers.RandomNormal(stddev=0.01)          # the paper's N(0, 0.01) for new layers
    logits = layers.Conv2D(anchors_per_position, 1, kernel_initializer=init, name="rpn_cls")(x)
    deltas = layers.Conv2D(4 * anchors_per_position, 1, kernel_initializer=init, name="rpn_box")(x)
    return keras.Model(features, [logits, deltas], name="rpn")


def box_head(pool: int, channels: int, num_classes: int, width: int, dropout: float, pretrained=()) -> keras.Model:
    """(n, pool, pool, C) RoI features -> [class logits (n, K + 1), per-class deltas (n, 4K)].

    Hidden fc layers: ``pretrained`` [(kernel, bias), ...] when the backbone's network had them (Fast
    R-CNN starts fc6 and fc7 from VGG16's), else two new ones of ``width`` (VGG's fc6, fc7)."""
    pooled = keras.Input((pool, pool, channels), name="roi_features")
    x = layers.Flatten(name="flatten")(pooled)
    hidden = list(pretrained) or [None, None]
    for i, weights in enumerate(hidden):
        units = width if weights is None else int(weights[0].shape[-1])
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{i + 6}")(x)
        dense = layers.Dense(units, activation="relu", name=f"fc{i + 6}")
        x = dense(x)
        if weights is not None:
            dense.set_weights(list(weights))
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


HEAD_DEFAULTS = {
    "rois_per_image": 64, "foreground_fraction": 0.25, "foreground_iou": 0.5, "background_iou": (0.1, 0.5),
    "pool_size": 7, "score_threshold": 0.05, "test_nms_iou": 0.3, "max_detections": 100,
}
RPN_DEFAULTS = {
    "anchor_scales": (128, 256, 512), "anchor_ratios": (0.5, 1.0, 2.0),
    "rpn_batch": 256, "rpn_positive_fraction": 0.5, "rpn_positive_iou": 0.7, "rpn_negative_iou": 0.3,
    "rpn_lambda": 10.0, "nms_iou": 0.7, "min_size": 16.0, "post_nms_train": 2000, "post_nms_test": 300,
    **HEAD_DEFAULTS,
}
SEARCH_DEFAULTS = {"max_proposals": 2000, "search_mode": "fast", "search_min_size": 0, **HEAD_DEFAULTS}
DEFAULTS = RPN_DEFAULTS        # Faster R-CNN's, the default detector's


def batched_nms(boxes, scores, per_class: int, total: int, iou: float, min_score: float):
    """``tf.image.combined_non_max_suppression`` (boxes (b, n, q, 4), scores (b, n, K)) that also takes an
    empty batch: under a distribution strategy the last, partial batch can leave a replica with no
    image, and the op rejects b = 0. One all-zero image is appended and its rows dropped."""
    import collections

    import tensorflow as tf

    b = tf.shape(boxes)[0]
    out = tf.image.combined_non_max_suppression(
        tf.concat([boxes, tf.zeros_like(boxes[:1])], 0), tf.concat([scores, tf.zeros_like(scores[:1])], 0),
        per_class, total, iou_threshold=iou, score_threshold=min_score, pad_per_class=False, clip_boxes=False)
    fields = ("nmsed_boxes", "nmsed_scores", "nmsed_classes", "valid_detections")
    return collections.namedtuple("NMS", fields)(*(getattr(out, f)[:b] for f in fields))


# ----------------------------------------------------------------------------- the models
class RegionCNN(keras.Model):
    """Shared convolutions + a region source + the Fast R-CNN detector (RoI pooling, fc layers, K + 1
    softmax and per-class boxes); subclasses give the regions (``_train_regions``, ``_test_regions``).

    ``fit`` takes batches ``(images (b, H, W, c) uint8, boxes (b, G, 4) (y0, x0, y1, x1) pixels with
    absent rows all -1, classes (b, G) int32 1..K, 0 where absent)``. ``model(images)`` returns the
    detections: ``{"boxes" (b, D, 4), "scores" (b, D), "classes" (b, D) int32 1..K, "count" (b,)}``,
    rows past ``count`` zero."""

    DEFAULTS: dict = HEAD_DEFAULTS
    PARTS: tuple[str, ...] = ("backbone", "detector")
    region_losses: tuple[str, ...] = ()

    def __init__(self, parts: dict, num_classes: int, feature_stride: int, name: str, **settings):
        super().__init__(name=name)
        unknown = set(settings) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} settings {sorted(unknown)}; "
                             f"valid: {', '.join(self.DEFAULTS)}")
        for key, part in parts.items():
            setattr(self, key, part)
        self.num_classes, self.feature_stride = int(num_classes), int(feature_stride)   # RoI pooling's stride
        self.settings = {k: settings.get(k, v) for k, v in self.DEFAULTS.items()}
        s = self.settings
        self.image_size = tuple(int(d) for d in self.backbone.inputs[0].shape[1:3])
        self.roi_pool = RoIPool((s["pool_size"], s["pool_size"]), 1.0 / self.feature_stride, name="roi_pool")
        self.seed_generator = keras.random.SeedGenerator(name="rcnn_seed")
        self.trackers = {k: keras.metrics.Mean(name=k) for k in self.metric_keys()}
        self.built = True

    @classmethod
    def metric_keys(cls) -> tuple[str, ...]:
        return ("loss", *cls.region_losses, "cls", "box")

    @property
    def metrics(self):
        return list(self.trackers.values())

    def build(self, input_shape=None):
        self.built = True

    def _extra_config(self) -> dict:
        return {}

    def get_config(self):
        s = {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()}
        return {"name": self.name, **{k: keras.saving.serialize_keras_object(getattr(self, k)) for k in self.PARTS},
                "num_classes": self.num_classes, "feature_stride": self.feature_stride, **self._extra_config(), **s}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        for key in cls.PARTS:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # ------------------------------------------------------------------ shared pieces
    def _seed(self):
        import tensorflow as tf

        seed = tf.cast(self.seed_generator.next(), tf.int64)
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        return seed + tf.constant([0, 1_000_003], tf.int64) * tf.cast(replica, tf.int64)

    def _image_seeds(self, b):
        """One stateless seed pair per image of the batch (b, 2): this step's seed, images 2 apart."""
        import tensorflow as tf

        seed = self._seed()
        return seed[None, :] + tf.stack([tf.zeros((b,), tf.int64), 2 * tf.range(tf.cast(b, tf.int64))], axis=1)

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

    # ------------------------------------------------------------------ the region source
    def _train_regions(self, images, features, gt_boxes, seeds, training):
        """-> (proposals (b, n, 4), valid (b,), {name: loss} of the region source)."""
        raise NotImplementedError

    def _test_regions(self, images, features):
        """-> (proposals (b, n, 4), valid (b,))."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def losses_of(self, images, gt_boxes, gt_classes, training: bool):
        """The losses of one batch (eq. 1 of each paper) -> dict of scalars."""
        import tensorflow as tf

        gt_boxes = tf.cast(gt_boxes, tf.float32)
        gt_classes = tf.cast(gt_classes, tf.int32)
        seeds = self._image_seeds(tf.shape(images)[0])
        features = self.backbone(images, training=training)
        proposals, valid, parts = self._train_regions(images, features, gt_boxes, seeds, training)
        parts.update(self._detector_losses(features, proposals, valid, gt_boxes, gt_classes, seeds, training))
        return {"loss": tf.add_n(list(parts.values())), **parts}

    def _detector_losses(self, features, proposals, valid, gt_boxes, gt_classes, seeds, training):
        """Fast R-CNN eq. 1 on RoIs sampled from ``proposals`` -> {"cls", "box"}."""
        import tensorflow as tf

        rois, classes, roi_targets, weights = self._roi_targets(proposals, valid, gt_boxes, gt_classes,
                                                                seeds + tf.constant([0, 1], tf.int64))
        cls_logits, box_deltas = self._detect_head(features, rois, training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes, logits=cls_logits)
        norm = tf.maximum(tf.reduce_sum(weights), 1.0)
        fg = tf.cast(classes > 0, tf.float32) * weights
        own = tf.gather(box_deltas, tf.maximum(classes - 1, 0), batch_dims=2)      # (b, r, 4) of the true class
        return {"cls": tf.reduce_sum(ce * weights) / norm,
                "box": tf.reduce_sum(tf.reduce_sum(_smooth_l1(own - roi_targets), -1) * fg) / norm}

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
            if k in parts:                  # a staged training step computes some of the losses only
                tracker.update_state(parts[k])
        return {k: t.result() for k, t in self.trackers.items()}

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False):
        import tensorflow as tf

        h, w = self.image_size
        features = self.backbone(images, training=training)
        rois, valid = self._test_regions(images, features)
        cls_logits, box_deltas = self._detect_head(features, rois, training)
        b, r, k = tf.shape(rois)[0], tf.shape(rois)[1], self.num_classes
        probs = tf.nn.softmax(cls_logits)[..., 1:]                                     # (b, r, K)
        probs = tf.where((tf.range(r)[None, :] < valid[:, None])[..., None], probs, 0.0)
        rep = tf.reshape(tf.tile(rois[:, :, None, :], [1, 1, k, 1]), (-1, 4))
        boxes = box_ops.clip(box_ops.decode(tf.reshape(box_deltas, (-1, 4)), rep, sampling.HEAD_WEIGHTS), h, w)
        return self._final_detections(tf.reshape(boxes, (b, r, k, 4)), probs)

    def _final_detections(self, boxes, probs):
        """Per-class boxes (b, r, K, 4) and scores (b, r, K) -> per class NMS at ``test_nms_iou``, scores
        at least ``score_threshold``, the best ``max_detections`` of each image."""
        import tensorflow as tf

        s = self.settings
        d = s["max_detections"]
        out = batched_nms(boxes, probs, d, d, s["test_nms_iou"], s["score_threshold"])
        return {"boxes": out.nmsed_boxes, "scores": out.nmsed_scores,
                "classes": tf.cast(out.nmsed_classes, tf.int32) + 1, "count": out.valid_detections}

    def propose(self, images):
        """The test proposals -> (boxes (b, n, 4), valid (b,)): for proposal recall."""
        return self._test_regions(images, self.backbone(images, training=False))


@keras.saving.register_keras_serializable(package="cnnctl")
class FasterRCNN(RegionCNN):
    """Backbone + Region Proposal Network + Fast R-CNN detector, trained jointly (approximate joint
    training, Faster R-CNN sec. 3.2: the proposals are constants to the detector's loss; both losses
    train the shared backbone)."""

    DEFAULTS = RPN_DEFAULTS
    PARTS = ("backbone", "rpn", "detector")
    region_losses = ("rpn_cls", "rpn_box")

    def __init__(self, backbone, rpn, detector, num_classes: int, feature_stride: int, rpn_stride: int, **settings):
        name = settings.pop("name", "faster_rcnn")
        super().__init__({"backbone": backbone, "rpn": rpn, "detector": detector}, num_classes, feature_stride,
                         name, **settings)
        self.rpn_stride = int(rpn_stride)                                          # the anchors' spacing
        pool = self.rpn_stride // self.feature_stride
        fh, fw = (int(d) // pool for d in backbone.outputs[0].shape[1:3])
        self.rpn_size = (fh, fw)                                                   # the grid the RPN slides over
        s = self.settings
        self.anchors = grid_anchors(fh, fw, self.rpn_stride, s["anchor_scales"], s["anchor_ratios"])   # (A, 4)

    def _extra_config(self) -> dict:
        return {"rpn_stride": self.rpn_stride}

    def _rpn(self, features, training):
        """-> objectness logits (b, A), deltas (b, A, 4)."""
        import tensorflow as tf

        logits, deltas = self.rpn(features, training=training)
        b = tf.shape(features)[0]
        a = len(self.anchors)                     # not -1: a replica's batch can be empty (see batched_nms)
        return tf.reshape(tf.cast(logits, tf.float32), (b, a)), tf.reshape(tf.cast(deltas, tf.float32), (b, a, 4))

    def proposals(self, logits, deltas, count: int):
        """Decode, clip, drop boxes under ``min_size``, NMS -> (boxes (b, count, 4), valid (b,) int32)."""
        import tensorflow as tf

        s = self.settings
        h, w = self.image_size
        b = tf.shape(logits)[0]
        anchors = tf.tile(tf.constant(self.anchors)[None], [b, 1, 1])
        boxes = box_ops.clip(box_ops.decode(tf.reshape(deltas, (-1, 4)), tf.reshape(anchors, (-1, 4))), h, w)
        boxes = tf.reshape(boxes, (b, len(self.anchors), 4))
        big = ((boxes[..., 2] - boxes[..., 0] >= s["min_size"]) & (boxes[..., 3] - boxes[..., 1] >= s["min_size"]))
        scores = tf.where(big, tf.sigmoid(logits), -1.0)           # too small: below the score threshold
        count = min(int(count), len(self.anchors))
        # one "class": the batched C++ NMS (non_max_suppression_padded is a slower TF-ops version)
        out = batched_nms(boxes[:, :, None, :], scores[..., None], count, count, s["nms_iou"], 0.0)
        return out.nmsed_boxes, out.valid_detections

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

    def _train_regions(self, images, features, gt_boxes, seeds, training):
        """The RPN's losses (Faster R-CNN eq. 1) and its proposals for the detector."""
        import tensorflow as tf

        s = self.settings
        logits, deltas = self._rpn(features, training)
        proposals, valid = self.proposals(tf.stop_gradient(logits), tf.stop_gradient(deltas),
                                          s["post_nms_train"] if training else s["post_nms_test"])
        return proposals, valid, self._rpn_losses(logits, deltas, gt_boxes, seeds)

    def _rpn_losses(self, logits, deltas, gt_boxes, seeds):
        """Faster R-CNN eq. 1 on sampled anchors: logits (b, A), deltas (b, A, 4) -> {"rpn_cls", "rpn_box"}."""
        import tensorflow as tf

        labels, targets = self._rpn_targets(gt_boxes, seeds)
        sampled = tf.cast(labels >= 0, tf.float32)
        positive = tf.cast(labels == sampling.POSITIVE, tf.float32)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=logits)
        rpn_cls = tf.reduce_sum(ce * sampled) / tf.maximum(tf.reduce_sum(sampled), 1.0)
        positions = tf.maximum(tf.cast(tf.shape(logits)[0], tf.float32), 1.0) * float(
            self.rpn_size[0] * self.rpn_size[1])                               # N_reg (b = 0: see batched_nms)
        rpn_box = self.settings["rpn_lambda"] * tf.reduce_sum(
            tf.reduce_sum(_smooth_l1(deltas - targets), -1) * positive) / positions
        return {"rpn_cls": rpn_cls, "rpn_box": rpn_box}

    def _test_regions(self, images, features):
        logits, deltas = self._rpn(features, False)
        return self.proposals(logits, deltas, self.settings["post_nms_test"])


@keras.saving.register_keras_serializable(package="cnnctl")
class FastRCNN(RegionCNN):
    """Fast R-CNN (Girshick, ICCV 2015): the whole image through the shared convolutions once, selective
    search proposals (``cnnctl.detection.selective_search``, computed on the CPU outside the graph and
    memoised per image) RoI-pooled from the shared map, and the detector. Training: ``rois_per_image``
    RoIs per image (the paper's 2 images x 64 RoIs is ``batch_size = 2``), 25 % foreground."""

    DEFAULTS = SEARCH_DEFAULTS

    def __init__(self, backbone, detector, num_classes: int, feature_stride: int, **settings):
        name = settings.pop("name", "fast_rcnn")
        super().__init__({"backbone": backbone, "detector": detector}, num_classes, feature_stride, name, **settings)

    def _search(self, images):
        import tensorflow as tf

        from cnnctl.detection.selective_search import batch_proposals

        s = self.settings
        n = int(s["max_proposals"])

        def run(batch):
            return batch_proposals(batch, n, s["search_mode"], int(s["search_min_size"]))

        boxes, valid = tf.numpy_function(run, [images], [tf.float32, tf.int32], stateful=False,
                                         name="selective_search")
        boxes.set_shape((None, n, 4))
        valid.set_shape((None,))
        # up to max_proposals rows per image, most of them padding on small images: keep the batch's
        # longest list only (RoI pooling and the fc layers run once per row)
        return boxes[:, :tf.reduce_max(valid)], valid

    def _train_regions(self, images, features, gt_boxes, seeds, training):
        boxes, valid = self._search(images)
        return boxes, valid, {}

    def _test_regions(self, images, features):
        return self._search(images)

    def propose(self, images):
        return self._search(images)


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
                max_detections: int = 100, alternating=()) -> keras.Model:
    """Faster R-CNN on a small VGG-style backbone trained from scratch (``widths``: one stage per entry,
    stride 2^(len - 1)) or on a pretrained ``encoder`` cut as Fast R-CNN sec. 2.2 cuts VGG16 (see
    ``pretrained_parts``). ``stride``: the anchors' spacing, the RPN's grid (the shared map is max-pooled
    to it when the backbone is finer). ``alternating``: the epochs of the 4 steps of alternating training
    (sec. 3.2, ``cnnctl.models.rcnn_alternating``); empty: approximate joint training. The rest: see
    ``DEFAULTS`` and the module docstring; the defaults are the papers' (anchors for ~600 px images:
    scale them for small ones)."""
    settings = {k: v for k, v in locals().items() if k in RPN_DEFAULTS}
    backbone, feature_stride, fcs = _shared_convolutions(input_shape, encoder, widths, batch_norm, stride, pool_size)
    if stride % feature_stride:
        raise ValueError(f"stride {stride} is not a multiple of the backbone's stride {feature_stride}")
    feature_shape = backbone.outputs[0].shape[1:]
    rpn = rpn_head(feature_shape, len(anchor_scales) * len(anchor_ratios), rpn_width, stride // feature_stride)
    detector = box_head(pool_size, int(feature_shape[-1]), num_classes, head_width, dropout, fcs)
    if not alternating:
        return FasterRCNN(backbone, rpn, detector, num_classes, feature_stride, stride, **settings)
    from cnnctl.models.rcnn_alternating import AlternatingFasterRCNN, check_stage_epochs

    # steps 1 and 2 start from the same weights (the paper: both from the ImageNet model)
    rpn_backbone = keras.models.clone_model(backbone)
    rpn_backbone.set_weights(backbone.get_weights())
    return AlternatingFasterRCNN(backbone, rpn, detector, rpn_backbone, num_classes, feature_stride, stride,
                                 stage_epochs=check_stage_epochs(alternating), **settings)


def _shared_convolutions(input_shape, encoder: str, widths, batch_norm: bool, stride: int, pool_size: int):
    """-> (backbone, its output stride, pretrained hidden fc weights for the detector)."""
    fcs = []
    if encoder:
        backbone, fcs = pretrained_parts(input_shape, encoder, stride, pool_size)
    else:
        backbone = conv_backbone(input_shape, tuple(widths), batch_norm=batch_norm)
    return backbone, output_stride(backbone), fcs


@register("fast_rcnn", task="detect", input_shape=(128, 128, 1), num_classes=10,
          paper="Girshick, Fast R-CNN (ICCV 2015), sec. 2; proposals: Uijlings et al., selective search (IJCV 2013)")
def fast_rcnn(num_classes: int = 10, input_shape=(128, 128, 1), encoder: str = "", stride: int = 8,
              widths=(16, 32, 64, 128), batch_norm: bool = True, head_width: int = 256, dropout: float = 0.0,
              max_proposals: int = 2000, search_mode: str = "fast", search_min_size: int = 0,
              rois_per_image: int = 64, foreground_fraction: float = 0.25, foreground_iou: float = 0.5,
              background_iou=(0.1, 0.5), pool_size: int = 7, score_threshold: float = 0.05,
              test_nms_iou: float = 0.3, max_detections: int = 100) -> keras.Model:
    """Fast R-CNN with selective-search proposals ("fast" mode, up to ``max_proposals``) on the same
    shared convolutions as ``faster_rcnn`` (``widths`` or a pretrained ``encoder``; ``stride`` only
    bounds where an encoder without fc layers is cut). Paper: 66.9 mAP on VOC 2007 test with VGG16
    (Table 4), 0.32 s/image on a K40 plus about 2 s of CPU selective search (sec. 4.4; R-CNN sec. 2.2)."""
    from cnnctl.detection.selective_search import MODES

    if search_mode not in MODES:
        raise ValueError(f"search_mode {search_mode!r}: valid modes are {', '.join(MODES)}")
    settings = {k: v for k, v in locals().items() if k in SEARCH_DEFAULTS}
    backbone, feature_stride, fcs = _shared_convolutions(input_shape, encoder, widths, batch_norm, stride, pool_size)
    detector = box_head(pool_size, int(backbone.outputs[0].shape[-1]), num_classes, head_width, dropout, fcs)
    return FastRCNN(backbone, detector, num_classes, feature_stride, **settings)
