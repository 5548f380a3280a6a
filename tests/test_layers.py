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
    # A loss weighted per element: with one weight per channel, gamma's gradient would be a sum of
    # normalised values, 0 in exact arithmetic, and the comparison one of rounding noise (it failed
    # at atol 1e-4 on one CPU here).
    weights = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y_ref = ref(xt, training=True)
        y_fused = fused(xt, training=True)
        loss_ref = tf.reduce_sum(y_ref * weights)
        loss_fused = tf.reduce_sum(y_fused * weights)
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


def _lrn_numpy(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """Section 3.3 of Krizhevsky et al. 2012, written out with loops over channels."""
    out = np.empty_like(a)
    channels = a.shape[-1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
        out[..., i] = a[..., i] / (k + alpha * s) ** beta
    return out


@pytest.mark.parametrize("size, k, alpha, beta", [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.5, 0.5)])
def test_local_response_normalization_matches_the_paper_formula(size, k, alpha, beta, tmp_path):
    import keras

    from cnnctl.layers import LocalResponseNormalization

    a = np.random.default_rng(0).normal(0, 20, (2, 3, 4, 9)).astype("float32")
    layer = LocalResponseNormalization(size=size, k=k, alpha=alpha, beta=beta)
    np.testing.assert_allclose(layer(a), _lrn_numpy(a, size, k, alpha, beta), rtol=1e-5)
    model = keras.Sequential([keras.Input((3, 4, 9)), layer])
    model.save(tmp_path / "lrn.keras")
    again = keras.models.load_model(tmp_path / "lrn.keras", safe_mode=True)
    assert again.layers[0].get_config()["alpha"] == alpha


def _locally_connected_numpy(x, kernel, bias, kh, kw, sh, sw):
    b, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((b, oh, ow, kernel.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :].reshape(b, -1)  # (di, dj, c) order
            out[:, i, j, :] = patch @ kernel[i * ow + j] + bias[i, j]
    return out


@pytest.mark.parametrize("kernel, strides", [((3, 3), (1, 1)), ((3, 2), (2, 1))])
def test_locally_connected_matches_a_direct_computation(kernel, strides, tmp_path):
    import keras
    import tensorflow as tf

    from cnnctl.layers import LocallyConnected2D

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 6, 3)).astype("float32")
    layer = LocallyConnected2D(4, kernel, strides=strides, bias_initializer="random_normal")
    y = layer(x)
    expected = _locally_connected_numpy(x, layer.kernel.numpy(), layer.bias.numpy(), *kernel, *strides)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # Weights are unshared: each position's kernel gets its own gradient.
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(xt) ** 2)
    gk = tape.gradient(loss, layer.kernel).numpy()
    assert not np.allclose(gk[0], gk[1])
    model = keras.Sequential([keras.Input((7, 6, 3)), layer])
    model.save(tmp_path / "lc.keras")
    again = keras.models.load_model(tmp_path / "lc.keras", safe_mode=True)
    np.testing.assert_allclose(again(x), y, rtol=1e-6)


def test_zfnet_filter_rms_cap_renormalises_only_filters_above_the_radius():
    import keras

    from cnnctl.models.alexnet import FilterRMSCap

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 3, 4, 5)).astype("float32")
    w[..., :2] *= 0.01                                   # two filters already below RMS 0.1
    capped = np.asarray(FilterRMSCap(0.1)(keras.ops.convert_to_tensor(w)))
    rms = np.sqrt((capped ** 2).mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(capped[..., :2], w[..., :2])
    np.testing.assert_allclose(rms[2:], 0.1, rtol=1e-5)
    ratio = capped[..., 2:] / w[..., 2:]                 # one scale factor per filter
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0, 0, 0], ratio.shape), rtol=1e-4)
