"""The fast per-pixel loss and metrics of segmentation give Keras' own values (cnnctl.tasks.pixel_objectives)."""

import keras
import numpy as np
import pytest

from cnnctl.tasks.pixel_objectives import PixelAccuracy, PixelCrossEntropy, PixelMeanIoU


def _batch(seed=0, b=3, side=9, k=5, scale=4.0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(b, side, side, k)) * scale).astype(np.float32)
    labels = rng.integers(0, k, (b, side, side)).astype(np.int32)
    weights = rng.random((b, side, side)).astype(np.float32) * (rng.random((b, side, side)) > 0.2)
    return labels, logits, weights


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_equals_keras_sparse_categorical(weighted):
    labels, logits, weights = _batch()
    logits[0, 0, 0] = [300.0, -200.0, 0.0, 50.0, 299.0]      # large logits: exp() must not overflow
    w = weights if weighted else None
    ours = float(PixelCrossEntropy()(labels, logits, sample_weight=w))
    keras_ = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits, sample_weight=w))
    assert np.isfinite(ours)
    assert ours == pytest.approx(keras_, rel=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_smoothed_cross_entropy_equals_keras_categorical_with_label_smoothing(weighted):
    labels, logits, weights = _batch(seed=2)
    w = weights if weighted else None
    ours = float(PixelCrossEntropy(label_smoothing=0.1)(labels, logits, sample_weight=w))
    keras_ = float(keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        np.eye(5, dtype=np.float32)[labels], logits, sample_weight=w))
    assert ours == pytest.approx(keras_, rel=1e-5)
    assert ours != pytest.approx(float(PixelCrossEntropy()(labels, logits, sample_weight=w)), rel=1e-3)
    restored = PixelCrossEntropy.from_config(PixelCrossEntropy(label_smoothing=0.1).get_config())
    assert restored.label_smoothing == 0.1


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    import tensorflow as tf

    labels, logits, _ = _batch(b=2, side=4, k=3)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = PixelCrossEntropy(reduction="sum")(labels, x)
    expected = tf.nn.softmax(logits) - tf.one_hot(labels, 3)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), expected.numpy(), atol=1e-5)


def test_accuracy_equals_keras_sparse_categorical_accuracy():
    labels, logits, _ = _batch(seed=1)
    ours, keras_ = PixelAccuracy(), keras.metrics.SparseCategoricalAccuracy()
    for m in (ours, keras_):
        m.update_state(labels, logits)
        m.update_state(labels[:1], logits[:1])          # a running mean over batches of any size
    assert float(ours.result()) == pytest.approx(float(keras_.result()), abs=1e-6)
    assert 0.1 < float(ours.result()) < 0.5             # random logits: about 1 in 5 right


def test_mean_iou_equals_keras_mean_iou_and_resets():
    labels, logits, _ = _batch(seed=2, k=6)
    labels[labels == 5] = 0                               # class 5 absent from the truth ...
    logits[..., 4] -= 100.0                               # ... class 4 from the prediction: both count
    ours = PixelMeanIoU(6)
    keras_ = keras.metrics.MeanIoU(num_classes=6, sparse_y_true=True, sparse_y_pred=False)
    for m in (ours, keras_):
        m.update_state(labels, logits)
        m.update_state(labels[1:], logits[1:])
    assert float(ours.result()) == pytest.approx(float(keras_.result()), abs=1e-6)
    ours.reset_state()
    ours.update_state(labels, np.eye(6, dtype=np.float32)[labels] * 5.0)   # perfect prediction
    assert float(ours.result()) == pytest.approx(1.0)


def test_mean_iou_leaves_out_weight_zero_pixels():
    labels, logits, _ = _batch(seed=3)
    keep = np.zeros(labels.shape, np.float32)
    keep[0] = 1.0
    ours, first = PixelMeanIoU(5), PixelMeanIoU(5)
    ours.update_state(labels, logits, sample_weight=keep)
    first.update_state(labels[:1], logits[:1])
    assert float(ours.result()) == pytest.approx(float(first.result()))


def test_mean_iou_loads_from_a_keras_mean_iou_config():
    """Runs saved before this class existed carry keras.metrics.MeanIoU's arguments."""
    old = {"num_classes": 11, "name": "miou", "dtype": "float32", "ignore_class": None,
           "sparse_y_true": True, "sparse_y_pred": False, "axis": -1}
    m = PixelMeanIoU.from_config(old)
    assert (m.num_classes, m.name) == (11, "miou")
    assert PixelMeanIoU.from_config(m.get_config()).num_classes == 11
