"""The per-pixel loss and progress-bar metrics of segmentation, written for CPU speed.

A 128x128 scene batch of 32 with 11 classes has 5.8 million logits. On two CPU cores TF's fused
``SparseSoftmaxCrossEntropyWithLogits`` takes about 35 ms for them (forward and backward), Keras'
``SparseCategoricalAccuracy`` about 21 ms and ``MeanIoU`` (``tf.math.confusion_matrix``) about
40 ms, while a stem-4 U-Net's own forward and backward pass takes about 120 ms: the bookkeeping
cost as much as the network. The same quantities computed with plain reductions and a bincount
take about half the time (``benchmarks/segment_step.py`` prints the table):

- ``PixelCrossEntropy``: log-sum-exp of the logits minus the true class's logit, the value of
  ``SparseCategoricalCrossentropy(from_logits=True)``, with Keras' sample weights and reduction.
- ``PixelAccuracy``: a pixel counts as right when its true class's logit is the largest (ties, of
  measure zero for float logits, count as right); no argmax.
- ``PixelMeanIoU``: one argmax and a bincount of ``true * k + predicted`` -> the (k, k) confusion
  matrix; the mean IoU over the classes present in the truth or the prediction, as Keras' MeanIoU.

``tests/test_pixel_objectives.py`` checks each against the Keras class it replaces.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _true_logit(y_true, logits):
    """(b, h, w) labels, (b, h, w, k) logits -> (b, h, w) the logit of each pixel's true class."""
    labels = tf.cast(y_true, tf.int32)
    return tf.gather(logits, labels[..., None], batch_dims=len(labels.shape))[..., 0]


@keras.saving.register_keras_serializable(package="cnnctl")
class PixelCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy of per-pixel logits (b, h, w, k) against labels (b, h, w).

    ``label_smoothing`` = e: the target is (1 - e) on the true class plus e / k on every class, as
    Keras' ``label_smoothing``; the loss is then log-sum-exp minus (1 - e) x the true logit minus
    e x the mean logit."""

    def __init__(self, name: str = "pixel_cross_entropy", reduction: str = "sum_over_batch_size", dtype=None,
                 label_smoothing: float = 0.0):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        # subtracting the per-pixel maximum keeps exp() finite; it cancels in the difference below
        top = tf.stop_gradient(tf.reduce_max(logits, axis=-1, keepdims=True))
        shifted = logits - top
        log_sum = tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1))
        picked = tf.reduce_sum(shifted * tf.one_hot(tf.cast(y_true, tf.int32), tf.shape(logits)[-1]), axis=-1)
        if not self.label_smoothing:
            return log_sum - picked
        e = self.label_smoothing
        return log_sum - (1.0 - e) * picked - e * tf.reduce_mean(shifted, axis=-1)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="cnnctl")
class PixelAccuracy(keras.metrics.Mean):
    """Share of pixels whose true class has the largest logit: (b, h, w) labels, (b, h, w, k) logits."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        logits = tf.cast(y_pred, tf.float32)
        right = tf.cast(_true_logit(y_true, logits) >= tf.reduce_max(logits, axis=-1), tf.float32)
        return super().update_state(right, sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="cnnctl")
class PixelMeanIoU(keras.metrics.Metric):
    """Mean IoU over argmax of logits (b, h, w, k) against labels (b, h, w), from a running (k, k)
    confusion matrix (rows: truth, columns: prediction). Sample weights: 0 leaves a pixel out, any
    other weight counts it once (the loss's weights are not class frequencies to undo)."""

    def __init__(self, num_classes: int, name: str = "miou", dtype=None, **legacy):
        # ``legacy``: the keras.metrics.MeanIoU arguments that runs saved before this class was
        # written carry in their compile config (sparse_y_true, ignore_class, ...); all were defaults
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.total_cm = self.add_variable((self.num_classes, self.num_classes), initializer="zeros",
                                          dtype="float32", name="total_confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        k = self.num_classes
        predicted = tf.argmax(tf.reshape(y_pred, (-1, k)), axis=-1, output_type=tf.int32)
        cells = tf.reshape(tf.cast(y_true, tf.int32), (-1,)) * k + predicted
        if sample_weight is not None:            # weight-0 pixels are left out
            cells = tf.boolean_mask(cells, tf.reshape(sample_weight, (-1,)) > 0)
        counts = tf.math.bincount(cells, minlength=k * k, maxlength=k * k, dtype=tf.float32)
        self.total_cm.assign_add(tf.reshape(counts, (k, k)))

    def result(self):
        cm = tf.convert_to_tensor(self.total_cm)
        hits = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - hits
        present = union > 0
        return tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, hits / tf.maximum(union, 1.0), 0.0)),
                                     tf.reduce_sum(tf.cast(present, tf.float32)))

    def reset_state(self):
        self.total_cm.assign(tf.zeros_like(self.total_cm))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name}
