"""FusedBatchNormalization is Keras' BatchNormalization, computed by the fused kernel."""

import numpy as np
import pytest


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_fused_batch_norm_matches_keras(center, scale, tmp_path):
    import keras
    import tensorflow as tf

    from cnnctl.layers import FusedBatchNormalization

    x = np.random.default_rng(0).normal(3.0, 2.0, (6, 5, 4, 3)).astype("float32")
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, center=center, scale=scale)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-3, center=center, scale=scale)
    ref.build(x.shape)
    fused.build(x.shape)
    rng = np.random.default_rng(1)
    for r, f in zip(ref.weights, fused.weights):
        value = rng.uniform(0.5, 1.5, r.shape).astype("float32")
        r.assign(value)
        f.assign(value)
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y_ref = ref(xt, training=True)
        y_fused = fused(xt, training=True)
        loss_ref = tf.reduce_sum(y_ref * tf.range(1.0, 4.0))
        loss_fused = tf.reduce_sum(y_fused * tf.range(1.0, 4.0))
    np.testing.assert_allclose(y_fused, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(loss_fused, xt), tape.gradient(loss_ref, xt), rtol=1e-3, atol=1e-4)
    for gr, gf in zip(tape.gradient(loss_ref, ref.trainable_weights), tape.gradient(loss_fused, fused.trainable_weights)):
        np.testing.assert_allclose(gf, gr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, ref.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, ref.moving_variance, rtol=1e-5)
    # Inference uses the moving statistics.
    np.testing.assert_allclose(fused(xt, training=False), ref(xt, training=False), rtol=1e-4, atol=1e-4)


def test_frozen_fused_batch_norm_runs_in_inference_mode():
    import numpy as np

    from cnnctl.layers import FusedBatchNormalization

    layer = FusedBatchNormalization()
    x = np.random.default_rng(0).normal(5, 2, (4, 3, 3, 2)).astype("float32")
    layer.build(x.shape)
    layer.trainable = False
    before = [w.numpy().copy() for w in layer.weights]
    y = layer(x, training=True)
    for b, w in zip(before, layer.weights):
        np.testing.assert_array_equal(b, w.numpy())   # moving statistics untouched
    np.testing.assert_allclose(y, (x - 0.0) / np.sqrt(1.0 + layer.epsilon), rtol=1e-5)
