"""`cnnctl export`: each format is run by its own runtime (TensorFlow's SavedModel loader,
onnxruntime, the LiteRT interpreter, Keras) on real Fashion-MNIST test images, and must give the
Keras model's probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl.cli import app

runner = CliRunner()

# float32 everywhere; the runtimes differ only in the order of their sums (and ONNX/LiteRT fuse
# ops), ~1e-6 on probabilities. A wrong input scaling (uint8 read as [0, 1]) or a missing softmax
# is off by ~1e-1.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def run_and_images(tmp_path_factory):
    """A LeNet-5 run (32x32 grey, 3 classes, 1 epoch) and 16 real Fashion-MNIST test images for it."""
    from conftest import _pattern
    from PIL import Image

    root = tmp_path_factory.mktemp("export")
    data = root / "images"
    for c, name in enumerate(["bars", "stripes", "disc"]):
        (data / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(_pattern(c, i), "L").save(data / name / f"{i}.png")
    r = runner.invoke(app, ["train", "--data", str(data), "--model", "lenet5", "--epochs", "1", "--batch-size", "8",
                            "--strategy", "default", "--precision", "float32", "--out-dir", str(root),
                            "--name", "run"])
    assert r.exit_code == 0, r.output
    from cnnctl.data.sources import fashion_mnist

    images = fashion_mnist("")["test"].images[:16]                  # (16, 28, 28, 1) uint8, real photos
    images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))       # LeNet-5's 32x32 input
    return root / "run", images


def _keras_probabilities(run, images):
    from cnnctl.inference import load_keras_file, softmax

    model = load_keras_file(run / "best.keras", hint="")
    return softmax(np.asarray(model(images.astype("float32")), dtype=np.float64))


def _export(run, fmt, out):
    r = runner.invoke(app, ["export", str(run), "--format", fmt, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "MB" in r.output
    return out


def test_savedmodel_serves_uint8_images_through_serving_default(run_and_images, tmp_path):
    import tensorflow as tf

    run, images = run_and_images
    path = _export(run, "savedmodel", tmp_path / "saved")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and tuple(spec.shape[1:]) == (32, 32, 1)
    (out,) = serve(tf.constant(images)).values()
    np.testing.assert_allclose(out.numpy(), _keras_probabilities(run, images), atol=TOLERANCE)


def test_onnx_runs_in_onnxruntime(run_and_images, tmp_path):
    import onnxruntime

    run, images = run_and_images
    path = _export(run, "onnx", tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)"
    (out,) = session.run(None, {inp.name: images})
    np.testing.assert_allclose(out, _keras_probabilities(run, images), atol=TOLERANCE)


def test_litert_runs_in_the_litert_interpreter(run_and_images, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    run, images = run_and_images
    path = _export(run, "litert", tmp_path / "model.tflite")
    interpreter = Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, _keras_probabilities(run, images), atol=TOLERANCE)


def test_keras_file_and_the_errors_a_user_can_cause(run_and_images, tmp_path):
    import keras

    run, images = run_and_images
    path = _export(run, "keras", tmp_path / "model.keras")
    model = keras.models.load_model(path, safe_mode=True)
    assert model.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(np.asarray(model(images)), _keras_probabilities(run, images), atol=TOLERANCE)

    r = runner.invoke(app, ["export", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["export", str(run), "--format", "savedmodel", "--out", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and "is a folder" in r.output


def test_a_valid_padding_unet_exports_per_pixel_probabilities_to_onnx_and_litert(tmp_path):
    """The segmentation graph: softmax over the class axis of every output pixel (388 from 572 in the
    paper; here 4x4 out of a 44x44 input), checked in onnxruntime and the LiteRT interpreter."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from cnnctl import models
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.export import _write, uint8_model
    from cnnctl.inference import softmax

    model = models.build("unet", num_classes=3, input_shape=(44, 44, 1), base_filters=4, depth=2)
    images = np.pad(fashion_mnist("")["test"].images[:4], ((0, 0), (8, 8), (8, 8), (0, 0)))   # real, 44x44
    expected = softmax(np.asarray(model(images.astype("float32")), dtype=np.float64))
    assert expected.shape[1:] == (4, 4, 3)
    wrapped = uint8_model(model, "segment")
    _write(wrapped, "onnx", tmp_path / "unet.onnx", print)
    session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(out, expected, atol=TOLERANCE)
    _write(wrapped, "litert", tmp_path / "unet.tflite", print)
    interpreter = Interpreter(model_path=str(tmp_path / "unet.tflite"))
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), expected,
                               atol=TOLERANCE)
