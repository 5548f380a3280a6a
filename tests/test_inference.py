"""The one inference path: a traced function per model, image batches decoded ahead in threads, and
`cnnctl predict` over many files giving what one call on all of them gives."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.errors import CnnctlError
from cnnctl.inference import (
    check_images,
    image_batches,
    inference_function,
    load_images,
    logits_of,
)


def _photos(folder, n, size=(40, 30), mode="RGB"):
    """n distinct images (each a different gradient and offset), in name order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        arr[:, : (i * 3) % size[0]] = 255 - i
        p = folder / f"im{i:02d}.png"
        Image.fromarray(arr).convert(mode).save(p)
        paths.append(p)
    return paths


def _small_cnn():
    """A conv-BN-ReLU network with a dense head: what grappler rewrites when traced (BN folding,
    fused activations), so traced and eager outputs are really two computations."""
    import keras

    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(5)(x))
    rng = np.random.default_rng(0)
    bn = model.layers[2]   # moving statistics away from (0, 1), so folding them wrongly would show
    bn.moving_mean.assign(rng.normal(0, 0.5, 8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    return model


def test_the_traced_function_is_the_model_traced_once_for_every_batch_size():
    model = _small_cnn()
    x = np.random.default_rng(1).uniform(0, 255, (11, 28, 28, 1)).astype("float32")
    eager = np.asarray(model(x, training=False))
    traced = logits_of(model, x, batch_size=4)   # chunks of 4, 4 and 3
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-4)
    forward = inference_function(model)
    assert forward is inference_function(model)                  # cached for the process
    assert forward.experimental_get_tracing_count() == 1           # one trace for batch 4 and 3
    np.testing.assert_allclose(logits_of(model, x[:1], once=True), eager[:1], rtol=1e-5, atol=1e-4)
    assert forward.experimental_get_tracing_count() == 1


def test_image_batches_keep_the_order_of_the_files_and_decode_what_load_images_decodes(tmp_path):
    from cnnctl.data.pipeline import InputSpec

    paths = _photos(tmp_path / "p", 11)
    spec = InputSpec(24, 24, 3)
    got = list(image_batches(paths, spec, short_side=0, batch_size=4, workers=3))
    assert [len(names) for names, _ in got] == [4, 4, 3]
    assert [p for names, _ in got for p in names] == paths
    np.testing.assert_array_equal(np.concatenate([x for _, x in got]), load_images(paths, spec))


def test_a_file_truncated_after_its_header_is_named_when_its_batch_is_read(tmp_path):
    from cnnctl.data.pipeline import InputSpec

    paths = _photos(tmp_path / "p", 6)
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) // 2])
    check_images(paths)                            # the header still opens
    with pytest.raises(CnnctlError, match="im04.png"):
        list(image_batches(paths, InputSpec(24, 24, 3), batch_size=2))


def test_every_unreadable_file_is_named_in_one_message_before_any_decoding(tmp_path):
    paths = _photos(tmp_path / "p", 3)
    (tmp_path / "p" / "notes.png").write_text("not an image")
    with pytest.raises(CnnctlError) as e:
        check_images([*paths, tmp_path / "p" / "notes.png", tmp_path / "missing.jpg"])
    assert "notes.png: not a readable image" in str(e.value) and "missing.jpg: does not exist" in str(e.value)


def _fashion_test_images(folder, n):
    """The first n images of Fashion-MNIST's bundled test set, as PNG files."""
    from importlib import resources

    from cnnctl.data.idx import read_idx

    images = read_idx(resources.files("cnnctl.data").joinpath("bundled/fashion_mnist/t10k-images-idx3-ubyte.gz"))
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"t{i:02d}.png"))
        Image.fromarray(images[i].reshape(28, 28)).save(paths[-1])
    return paths


def test_predict_on_many_files_in_batches_equals_one_call_on_all_of_them(tmp_path):
    """The streamed path (batches of 3, decoded in threads, traced function) against one eager call on
    all 10 images, with the bundled Fashion-MNIST weights."""
    paths = _fashion_test_images(tmp_path / "p", 10)
    runner = CliRunner()
    base = ["predict", "--model", "fashion_cnn", "--weights", "fashion_mnist", "--json", "--top-k", "10"]
    streamed = runner.invoke(app, [*base, "--batch-size", "3", *paths])
    assert streamed.exit_code == 0, streamed.output
    whole = runner.invoke(app, [*base, "--batch-size", "32", *paths])
    assert whole.exit_code == 0, whole.output
    a, b = json.loads(streamed.stdout), json.loads(whole.stdout)
    assert [r["image"] for r in a] == paths == [r["image"] for r in b]
    for ra, rb in zip(a, b):
        pa = {t["index"]: t["probability"] for t in ra["top"]}
        pb = {t["index"]: t["probability"] for t in rb["top"]}
        assert pa.keys() == pb.keys() == set(range(10))
        np.testing.assert_allclose([pa[i] for i in range(10)], [pb[i] for i in range(10)], atol=1e-5)
    assert len({max(r["top"], key=lambda t: t["probability"])["index"] for r in a}) > 1, \
        "the check needs images that are not all given the same label"


def test_a_bad_predict_call_is_refused_before_tensorflow_starts(tmp_path):
    code = ("import sys; from typer.testing import CliRunner; from cnnctl.cli import app; "
            f"r = CliRunner().invoke(app, ['predict', '--model', 'fashion_cnn', {str(tmp_path / 'none.jpg')!r}]); "
            "print(r.exit_code, 'does not exist' in r.output, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "True", "False"]
