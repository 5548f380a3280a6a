"""cnnctl visualize: the PNG files, and each method against a hand computation on a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _conv2d(x, k):
    """'same' cross-correlation of one (h, w) image with (3, 3, out) kernels -> (h, w, out)."""
    h, w = x.shape
    p = np.pad(x, 1)
    return np.stack([sum(p[i:i + h, j:j + w] * k[i, j, c] for i in range(3) for j in range(3))
                     for c in range(k.shape[-1])], axis=-1)


def test_deconvnet_of_conv_relu_pool_matches_a_hand_projection():
    import keras

    from cnnctl.viz import inside

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 1, 2)).astype("float32")
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, padding="same", use_bias=False, name="conv"),
                              keras.layers.ReLU(name="relu"), keras.layers.MaxPooling2D(2, name="pool")])
    model.get_layer("conv").set_weights([kernel])
    x = rng.uniform(0, 1, (1, 6, 6, 1)).astype("float32")
    channel, position = 1, (1, 2)
    projection = inside._deconv_chain(model, x, model.get_layer("pool"), channel, position)

    # By hand: forward, the winning position of the pooled unit, then unpool -> relu -> transposed conv.
    a = np.maximum(_conv2d(x[0, ..., 0], kernel[:, :, 0, :]), 0)          # (6, 6, 2)
    window = a[2:4, 4:6, channel]
    dy, dx = np.unravel_index(np.argmax(window), window.shape)
    value = window[dy, dx]
    cy, cx = 2 + dy, 4 + dx                                               # where the switch points
    expected = np.zeros((8, 8))                                           # padded input plane
    expected[cy:cy + 3, cx:cx + 3] += max(value, 0) * kernel[:, :, 0, channel]
    np.testing.assert_allclose(projection[..., 0], expected[1:7, 1:7], rtol=1e-5, atol=1e-6)
    assert inside.is_chain(model)


def test_max_pool_switches_record_the_argmax_positions():
    from cnnctl.viz.inside import max_pool_with_switches, unpool

    x = np.random.default_rng(1).normal(size=(2, 6, 4, 3)).astype("float32")
    pooled, switches = max_pool_with_switches(x, (2, 2), (2, 2))
    pooled, switches = pooled.numpy(), switches.numpy()
    for b, i, j, c in np.ndindex(*pooled.shape):
        bb, yy, xx, cc = np.unravel_index(switches[b, i, j, c], x.shape)
        assert (bb, cc) == (b, c) and 2 * i <= yy < 2 * i + 2 and 2 * j <= xx < 2 * j + 2
        assert x[bb, yy, xx, cc] == x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].max() == pooled[b, i, j, c]
    back = unpool(pooled, switches, x.shape).numpy()
    assert np.count_nonzero(back) == pooled.size and np.isclose(back.sum(), pooled.sum())


def test_occlusion_peaks_exactly_on_the_only_region_the_model_looks_at():
    import keras

    from cnnctl.viz import inside

    inputs = keras.Input((12, 12, 1))
    region = keras.layers.Cropping2D(((6, 2), (2, 6)), name="region")(inputs)   # rows 6-9, cols 2-5
    logits = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(region))
    model = keras.Model(inputs, logits)
    w = np.zeros((16, 2), "float32")
    w[:, 0] = 0.0005                                                      # logit 1.6: p far from 1
    model.get_layer("logits").set_weights([w, np.zeros(2, "float32")])
    x = np.zeros((12, 12, 1), "float32")
    x[6:10, 2:6] = 200.0
    prob, feat, label, p0, size, stride, *_ = inside.occlusion(model, x, 0, size=3, stride=1, fill=0.0)
    assert (size, stride) == (3, 1)
    assert feat is None and label == 0 and prob.shape == (10, 10)
    for i, j in np.ndindex(*prob.shape):
        overlaps = i + 3 > 6 and i < 10 and j + 3 > 2 and j < 6
        if overlaps:
            assert prob[i, j] < p0
        else:
            assert prob[i, j] == pytest.approx(p0, abs=1e-7)
    i, j = np.unravel_index(np.argmin(prob), prob.shape)
    assert 6 <= i <= 7 and 2 <= j <= 3                                    # the square fully inside the region


def test_gradcam_of_a_linear_model_is_its_analytic_value():
    import keras

    from cnnctl.viz import inside

    rng = np.random.default_rng(2)
    inputs = keras.Input((8, 8, 2))
    maps = keras.layers.Conv2D(3, 1, use_bias=False, name="maps")(inputs)
    out = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(maps))
    model = keras.Model(inputs, out)
    x = rng.uniform(0, 255, (8, 8, 2)).astype("float32")
    cam, label, name = inside.gradcam(model, x, "maps", label=1)
    a = x @ model.get_layer("maps").get_weights()[0][0, 0]                # (8, 8, 3) maps
    wc = model.get_layer("logits").get_weights()[0][:, 1]                 # (3,) class-1 weights
    expected = np.maximum((a * (wc / 64.0)).sum(axis=-1), 0)              # alpha_k = w_k / (h w)
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-4)
    assert name == "maps" and label == 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import _pattern

    root = tmp_path_factory.mktemp("viz")
    data = root / "images"
    for c, name in enumerate(["bars", "stripes", "disc"]):
        (data / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(_pattern(c, i)).save(data / name / f"{i:02d}.png")
    r = invoke("train", "--data", data, "--epochs", "2", "--name", "v", "--out-dir", root / "runs",
               "--strategy", "default", "--precision", "float32", "--batch-size", "8", "--set", "optimizer.lr=0.01")
    assert r.exit_code == 0, r.output
    return root / "runs" / "v", data


@pytest.mark.parametrize("kind, extra, files", [
    ("filters", [], ["filters-conv1.png"]),
    ("filters", ["--layer", "conv2", "--maximise", "4"], ["maximise-conv2.png"]),
    ("activations", ["--layer", "conv1"], ["activations-conv1-test_image_0.png"]),
    ("deconvnet", [], ["deconvnet-conv2.png"]),
    ("deconvnet", ["--dataset", "12", "--top", "4"], ["deconvnet-conv2.png"]),
    ("occlusion", ["--count", "2"], ["occlusion-test_image_0.png"]),
    ("saliency", ["--count", "2"], ["saliency-test_image_0.png"]),
    ("gradcam", ["--count", "2"], ["gradcam-test_image_0.png"]),
    ("curves", [], ["curves.png"]),
    ("confusion", [], ["confusion.png"]),
])
def test_every_kind_writes_readable_pngs(trained_run, tmp_path, kind, extra, files):
    run, _ = trained_run
    r = invoke("visualize", kind, run, "--out", tmp_path, *extra)
    assert r.exit_code == 0, r.output
    for name in files:
        with Image.open(tmp_path / name) as img:
            img.load()
            assert img.format == "PNG" and img.size[0] >= 200 and img.size[1] >= 150


def test_bad_layer_lists_the_layers_with_shapes_and_images_are_accepted(trained_run, tmp_path):
    run, data = trained_run
    r = invoke("visualize", "activations", run, "--layer", "conv9")
    assert r.exit_code == 2 and "has no layer 'conv9'" in r.output and "did you mean" in r.output
    assert "conv1 (28, 28, 32)" in r.output and "decoded" not in r.output      # before any image is read
    assert "Traceback" not in r.output
    image = min((data / "disc").iterdir())
    r = invoke("visualize", "gradcam", run, image, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / f"gradcam-{image.name}.png").is_file()
    r = invoke("visualize", "stn", run)
    assert r.exit_code == 2 and "no SpatialTransformer layer" in r.output
