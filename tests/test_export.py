"""`cnnctl export`: each format is run by its own runtime (TensorFlow's SavedModel loader,
onnxruntime, the LiteRT interpreter, Keras) on real Fashion-MNIST test images, and must give the
Keras model's probabilities."""

from __future__ import annotations

import json

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
    assert "MB" in r.output and "images uint8(batch, " in r.output
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
    assert r.exit_code == 2 and "folder" in r.output and "suffix" in r.output


def test_a_valid_padding_unet_exports_per_pixel_probabilities_to_onnx_and_litert(tmp_path):
    """The segmentation graph: softmax over the class axis of every output pixel (388 from 572 in the
    paper; here 4x4 out of a 44x44 input), checked in onnxruntime and the LiteRT interpreter."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from cnnctl import models
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.export import classifier_export, write
    from cnnctl.inference import softmax

    model = models.build("unet", num_classes=3, input_shape=(44, 44, 1), base_filters=4, depth=2)
    images = np.pad(fashion_mnist("")["test"].images[:4], ((0, 0), (8, 8), (8, 8), (0, 0)))   # real, 44x44
    expected = softmax(np.asarray(model(images.astype("float32")), dtype=np.float64))
    assert expected.shape[1:] == (4, 4, 3)
    what = classifier_export(model, "segment")
    write(what, "onnx", tmp_path / "unet.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(out, expected, atol=TOLERANCE)
    write(what, "litert", tmp_path / "unet.tflite")
    interpreter = Interpreter(model_path=str(tmp_path / "unet.tflite"))
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), expected,
                               atol=TOLERANCE)


def test_a_conditional_generator_exports_noise_and_label_to_the_uint8_images_generate_draws(tmp_path):
    """ONNX and LiteRT of a cGAN's generator give `cnnctl generate`'s pixels (to 1 grey level: the
    runtimes' float sums may round a pixel that sits on .5 the other way)."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from cnnctl import models
    from cnnctl.export import generator_export, write
    from cnnctl.tasks.generate import fixed_noise
    from cnnctl.tasks.generate import generate as draw

    gan = models.build("cgan_mlp", num_classes=10)
    z, labels = fixed_noise(gan, 6, seed=1), np.arange(6, dtype=np.int32)
    expected = draw(gan, z, labels)                                  # (6, 28, 28, 1) uint8
    what = generator_export(gan)
    write(what, "onnx", tmp_path / "g.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in session.get_inputs()} == {"noise": "tensor(float)", "label": "tensor(int32)"}
    (out,) = session.run(None, {"noise": z, "label": labels})
    assert out.dtype == np.uint8 and out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).max() <= 1 and (out == expected).mean() > 0.99
    write(what, "litert", tmp_path / "g.tflite")
    runner_ = Interpreter(model_path=str(tmp_path / "g.tflite")).get_signature_runner("serving_default")
    out = runner_(noise=z, label=labels)["images"]
    assert np.abs(out.astype(int) - expected).max() <= 1 and (out == expected).mean() > 0.99


def test_the_bundled_captioner_exports_encoder_start_and_step_that_decode_its_own_caption(tmp_path):
    """The SavedModel's three signatures, run greedily on a real photo, give `cnnctl caption --beam 1`'s words."""
    import tensorflow as tf
    from PIL import Image

    from cnnctl.captioner import BUNDLED, Captioner
    from cnnctl.data.text import Vocab

    photo = next(p for p in sorted((BUNDLED / "samples").iterdir()) if p.suffix.lower() in (".png", ".jpg"))
    out = tmp_path / "captioner"
    r = runner.invoke(app, ["export", str(BUNDLED), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {"encoder", "start", "step"} <= set(tf.saved_model.load(str(out)).signatures)
    assert (out / "vocab.json").is_file()
    loaded = tf.saved_model.load(str(out))
    cap = Captioner(None)
    expected = cap.caption([str(photo)], beam=1)[0]["caption"]

    size = cap.spec.image_size
    img = Image.open(photo).convert("RGB").resize((size, size), Image.BILINEAR)
    vocab = Vocab.from_json(json.loads((out / "vocab.json").read_text()))
    feats = loaded.signatures["encoder"](images=tf.constant(np.asarray(img)[None]))["features"]
    ours = cap.features([str(photo)])
    np.testing.assert_allclose(feats.numpy(), ours, atol=2e-2 * np.abs(ours).max())  # resize kernels differ
    state = loaded.signatures["start"](features=tf.constant(ours))
    bias, recurrent = state["bias"], {k: v for k, v in state.items() if k.startswith("state_")}
    words, token = [], vocab.index["<start>"]
    for t in range(cap.settings["max_words"] + 1):              # greedy, with beam search's rules
        step = loaded.signatures["step"](tokens=tf.constant([token], tf.int32), bias=bias, **recurrent)
        logp = step["log_probs"].numpy()[0].astype(np.float64)
        logp[[0, 1, 3]] = -np.inf                               # <pad>, <start>, <unk>
        if t == 0:
            logp[2] = -np.inf                                   # at least one word
        if cap.settings.get("fluent") and t > 0:                # caption.fluent, from vocab.json
            logp[token] = -np.inf                               # no word twice in a row
            if vocab.words[token] in vocab.rarely_last and t < cap.settings["max_words"]:
                logp[2] = -np.inf                               # no end right after "in", "and", "a"
        token = 2 if t == cap.settings["max_words"] else int(np.argmax(logp))
        if token == 2:
            break
        words.append(vocab.words[token])
        recurrent = {k: v for k, v in step.items() if k.startswith("state_")}
        bias = step["bias"]                                     # threaded like the states
    assert " ".join(words) == expected


def test_faster_rcnn_exports_with_its_nms_and_rcnn_is_refused(tmp_path):
    import keras
    import tensorflow as tf

    from cnnctl import models
    from cnnctl.export import detector_export, write
    from cnnctl.tasks.detect import detect_arrays

    keras.utils.set_random_seed(0)
    model = models.build("faster_rcnn", num_classes=3, input_shape=(64, 64, 1), widths=[8, 8, 16, 16],
                         rpn_width=16, head_width=32, anchor_scales=[16, 32, 48], min_size=2,
                         score_threshold=0.0)
    from cnnctl.data.sources import fashion_mnist

    images = np.pad(fashion_mnist("")["test"].images[:2],
                    ((0, 0), (18, 18), (18, 18), (0, 0)))             # two real 64x64 pictures
    expected = detect_arrays(model, images)
    write(detector_export(model), "savedmodel", tmp_path / "det")
    serve = tf.saved_model.load(str(tmp_path / "det")).signatures["serving_default"]
    got = serve(images=tf.constant(images))
    for j, e in enumerate(expected):
        n = int(got["count"][j])
        assert n == len(e["scores"]) > 0
        np.testing.assert_allclose(got["scores"][j, :n].numpy(), e["scores"], atol=1e-5)
        np.testing.assert_allclose(got["boxes"][j, :n].numpy(), e["boxes"], atol=1e-3)
        assert (got["classes"][j, :n].numpy() == e["classes"]).all()
    from cnnctl.errors import CnnctlError
    with pytest.raises(CnnctlError, match="selective search"):
        detector_export(models.build("fast_rcnn", num_classes=3, input_shape=(64, 64, 1), widths=[8, 8, 16, 16]))
