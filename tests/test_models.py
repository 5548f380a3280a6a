"""Every registered model: shape, finiteness, one step lowers the loss, .keras round trip."""

import numpy as np
import pytest

from cnnctl import models
from cnnctl.errors import CnnctlError

# Image classifiers; caption generators take features and tokens (tests/test_caption.py).
NAMES = [n for n in models.MODELS.names() if models.MODELS.get(n).meta.get("task") == "classify"]
GRADIENT_NAMES = [n for n in NAMES if models.MODELS.get(n).meta.get("fit") != "memorize"]


def _small_shape(name):
    if name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
        return (16, 16, 3)  # 3 stages still fit in 16x16
    return models.test_input_shape(name)


@pytest.mark.parametrize("name", GRADIENT_NAMES)
def test_model_trains_and_round_trips(name, tmp_path):
    import inspect

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    shape = _small_shape(name)
    options = {}
    if "dropout" in inspect.signature(models.MODELS.get(name).fn).parameters:
        options["dropout"] = 0.0  # a deterministic training-mode loss
    model = models.build(name, num_classes=3, input_shape=shape, **options)
    x = np.random.default_rng(0).uniform(0, 255, (8,) + shape).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 3, 3)
    out = model(x, training=False)
    assert tuple(out.shape) == (8, 3)
    assert np.all(np.isfinite(np.asarray(out)))

    # One gradient step lowers the training loss on a fixed batch: take the gradient once, then
    # step along it with shrinking sizes (backtracking); a wrong or zero gradient never gets lower.
    ce = keras.losses.CategoricalCrossentropy(from_logits=True)

    def loss_fn():
        network = getattr(model, "network", None)  # auxiliary classifiers: main + 0.3 x each head
        if network is None:
            return ce(y, model(x, training=True))
        main, *aux = network(x, training=True)
        return ce(y, main) + sum(model.aux_weight * ce(y, a) for a in aux)

    weights = model.trainable_variables
    with tf.GradientTape() as tape:
        loss_t = loss_fn()
    loss0 = float(loss_t)
    grads = tape.gradient(loss_t, weights)
    assert all(g is not None for g in grads), "every trainable weight gets a gradient"
    norm = float(tf.linalg.global_norm(grads))
    assert np.isfinite(norm) and norm > 0
    start = [w.numpy() for w in weights]
    lowered = False
    for step in (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5):  # deep plain nets at init are sharp (|g| ~ 1e5)
        for w, w0, g in zip(weights, start, grads):
            w.assign(w0 - step * g.numpy() / norm)
        if float(loss_fn()) < loss0:
            lowered = True
            break
    assert lowered, f"no step along the gradient lowered the loss {loss0}"

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


def _conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def _googlenet_table1_params() -> int:
    """GoogLeNet's parameters worked out from Szegedy et al. 2015, Table 1 (no auxiliary heads).

    Stem: conv 7x7/2 (3 -> 64), 1x1 reduce (64 -> 64), conv 3x3 (64 -> 192). Each inception row
    gives (input channels, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); every
    convolution has a bias; LRN and pooling have no weights; the classifier is 1024 -> 1000.
    """
    n = _conv(7, 3, 64) + _conv(1, 64, 64) + _conv(3, 64, 192)
    rows = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64),             # 3a, 3b
            (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64),              # 4a, 4b
            (512, 128, 128, 256, 24, 64, 64), (512, 112, 144, 288, 32, 64, 64),             # 4c, 4d
            (528, 256, 160, 320, 32, 128, 128),                                             # 4e
            (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]         # 5a, 5b
    for cin, a, b, c, d, e, f in rows:
        n += _conv(1, cin, a) + _conv(1, cin, b) + _conv(3, b, c) + _conv(1, cin, d) + _conv(5, d, e) + _conv(1, cin, f)
    return n + 1024 * 1000 + 1000


@pytest.mark.parametrize("name, options, params", [
    # Trainable parameters at the papers' input size, 1000 classes, exactly as torchvision counts them.
    ("alexnet", {}, 62_378_344),                   # 96-256-384-384-256, 227x227, ungrouped
    ("alexnet", {"towers": 2}, 60_965_224),        # the two-GPU split as grouped convolutions
    ("vgg16", {}, 138_357_544),
    ("vgg19", {}, 143_667_240),
    ("resnet18", {}, 11_689_512),                  # no conv biases before batch norm
    ("resnet50", {}, 25_557_032),
    ("resnet152", {}, 60_192_808),
    ("googlenet", {"aux": False}, _googlenet_table1_params()),   # 6,998,552 from Table 1
])
def test_imagenet_parameter_counts_match_the_references_exactly(name, options, params):
    assert models.trainable_params(models.build(name, num_classes=1000, **options)) == params


@pytest.mark.parametrize("name, reference", [("inception_v3", "InceptionV3"),
                                             ("inception_resnet_v2", "InceptionResNetV2")])
def test_inception_counts_equal_keras_applications_built_beside_them(name, reference):
    """Trainable and total (with batch norm's moving statistics) against keras.applications' network."""
    import keras

    ours = models.build(name, num_classes=1000, **({"aux": False} if name == "inception_v3" else {}))
    theirs = getattr(keras.applications, reference)(weights=None)
    assert models.trainable_params(ours) == models.trainable_params(theirs)   # 23,817,352 / 55,813,192
    assert ours.count_params() == theirs.count_params()                      # 23,851,784 / 55,873,736


def test_inception_v4_is_timms_count_less_the_batch_norm_scales_it_omits():
    """timm's inception_v4 (batch norm with a scale) has 42,679,816; ours has no BN scale (as the
    paper's TF-slim model): the difference is exactly one gamma per batch-norm channel."""
    model = models.build("inception_v4", num_classes=1000)
    bn_channels = sum(int(layer.weights[0].shape[0]) for layer in model.layers
                      if "BatchNormalization" in type(layer).__name__ and not layer.scale)
    assert models.trainable_params(model) == 42_648_232
    assert models.trainable_params(model) + bn_channels == 42_679_816


def test_small_parameter_counts():
    assert models.trainable_params(models.build("lenet5", num_classes=10)) == 61_706  # full C3, dense output
    # He et al. 2016, Table 6 states "0.27M" and "1.7M": equal at the precision the paper gives.
    resnet20 = models.trainable_params(models.build("resnet20", num_classes=10))
    resnet110 = models.trainable_params(models.build("resnet110", num_classes=10))
    assert round(resnet20 / 1e6, 2) == 0.27 and round(resnet110 / 1e6, 1) == 1.7
    assert (resnet20, resnet110) == (269_722, 1_727_962)   # the exact counts docs/classification.md gives


def test_cifar_resnet_depths_follow_6n_plus_2():
    m = models.build("resnet32", num_classes=10)
    convs = [l for l in m.layers if l.__class__.__name__ == "Conv2D"]
    assert len(convs) == 31  # 6n + 1 convs + the dense layer = 32 weighted layers


def test_googlenet_training_loss_adds_the_weighted_auxiliary_losses():
    import keras

    keras.utils.set_random_seed(0)
    model = models.build("googlenet", num_classes=3, input_shape=(80, 80, 3), dropout=0.0)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(0, 255, (4, 80, 80, 3)).astype("float32")
    y = keras.ops.one_hot(np.arange(4) % 3, 3)
    ce = keras.losses.CategoricalCrossentropy(from_logits=True)
    main = model(x, training=True)
    total = float(model.compute_loss(x=x, y=y, y_pred=main, training=True))
    aux = model._aux_logits
    assert len(aux) == 2
    expected = float(ce(y, main)) + 0.3 * sum(float(ce(y, a)) for a in aux)
    assert total == pytest.approx(expected, rel=1e-5)
    # At inference the heads are not used: one output, no auxiliary term.
    assert model(x, training=False).shape == (4, 3)
    assert float(model.compute_loss(x=x, y=y, y_pred=model(x), training=False)) == pytest.approx(
        float(ce(y, model(x))), rel=1e-5)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_knn_votes_of_the_nearest_neighbours_match_numpy_and_round_trip(metric, tmp_path):
    import keras

    rng = np.random.default_rng(1)
    memory = rng.integers(0, 256, (300, 6, 5, 2)).astype(np.uint8)
    labels = rng.integers(0, 4, 300)
    queries = rng.uniform(0, 255, (37, 6, 5, 2)).astype("float32")
    model = models.build("knn", num_classes=4, input_shape=(6, 5, 2), k=7, metric=metric, memory_size=300)
    model.get_layer("neighbours").memorize(memory, labels)
    predicted = np.argmax(np.asarray(model(queries)), axis=1)

    diff = queries.reshape(37, 1, -1).astype(np.float64) - memory.reshape(1, 300, -1)
    dist = np.abs(diff).sum(-1) if metric == "l1" else np.sqrt((diff ** 2).sum(-1))
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :7]
    votes = np.stack([np.bincount(labels[row], minlength=4) for row in nearest])
    for q in range(37):  # the most votes; a tie goes to the class of the single nearest neighbour
        best = np.flatnonzero(votes[q] == votes[q].max())
        nearest_class = labels[nearest[q, 0]]
        if nearest_class in best:
            assert predicted[q] == nearest_class
        else:
            assert predicted[q] in best
    probs = np.asarray(keras.ops.softmax(model(queries)))
    np.testing.assert_allclose(probs, votes / 7, atol=2e-3)  # softmax of the output = vote shares

    path = tmp_path / "knn.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(queries)), np.asarray(model(queries)))


@pytest.mark.parametrize("shape", [(28, 28, 1), (42, 42, 1), (60, 60, 1)])
def test_stn_baselines_have_the_parameter_budget_of_their_st_versions(shape):
    for st, plain in (("st_cnn", "cnn_baseline"), ("st_fcn", "fcn_baseline")):
        a = models.trainable_params(models.build(st, num_classes=10, input_shape=shape))
        b = models.trainable_params(models.build(plain, num_classes=10, input_shape=shape))
        assert abs(a - b) / a < 0.03, (st, shape, a, b)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_accepts_grey_images(name):
    """Users' data is often grey: RGB-statistics models average their normalisation over channels."""
    h, w, _ = _small_shape(name)
    model = models.build(name, num_classes=4, input_shape=(h, w, 1))
    out = model(np.full((2, h, w, 1), 100.0, "float32"), training=False)
    assert tuple(out.shape) == (2, 4) and np.all(np.isfinite(np.asarray(out)))


def test_alexnet_kernel_init_is_the_papers_unless_asked_and_a_bad_name_is_one_message():
    import numpy as np

    from cnnctl.errors import CnnctlError

    def conv1_std(**options):
        model = models.build("alexnet", num_classes=10, input_shape=(67, 67, 1), **options)
        return float(np.std(model.get_layer("conv1").kernel.numpy())), model.get_layer("fc7").bias.numpy()

    paper, paper_bias = conv1_std()
    he, he_bias = conv1_std(kernel_init="he_normal")
    assert abs(paper - 0.01) < 0.001                                 # N(0, 0.01), sec. 5
    assert abs(he - np.sqrt(2 / 121)) < 0.1 * np.sqrt(2 / 121)       # fan_in 11 x 11 x 1; truncated normal
    assert (paper_bias == 1).all() and (he_bias == 1).all()          # the biases stay the paper's
    with pytest.raises(CnnctlError, match="model.kernel_init = 'hee_normal' is not an initializer"):
        models.build("alexnet", num_classes=10, input_shape=(67, 67, 1), kernel_init="hee_normal")
