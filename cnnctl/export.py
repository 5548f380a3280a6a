"""``cnnctl export``: a run's network as a SavedModel, ONNX, LiteRT (.tflite) or .keras file.

A run exports as one or more *graphs*, each a traced function with named inputs and outputs:

- classification: ``serving_default``: ``images`` uint8 (batch, h, w, c) -> ``probabilities``
  (batch, classes), the softmax of the network's logits;
- segmentation: the same, per pixel: ``probabilities`` (batch, h', w', classes) (``'``: a
  valid-padding U-Net's output is smaller than its input);
- GANs: ``serving_default``: ``noise`` float32 (batch, noise_dim) [and ``label`` int32 (batch,) on a
  conditional model] -> ``images`` uint8 (batch, h, w, c);
- captioning: the three graphs that ``cnnctl caption`` decodes with: ``encoder`` (``images`` uint8
  at the encoder's size -> ``features``), ``start`` (``features`` -> the recurrent ``state_*`` and the
  first step's ``bias``) and ``step`` (``tokens`` int32 (batch,), ``state_*``, ``bias`` ->
  ``log_probs`` (batch, vocabulary), the new ``state_*`` and the next step's ``bias``: the caller
  threads ``bias`` like a state). Beam search and the vocabulary (``vocab.json``, copied beside the
  export) stay with the caller;
- detection: ``serving_default``: ``images`` uint8 at the network's input size -> ``boxes``
  (batch, d, 4) as (y0, x0, y1, x1) in input pixels, ``scores``, ``classes`` (1..K) and ``count``
  (valid detections per image), post-processing (per-class NMS) included. SavedModel only.

Images go in as **uint8**, the way a camera or a decoder gives them: each graph casts to float32
itself (cnnctl models take raw pixels in [0, 255]). The SavedModel holds every graph as a
signature (``serving_default`` is what TF Serving serves); ONNX and LiteRT write one file per
graph (a folder when there are several). ONNX is converted from the frozen graph by tf2onnx;
LiteRT by TensorFlow's converter, in float32, without quantisation.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from cnnctl.errors import CnnctlError

FORMATS = ("savedmodel", "onnx", "litert", "keras")
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "litert": ".tflite", "keras": ".keras"}
ONNX_OPSET = 17


@dataclasses.dataclass
class Graph:
    """One exported function: ``fn(**inputs) -> {name: tensor}``, traced at ``inputs``' specs."""

    name: str
    fn: Callable
    inputs: dict            # name -> tf.TensorSpec
    keras_model: object = None   # the same graph as a Keras model, where there is one (.keras export)


@dataclasses.dataclass
class Export:
    task: str
    graphs: list[Graph]
    keep: list              # the models whose variables the graphs use (tracked by the SavedModel)
    formats: tuple = FORMATS
    files: tuple = ()       # run files that belong beside the export (vocab.json)
    note: str = ""


# ----------------------------------------------------------------------------- what a run exports
def load_export(run_dir: str | Path, best: bool = True) -> Export:
    from cnnctl.config import load_run_config
    from cnnctl.train.rundir import RunDir

    run = RunDir.open(run_dir)
    task = load_run_config(run.path).task or "classify"
    if task in ("classify", "segment"):
        return _classifier(run, task, best)
    if task == "generate":
        return _generator(run, best)
    if task == "caption":
        return _captioner(run, best)
    if task == "detect":
        return _detector(run, best)
    raise CnnctlError(f"{run.path} is a {task} run, which `cnnctl export` does not know",
                      hint="export a classification, segmentation, GAN, captioning or detection run")


def _run_model(run, best: bool):
    from cnnctl.inference import load_keras_file

    which = "best" if best and run.file("best.keras").is_file() else "model"
    path = run.file(f"{which}.keras")
    if not path.is_file():
        raise CnnctlError(f"{path} does not exist", hint="the run has not finished an epoch yet")
    return load_keras_file(path, hint="the file is damaged; export the other one (--last, or without it)")


def _image_spec(model, name: str = "images"):
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise CnnctlError(f"the network's input shape {shape} is not fixed", hint="export a run with a fixed input size")
    return tf.TensorSpec((None, *shape), tf.uint8, name=name)


def uint8_model(model):
    """``model`` behind a uint8 input, with probabilities out (classification, segmentation)."""
    import keras

    shape = tuple(_image_spec(model).shape[1:])
    images = keras.Input(shape, dtype="uint8", name="images")
    logits = model(keras.ops.cast(images, "float32"))
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(images, probabilities, name=f"{model.name}_uint8")


def _classifier(run, task: str, best: bool) -> Export:
    return classifier_export(_run_model(run, best), task)


def classifier_export(model, task: str = "classify") -> Export:
    """A classification or segmentation network's one graph: uint8 images -> probabilities."""
    wrapped = uint8_model(model)
    spec = _image_spec(model)

    def serve(images):
        return {"probabilities": wrapped(images, training=False)}

    return Export(task, [Graph("serving_default", serve, {"images": spec}, wrapped)], [wrapped])


def generator_model(gan):
    """G behind its noise (and label) inputs, with uint8 pixels out, as ``cnnctl generate`` rounds them."""
    import keras
    from keras import ops

    z = keras.Input((gan.noise_dim,), name="noise")
    inputs = [z]
    if gan.num_classes:
        label = keras.Input((), dtype="int32", name="label")
        inputs.append(label)
        x = gan.generator([z, ops.one_hot(label, gan.num_classes)], training=False)
    else:
        x = gan.generator(z, training=False)
    x = ops.cast(x, "float32")
    x = x * 255.0 if gan.output_range == "unit" else (x + 1.0) * 127.5
    images = ops.cast(ops.clip(ops.round(x), 0, 255), "uint8")
    model = keras.Model(inputs, images, name="generator_uint8")
    return model


def _generator(run, best: bool) -> Export:
    from cnnctl.models.gans import GAN

    gan = _run_model(run, best)
    if not isinstance(gan, GAN):
        raise CnnctlError(f"{run.path} is not a GAN run", hint="give a run trained with task = \"generate\"")
    return generator_export(gan)


def generator_export(gan) -> Export:
    """A GAN's generator: noise (and labels) -> uint8 images."""
    import tensorflow as tf

    model = generator_model(gan)
    inputs = {"noise": tf.TensorSpec((None, gan.noise_dim), tf.float32, name="noise")}
    if gan.num_classes:
        inputs["label"] = tf.TensorSpec((None,), tf.int32, name="label")

        def serve(noise, label):
            return {"images": model([noise, label], training=False)}
    else:
        def serve(noise):
            return {"images": model(noise, training=False)}
    return Export("generate", [Graph("serving_default", serve, inputs, model)], [model],
                  note=f"noise: {gan.noise} ({gan.noise_dim} values per image)")


def _captioner(run, best: bool) -> Export:

    from cnnctl.captioner import Captioner

    return captioner_export(Captioner(run.path, best=best), Path(run.path) / "vocab.json")


def captioner_export(cap, vocab: Path) -> Export:
    """A ``Captioner``'s encoder, first step and word step."""
    import tensorflow as tf

    stepper, encoder = cap.stepper, cap.encoder
    features_shape = tuple(encoder.outputs[0].shape[1:])
    states = ["state_h", "state_c"][:stepper.num_states]
    units = stepper.units

    def encode(images):
        return {"features": tf.cast(encoder(tf.cast(images, tf.float32), training=False), tf.float32)}

    def start(features):
        state, bias = stepper._start_impl(features)
        return {**dict(zip(states, state)), "bias": bias}

    def step_outputs(tokens, bias, state):
        log_probs, new, next_bias = stepper._step_impl(tokens, state, bias)
        return {"log_probs": log_probs, **dict(zip(states, new)), "bias": next_bias}

    if len(states) == 2:   # Show and Tell's LSTM: hidden and cell state
        def step(tokens, bias, state_h, state_c):
            return step_outputs(tokens, bias, [state_h, state_c])
    else:                  # the m-RNN's Elman cell
        def step(tokens, bias, state_h):
            return step_outputs(tokens, bias, [state_h])

    state_specs = {s: tf.TensorSpec((None, units), tf.float32, name=s) for s in states}
    graphs = [Graph("encoder", encode, {"images": _image_spec(encoder)}),
              Graph("start", start, {"features": tf.TensorSpec((None, *features_shape), tf.float32, name="features")}),
              Graph("step", step, {"tokens": tf.TensorSpec((None,), tf.int32, name="tokens"),
                                   "bias": tf.TensorSpec((None, stepper.bias_width), tf.float32, name="bias"),
                                   **state_specs})]
    return Export("caption", graphs, [encoder, cap.model], formats=("savedmodel", "onnx", "litert"),
                  files=(str(vocab),),
                  note="beam search stays with the caller: encoder -> start -> step per word, threading the states "
                       "and bias (vocab.json beside)")


def _detector(run, best: bool) -> Export:

    return detector_export(_run_model(run, best))


def detector_export(model) -> Export:
    """A Faster R-CNN with its post-processing: uint8 images -> boxes, scores, classes, count."""
    import tensorflow as tf

    from cnnctl.models.rcnn import FasterRCNN

    if not isinstance(model, FasterRCNN):
        raise CnnctlError(f"a {model.name} network does not export: its proposals come from selective search, "
                          "which OpenCV runs outside the TensorFlow graph",
                          hint="export a faster_rcnn run: its region proposal network is part of the graph")

    h, w = model.image_size
    c = int(model.backbone.inputs[0].shape[-1])

    def serve(images):
        out = model(tf.cast(images, tf.float32), training=False)
        return {k: out[k] for k in ("boxes", "scores", "classes", "count")}

    return Export("detect", [Graph("serving_default", serve, {"images": tf.TensorSpec((None, h, w, c), tf.uint8,
                                                                                       name="images")})],
                  [model], formats=("savedmodel",),
                  note="post-processing (per-class NMS) included; ONNX and LiteRT are not offered for detection yet")


# ----------------------------------------------------------------------------- writing
def export(run_dir: str | Path, fmt: str, out: str | Path | None = None, best: bool = True) -> tuple[Path, Export]:
    """Write the run's graphs in ``fmt`` to ``out`` (default: RUN/export/model[.suffix]) -> (path, what)."""
    if fmt not in FORMATS:
        raise CnnctlError(f"unknown export format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")
    what = load_export(run_dir, best)
    if fmt not in what.formats:
        raise CnnctlError(f"a {what.task} run does not export to {fmt}",
                          hint=f"choose {' or '.join(what.formats)}" + (f" ({what.note})" if what.note else ""))
    single_file = fmt != "savedmodel" and len(what.graphs) == 1
    target = Path(out) if out else Path(run_dir) / "export" / ("model" + (SUFFIX[fmt] if single_file else ""))
    if single_file and target.suffix != SUFFIX[fmt]:
        raise CnnctlError(f"a {fmt} file ends in {SUFFIX[fmt]}: {target}", hint=f"e.g. --out model{SUFFIX[fmt]}")
    if not single_file and target.suffix:
        raise CnnctlError(f"this export is a folder ({'SavedModel' if fmt == 'savedmodel' else 'one file per graph'}); "
                          f"{target} has a file suffix", hint="give --out a folder name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")  # the converters check the suffix
    _remove(tmp)
    try:
        write(what, fmt, tmp)
    except ImportError as e:
        _remove(tmp)
        raise CnnctlError(f"exporting to {fmt} needs a package that is not installed ({e.name})",
                          hint='pip install -e ".[export]"') from None
    except BaseException:
        _remove(tmp)
        raise
    _remove(target)
    tmp.replace(target)  # the previous export stays whole until the new one is complete
    return target, what


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write(what: Export, fmt: str, path: Path) -> None:
    """Write ``what`` in ``fmt`` at ``path`` (a file for one graph in onnx/litert/keras, else a folder)."""
    if fmt == "savedmodel":
        _write_savedmodel(what, path)
    else:
        one = len(what.graphs) == 1
        if not one:
            path.mkdir(parents=True)
        for g in what.graphs:
            target = path if one else path / f"{g.name}{SUFFIX[fmt]}"
            if fmt == "litert":
                _write_litert(g, target, what.keep)
            else:
                {"onnx": _write_onnx, "keras": _write_keras}[fmt](g, target)
    if what.files:
        folder = path if path.is_dir() else path.parent
        for f in what.files:
            shutil.copy(f, folder / Path(f).name)


def _write_savedmodel(what: Export, path: Path) -> None:
    """Through Keras' ExportArchive: it tracks the Keras variables so that TensorFlow's loaders and
    the LiteRT converter read them (a plain tf.Module of the same functions loaded in TensorFlow but
    converted to LiteRT with NaN outputs). The first graph is also ``serving_default``."""
    import keras

    archive = keras.export.ExportArchive()
    for model in what.keep:
        archive.track(model)
    for g in what.graphs:
        archive.add_endpoint(g.name, g.fn, input_signature=list(g.inputs.values()))
    archive.write_out(str(path), verbose=False)


def _write_keras(g: Graph, path: Path) -> None:
    if g.keras_model is None:
        raise CnnctlError(f"the {g.name} graph has no Keras model of its own", hint="export savedmodel, onnx or litert")
    g.keras_model.save(path)


def _write_onnx(g: Graph, path: Path) -> None:
    """ONNX from the frozen graph (tf2onnx).

    Keras' own ONNX exporter left the Normalization layer's mean and variance as extra graph
    inputs (tf2onnx did not fold the captured variables), so the variables are made constants
    first and the graph is converted as it stands, with its inputs' and outputs' names.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    def named(**inputs):
        return {k: tf.identity(v, name=k) for k, v in g.fn(**inputs).items()}

    concrete = tf.function(named).get_concrete_function(**g.inputs)
    frozen = convert_variables_to_constants_v2(concrete)
    outputs = sorted(concrete.structured_outputs)
    proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=[f"{k}:0" for k in g.inputs],
                                              output_names=[f"{k}:0" for k in outputs], opset=ONNX_OPSET)
    _strip_tensor_suffixes(proto)
    path.write_bytes(proto.SerializeToString())


def _strip_tensor_suffixes(proto) -> None:
    """TensorFlow's tensor names ("images:0") -> the plain names a user calls the model with ("images")."""
    rename = {v.name: v.name[:-2] for v in [*proto.graph.input, *proto.graph.output] if v.name.endswith(":0")}
    for v in [*proto.graph.input, *proto.graph.output]:
        v.name = rename.get(v.name, v.name)
    for node in proto.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]


def _write_litert(g: Graph, path: Path, keep: list) -> None:
    """LiteRT through a SavedModel of the one graph (converting the traced function directly read
    the Keras variables as uninitialised: NaN outputs), float32 builtin ops only."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="cnnctl-litert-") as tmp:
        saved = Path(tmp) / "saved"
        _write_savedmodel(Export("", [dataclasses.replace(g, name="serving_default")], keep), saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
        converter.experimental_enable_resource_variables = True
        path.write_bytes(converter.convert())
