"""Every registered model: shape, finiteness, one step lowers the loss, .keras round trip."""

import numpy as np
import pytest

from cnnctl import models
from cnnctl.errors import CnnctlError

NAMES = models.MODELS.names()


def _small_shape(name):
    h, w, c = models.default_input_shape(name)
    return (16, 16, c) if name.startswith("resnet") else (h, w, c)  # 3 stages still fit in 16x16


@pytest.mark.parametrize("name", NAMES)
def test_model_trains_and_round_trips(name, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    shape = _small_shape(name)
    model = models.build(name, num_classes=3, input_shape=shape)
    x = np.random.default_rng(0).uniform(0, 255, (8,) + shape).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 3, 3)
    out = model(x, training=False)
    assert tuple(out.shape) == (8, 3)
    assert np.all(np.isfinite(np.asarray(out)))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy(from_logits=True))
    # train_on_batch returns the loss of the forward pass before its update (training mode, so
    # batch norm uses batch statistics): the 6th call shows the loss after 5 updates.
    losses = [float(model.train_on_batch(x, y)) for _ in range(6)]
    assert losses[-1] < losses[0], losses
    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_unknown_model_and_option_list_the_valid_ones():
    with pytest.raises(CnnctlError) as e:
        models.build("lenet")
    assert "did you mean 'lenet5'" in str(e.value) and "resnet20" in str(e.value)
    with pytest.raises(CnnctlError, match="its options are: widths, hidden, dropout"):
        models.build("fashion_cnn", depth=3)


@pytest.mark.parametrize("name, params", [
    ("lenet5", 61_706),           # LeNet-5 with full C3 connections, dense output
    ("resnet20", 272_474 - 1_376),  # 0.27 M (paper); no conv biases, BN gamma/beta counted
    ("resnet110", 1_736_058),     # 1.7 M (paper, Table 6)
])
def test_parameter_counts(name, params):
    m = models.build(name, num_classes=10)
    assert abs(m.count_params() - params) / params < 0.01


def test_cifar_resnet_depths_follow_6n_plus_2():
    m = models.build("resnet32", num_classes=10)
    convs = [l for l in m.layers if l.__class__.__name__ == "Conv2D"]
    assert len(convs) == 31  # 6n + 1 convs + the dense layer = 32 weighted layers
