"""The per-pixel loss and progress-bar metrics of segmentation, written for CPU speed.

A 128x128 scene batch of 32 with 11 classes has 5.8 million logits. On two CPU cores Keras' loss,
accuracy and MeanIoU on them cost as much time as a stem-4 U-Net's own forward and backward pass.
The same quantities computed with plain reductions and a bincount, each small function compiled
by XLA, take a fraction of it (``benchmarks/segment_step.py`` prints the table):

- ``PixelCrossEntropy``: log-sum-exp of the logits minus the true class's logit, the value of
  ``SparseCategoricalCrossentropy(from_logits=True)``, with Keras' sample weights and reduction.
- ``PixelAccuracy``: the share of pixels whose argmax is the true class, as Keras'.
- ``PixelMeanIoU``: one argmax and a bincount of ``true * k + predicted`` -> the (k, k) confusion
  matrix; the mean IoU over the classes present in the truth or the prediction, as Keras' MeanIoU.

``tests/test_pixel_objectives.py`` checks each against the Keras class it replaces.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The three functions below are compiled by XLA on their own (the network around them is not: XLA
# bypasses oneDNN's convolutions). XLA fuses each into one or two passes over the logits, where TF
# runs every elementwise op and reduction as its own pass (benchmarks/segment_step.py measures both).
# ``label_smoothing`` is a Python float: one compiled function per value (and per shape).

@tf.function(jit_compile=True)
def _pixel_cross_entropy(labels, logits, label_smoothing: float):
    """(b, h, w) int32 labels, (b, h, w, k) logits of any float dtype -> (b, h, w) float32 losses."""
    logits = tf.cast(logits, tf.float32)
    # subtracting the per-pixel maximum keeps exp() finite; it cancels in the difference below
    shifted = logits - tf.stop_gradient(tf.reduce_max(logits, axis=-1, keepdims=True))
    log_sum = tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1))
    picked = tf.reduce_sum(shifted * tf.one_hot(labels, tf.shape(logits)[-1]), axis=-1)
    if not label_smoothing:
        return log_sum - picked
    e = label_smoothing
    return log_sum - (1.0 - e) * picked - e * tf.reduce_mean(shifted, axis=-1)


@tf.function(jit_compile=True)
def _pixel_right(labels, logits):
    """(b, h, w) int32 labels, (b, h, w, k) logits -> (b, h, w) float32: 1 where the argmax is the label."""
    return tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)


@tf.function(jit_compile=True)
def _confusion_cells(labels, logits, k: int):
    """(b, h, w) int32 labels, (b, h, w, k) logits -> (b*h*w,) int32 cells ``label * k + argmax``."""
    return tf.reshape(labels * k + tf.argmax(logits, axis=-1, output_type=tf.int32), (-1,))


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
        return _pixel_cross_entropy(tf.cast(y_true, tf.int32), y_pred, self.label_smoothing)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="cnnctl")
class PixelAccuracy(keras.metrics.Mean):
    """Share of pixels whose argmax is their true class: (b, h, w) labels, (b, h, w, k) logits."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        right = _pixel_right(tf.cast(y_true, tf.int32), y_pred)
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
        cells = _confusion_cells(tf.cast(y_true, tf.int32), y_pred, k)
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
