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


def _random_statistics(model, rng):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _random_statistics(layer, rng)
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))


def test_batch_norms_are_folded_into_their_convolutions_and_the_outputs_do_not_change():
    """Every kind of pair (a conv with and without bias, grouped, depthwise with multiplier 2, inside a
    nested model, BN without scale) folds; a conv feeding two BNs, and one with its own activation,
    do not; the outputs are the model's own."""
    import keras

    from cnnctl.bn_folding import folded_copy
    from cnnctl.inference import inference_model

    def bn(**kw):
        return keras.layers.BatchNormalization(epsilon=1e-3, **kw)

    inner_in = keras.Input((14, 14, 8))
    y = bn()(keras.layers.DepthwiseConv2D(5, padding="same", depth_multiplier=2, use_bias=False)(inner_in))
    inner = keras.Model(inner_in, keras.layers.ReLU(6.0)(y), name="inner")

    inp = keras.Input((28, 28, 3))
    x = bn()(keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp))            # with bias
    x = bn(scale=False)(keras.layers.Conv2D(8, 1, groups=2, use_bias=False)(x))     # grouped, no gamma
    x = inner(x)                                                                   # nested: 16 channels
    shared = keras.layers.Conv2D(16, 1, use_bias=False)(x)                         # two consumers: kept
    x = keras.layers.Add()([bn()(shared), bn()(shared)])
    x = bn()(keras.layers.Conv2D(16, 3, activation="relu")(x))                     # own activation: kept
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(3)
    _random_statistics(model, rng)

    copy, folded = folded_copy(model)
    assert folded == 3
    kinds = [type(layer).__name__ for layer in copy.layers]
    assert kinds.count("BatchNormalization") == 3 and kinds.count("FoldedBatchNorm") == 2
    assert [type(layer).__name__ for layer in copy.get_layer("inner").layers].count("BatchNormalization") == 0
    x = rng.uniform(0, 255, (5, 28, 28, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(copy(x, training=False)), want, rtol=1e-4, atol=1e-4)
    assert inference_model(model) is model                  # float32: TF's optimiser folds them itself
    in_bf16 = inference_model(model, "mixed_bfloat16")       # another policy: the folded copy
    assert [type(layer).__name__ for layer in in_bf16.layers].count("FoldedBatchNorm") == 2
    np.testing.assert_allclose(logits_of(model, x), want, rtol=1e-4, atol=1e-4)
    # the model itself is untouched (training still has its batch norms)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 5


def _graph_of(fn):
    return fn.get_concrete_function().graph


def _conv_kernel_source(graph):
    """The op that feeds the first convolution's kernel, through casts and identities."""
    kernel = next(op for op in graph.get_operations() if op.type == "Conv2D").inputs[1]
    while kernel.op.type in ("Cast", "Identity"):
        kernel = kernel.op.inputs[0]
    return kernel.op


def test_half_precision_inference_switches_to_constant_kernels_after_its_time_with_the_same_output(monkeypatch):
    from cnnctl import inference

    model = _small_cnn()
    _random_statistics(model, np.random.default_rng(4))
    x = np.random.default_rng(5).uniform(0, 255, (2, 28, 28, 1)).astype("float32")
    forward = inference_function(model, "mixed_bfloat16")
    monkeypatch.setattr(inference, "STEADY_AFTER_S", {"half": 0.0, "float32": 1e9})
    before = np.asarray(forward(x), np.float32)
    assert forward.steady is None                    # the first call never counts: a one-photo command
    forward(np.concatenate([x] * 16))                # 32 images: large batches never count either
    assert forward.steady is None and not forward.counts(32)
    after = np.asarray(forward(x), np.float32)
    assert forward.steady is not None
    graph = _graph_of(forward.steady)
    assert _conv_kernel_source(graph).type == "Const"   # the kernel is in the graph, not read from a variable
    # the other variables stay variables (as constants, the bias and ReLU would no longer be fused)
    assert any(op.type == "ReadVariableOp" for op in graph.get_operations())
    np.testing.assert_array_equal(after, before)     # the same computation, bit for bit
    assert forward.experimental_get_tracing_count() == 1        # the first function, traced once


def test_float32_inference_switches_to_a_folded_all_constant_trace_after_its_own_time(monkeypatch):
    import keras

    from cnnctl import inference

    model = _small_cnn()
    _random_statistics(model, np.random.default_rng(4))
    x = np.random.default_rng(5).uniform(0, 255, (2, 28, 28, 1)).astype("float32")
    forward = inference_function(model)
    assert model.dtype_policy.name == "float32" and keras.mixed_precision.global_policy().name == "float32"
    assert forward.net is model                      # float32 starts on the model as it is: no copy made
    monkeypatch.setattr(inference, "STEADY_AFTER_S", {"half": 0.0, "float32": 0.5})
    before = np.asarray(forward(x), np.float32)
    forward(x)                                       # counted, but far from float32's own threshold
    assert forward.steady is None and forward.counts(1)
    monkeypatch.setattr(inference, "STEADY_AFTER_S", {"half": 1e9, "float32": 0.0})
    after = np.asarray(forward(x), np.float32)
    assert forward.steady is not None and not forward.counts(1)
    graph = _graph_of(forward.steady)
    ops = graph.get_operations()
    assert not any(op.type == "ReadVariableOp" for op in ops)          # every weight a constant
    assert not any("BatchNorm" in op.type for op in ops)              # the batch norm folded away
    assert _conv_kernel_source(graph).type == "Const"
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5 * np.abs(before).max())
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 1   # untouched


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
    base = ["predict", "--model", "fashion_cnn", "--weights", "fashion_mnist", "--json", "--top-k", "10",
            "--precision", "float32"]
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


def test_predict_computes_in_the_policy_asked_for_whatever_the_model_was_saved_in(tmp_path):
    """A float32 network asked for in bfloat16: the folded copy computes in bf16 (probabilities within
    bf16's rounding, not equal), and the model's own policy is left as it was."""
    import keras

    from cnnctl.inference import inference_model
    from cnnctl.weights import load_pretrained

    paths = _fashion_test_images(tmp_path / "p", 8)
    runner = CliRunner()
    base = ["predict", "--model", "fashion_cnn", "--weights", "fashion_mnist", "--json", "--top-k", "10", *paths]
    probs = {}
    for policy in ("float32", "mixed_bfloat16"):
        r = runner.invoke(app, [*base, "--precision", policy, "--batch-size", "4"])
        assert r.exit_code == 0, r.output
        probs[policy] = np.array([[t["probability"] for t in sorted(row["top"], key=lambda t: t["index"])]
                                  for row in json.loads(r.stdout)])
    difference = np.abs(probs["float32"] - probs["mixed_bfloat16"]).max()
    assert 0 < difference < 0.05
    assert (probs["float32"].argmax(1) == probs["mixed_bfloat16"].argmax(1)).mean() >= 0.75
    keras.mixed_precision.set_global_policy("float32")
    model = load_pretrained("fashion_cnn", "fashion_mnist")
    copy = inference_model(model, "mixed_bfloat16")
    assert copy.layers[-1].compute_dtype == "bfloat16" and model.layers[-1].compute_dtype == "float32"
    r = runner.invoke(app, [*base, "--precision", "half"])
    assert r.exit_code == 2 and "unknown --precision 'half'" in r.output


def test_a_bad_predict_call_is_refused_before_tensorflow_starts(tmp_path):
    code = ("import sys; from typer.testing import CliRunner; from cnnctl.cli import app; "
            f"r = CliRunner().invoke(app, ['predict', '--model', 'fashion_cnn', {str(tmp_path / 'none.jpg')!r}]); "
            "print(r.exit_code, 'does not exist' in r.output, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "True", "False"]
