"""The GAN models as the papers build them, and the adversarial train step's rules."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cnnctl import models
from cnnctl.models.gans import GAN, Maxout


def _layers(model, kind):
    return [la for la in model.layers if isinstance(la, kind)]


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3)])
def test_dcgan_follows_the_papers_guidelines(shape):
    gan = models.build("dcgan", num_classes=0, input_shape=shape, width=8)
    g, d = gan.generator, gan.discriminator
    assert g.output_shape == (None, *shape) and d.output_shape == (None, 1)
    # no pooling anywhere; strided convolutions in D, fractionally-strided in G
    assert not [la for la in g.layers + d.layers if "Pooling" in type(la).__name__]
    assert all(c.strides == (2, 2) for c in _layers(d, keras.layers.Conv2D))
    assert all(c.strides == (2, 2) for c in _layers(g, keras.layers.Conv2DTranspose))
    # BN after every G layer but the output, after every D conv but the first
    g_convs, d_convs = _layers(g, keras.layers.Conv2DTranspose), _layers(d, keras.layers.Conv2D)
    assert len(_layers(g, keras.layers.BatchNormalization)) == len(g_convs)       # project + all but to_image
    assert len(_layers(d, keras.layers.BatchNormalization)) == len(d_convs) - 1
    assert g.get_layer("image").activation.__name__ == "tanh"
    assert {la.negative_slope for la in _layers(d, keras.layers.LeakyReLU)} == {0.2}
    assert not _layers(g, keras.layers.LeakyReLU) and len(_layers(g, keras.layers.ReLU)) == len(g_convs)
    # N(0, 0.02) weights
    assert np.std(g_convs[0].kernel.numpy()) == pytest.approx(0.02, rel=0.1)


def test_macs_count_the_transposed_convolutions_and_both_networks():
    gan = models.build("dcgan", num_classes=0)                       # 28x28, width 64
    # G: project 100 x 7*7*128; up1: each of the 7x7 input pixels scatters a 4x4x64x128 kernel;
    # to_image: each of the 14x14 input pixels a 4x4x1x64 kernel
    g = 100 * 7 * 7 * 128 + 7 * 7 * (4 * 4 * 64 * 128) + 14 * 14 * (4 * 4 * 1 * 64)
    # D: down1 14x14 outputs x 4x4x1x64, down2 7x7 outputs x 4x4x64x128, logit 6272
    d = 14 * 14 * (4 * 4 * 1 * 64) + 7 * 7 * (4 * 4 * 64 * 128) + 7 * 7 * 128
    assert models.count_macs(gan.generator) == g and models.count_macs(gan.discriminator) == d
    assert models.count_macs(gan) == g + d


def test_the_wgan_gp_critic_has_no_batch_norm_and_wgan_clips():
    critic = models.build("wgan_gp", num_classes=0, width=8).discriminator
    assert not _layers(critic, keras.layers.BatchNormalization) and _layers(critic, keras.layers.LayerNormalization)
    w = models.build("wgan", num_classes=0, width=8)
    assert (w.loss_kind, w.clip, w.d_steps) == ("wasserstein", 0.01, 5)


def test_cgan_mlp_has_the_layer_sizes_of_mirza_and_osindero():
    gan = models.build("cgan_mlp", num_classes=10)
    g, d = gan.generator, gan.discriminator
    sizes = {la.name: la.units for la in _layers(g, keras.layers.Dense)}
    assert sizes == {"z_hidden": 200, "y_hidden": 1000, "hidden1": 1200, "pixels": 784}
    maxouts = {la.name: (la.units, la.pieces) for la in _layers(d, Maxout)}
    assert maxouts == {"x_maxout": (240, 5), "y_maxout": (50, 5), "joint_maxout": (240, 4)}
    assert [i.shape[-1] for i in g.inputs] == [100, 10] and [tuple(i.shape[1:]) for i in d.inputs] == [(28, 28, 1), (10,)]


def test_maxout_is_the_max_over_its_linear_pieces():
    layer = Maxout(3, 4)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    out = layer(x).numpy()
    lin = x @ layer.linear.kernel.numpy() + layer.linear.bias.numpy()          # (5, 12)
    assert np.allclose(out, lin.reshape(5, 3, 4).max(axis=-1), atol=1e-6)


def _compiled(name, num_classes=0, **options):
    gan = models.build(name, num_classes=num_classes, **options)
    gan.compile(optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3))
    return gan


def _batch(n):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28, 1)).astype("float32"), np.eye(10, dtype="float32")[rng.integers(0, 10, n)]


def test_n_critic_updates_of_the_critic_per_generator_update_and_clipping():
    gan = models.build("wgan", num_classes=0, width=8, n_critic=3)
    gan.compile(optimizer=keras.optimizers.RMSprop(5e-5), d_optimizer=keras.optimizers.RMSprop(5e-5))
    x, y = _batch(24)
    gan.fit(x, y, batch_size=12, epochs=1, verbose=0, shuffle=False)            # 2 generator steps
    assert int(gan.optimizer.iterations) == 2 and int(gan.d_optimizer.iterations) == 6
    weights = np.concatenate([w.numpy().ravel() for w in gan.discriminator.trainable_weights])
    assert np.abs(weights).max() <= 0.01 + 1e-7 and np.abs(weights).max() > 0.009    # clipped, not zeroed


def test_the_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared():
    gan = _compiled("wgan_gp", width=8)
    w = np.random.default_rng(0).normal(size=(28 * 28,)).astype("float32") * 0.1
    inp = keras.Input((28, 28, 1))
    gan.discriminator = keras.Model(inp, keras.layers.Dense(1, use_bias=False)(keras.layers.Flatten()(inp)))
    gan.discriminator.layers[-1].kernel.assign(w[:, None])
    real = np.random.default_rng(1).uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
    fake = np.random.default_rng(2).uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
    penalty = float(gan._gradient_penalty(real, fake, None))
    assert penalty == pytest.approx((np.linalg.norm(w) - 1) ** 2, rel=1e-4)


def test_instance_noise_is_annealed_linearly_to_zero():
    gan = _compiled("dcgan", width=8, instance_noise=0.2, noise_anneal=0.5)
    gan.total_steps = 100                                  # anneals over the first 50 generator steps
    for step, expected in ((0, 0.2), (25, 0.1), (50, 0.0), (80, 0.0)):
        gan.optimizer.iterations.assign(step)
        assert float(gan._sigma()) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax"])
def test_the_generator_losses_of_the_2014_paper(loss):
    gan = _compiled("gan_mlp", loss=loss)
    logits = np.array([[-2.0], [0.0], [3.0]], "float32")
    d = 1 / (1 + np.exp(-logits))
    expected = -np.mean(np.log(d)) if loss == "nonsaturating" else np.mean(np.log(1 - d))
    assert float(gan._g_loss(logits)) == pytest.approx(expected, rel=1e-5)


def test_a_saved_gan_loads_with_both_networks(tmp_path):
    gan = _compiled("dcgan", num_classes=10, width=8, conditional=True)
    x, y = _batch(16)
    gan.fit(x, y, batch_size=16, epochs=1, verbose=0)
    gan.save(tmp_path / "g.keras")
    back = keras.saving.load_model(tmp_path / "g.keras")
    assert isinstance(back, GAN) and back.num_classes == 10
    z = np.random.default_rng(0).normal(size=(3, 100)).astype("float32")
    assert np.array_equal(back.generator([z, y[:3]]).numpy(), gan.generator([z, y[:3]]).numpy())
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(back.discriminator.weights, gan.discriminator.weights))


def test_a_last_batch_smaller_than_n_critic_still_trains_every_critic_step():
    gan = models.build("wgan", num_classes=0, width=8, n_critic=5)
    gan.compile(optimizer=keras.optimizers.RMSprop(5e-5), d_optimizer=keras.optimizers.RMSprop(5e-5))
    x, y = _batch(13)
    logs = gan.fit(x, y, batch_size=10, epochs=1, verbose=0, shuffle=False).history   # batches of 10 and 3
    assert int(gan.d_optimizer.iterations) == 10 and all(np.isfinite(v[-1]) for v in logs.values())
