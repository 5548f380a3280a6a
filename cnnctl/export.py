"""``cnnctl export``: a run's network as a SavedModel, ONNX, LiteRT (.tflite) or .keras file.

Every format takes what the run's ``.keras`` takes, images at the model's input size, but as
**uint8** (batch, height, width, channels), the way a camera or a decoder gives them: the graph
casts to float32 itself (cnnctl models take raw pixels in [0, 255]). Outputs, by task:

- classification: ``probabilities`` (batch, classes), the softmax of the network's logits;
- segmentation: ``probabilities`` (batch, height', width', classes) per pixel (``'`` : a
  valid-padding U-Net's output is smaller than its input).

The SavedModel's ``serving_default`` signature is what TF Serving serves. ONNX goes through
Keras' exporter (tf2onnx); LiteRT through TensorFlow's converter, float32, no quantisation.
Captioning, GAN and detection runs are not exported yet (docs/scale-out.md#export says what is left).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

FORMATS = ("savedmodel", "onnx", "litert", "keras")
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "litert": ".tflite", "keras": ".keras"}
EXPORTABLE_TASKS = ("classify", "segment")


def load_for_export(run_dir: str | Path, best: bool = True):
    """-> (keras model of raw float pixels, task name) of a classification or segmentation run."""
    from cnnctl.config import load_run_config
    from cnnctl.inference import load_keras_file
    from cnnctl.train.rundir import RunDir

    run = RunDir.open(run_dir)
    cfg = load_run_config(run.path)
    task = cfg.task or "classify"
    if task not in EXPORTABLE_TASKS:
        raise CnnctlError(f"{run.path} is a {task} run; `cnnctl export` handles classification and "
                          "segmentation runs so far",
                          hint="use the run's .keras file with `cnnctl caption/generate/detect`, or load it in "
                               "Keras; exporting this task is on the list in docs/scale-out.md#export")
    which = "best" if best and run.file("best.keras").is_file() else "model"
    path = run.file(f"{which}.keras")
    if not path.is_file():
        raise CnnctlError(f"{path} does not exist", hint="the run has not finished an epoch yet")
    model = load_keras_file(path, hint="the file is damaged; export the other one (--last or --best)")
    return model, task


def uint8_model(model, task: str):
    """``model`` behind a uint8 input, with probabilities out: the one graph every format exports."""
    import keras

    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise CnnctlError(f"the network's input shape {shape} is not fixed", hint="export a run with a fixed input size")
    images = keras.Input(shape, dtype="uint8", name="images")
    logits = model(keras.ops.cast(images, "float32"))
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    wrapped = keras.Model(images, probabilities, name=f"{model.name}_uint8")
    wrapped(np.zeros((1, *shape), np.uint8))  # Keras' ONNX exporter refuses a model that was never called
    return wrapped


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None, best: bool = True, log=print) -> Path:
    """Write the run's network in ``fmt`` to ``out`` (default: RUN/export/<fmt>) and return the path."""
    if fmt not in FORMATS:
        raise CnnctlError(f"unknown export format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")
    model, task = load_for_export(run_dir, best)
    wrapped = uint8_model(model, task)
    target = Path(out) if out else Path(run_dir) / "export" / f"model{SUFFIX[fmt]}"
    if fmt == "savedmodel" and target.suffix:
        raise CnnctlError(f"a SavedModel is a folder; {target} has a file suffix", hint="give --out a folder name")
    if fmt != "savedmodel" and target.suffix != SUFFIX[fmt]:
        raise CnnctlError(f"a {fmt} file ends in {SUFFIX[fmt]}: {target}", hint=f"e.g. --out model{SUFFIX[fmt]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")  # the exporters check the suffix
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    try:
        _write(wrapped, fmt, tmp, log)
    except ImportError as e:
        raise CnnctlError(f"exporting to {fmt} needs a package that is not installed ({e.name})",
                          hint='pip install -e ".[export]"') from None
    if target.is_dir():
        shutil.rmtree(target)
    tmp.replace(target)  # a folder or a file: the old export stays whole until the new one is complete
    return target


def _write(wrapped, fmt: str, path: Path, log) -> None:
    import contextlib
    import io

    if fmt == "keras":
        wrapped.save(path)
        return
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # the exporters print their own progress
        if fmt == "savedmodel":
            wrapped.export(str(path), format="tf_saved_model", verbose=False)
        elif fmt == "onnx":
            _write_onnx(wrapped, path)
        elif fmt == "litert":
            wrapped.export(str(path), format="litert", verbose=False)


def _write_onnx(wrapped, path: Path) -> None:
    """ONNX from the frozen graph of the uint8 model (tf2onnx).

    Keras' own ONNX exporter left the Normalization layer's mean and variance as extra graph
    inputs (tf2onnx did not fold the captured variables), so the variables are made constants
    first and the graph converted as it stands: one input ``images``, one output ``probabilities``.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    shape = (None, *wrapped.inputs[0].shape[1:])
    serve = tf.function(lambda images: tf.identity(wrapped(images, training=False), name="probabilities"))
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function(tf.TensorSpec(shape, tf.uint8, name="images")))
    tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=["images:0"],
                                   output_names=["probabilities:0"], opset=17, output_path=str(path))
