"""Loading a trained run for evaluation and prediction."""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np

from cnnctl.data.resize import eval_short_side  # noqa: F401 - re-exported for the commands
from cnnctl.errors import CnnctlError

# The command that runs a trained network of each task other than classification, for the hint
# when such a run is given where a classifier is expected (predict, evaluate, finetune, visualize).
TASK_COMMANDS = {"generate": "cnnctl generate {run}", "caption": "cnnctl caption --model {run} IMAGE...",
                 "align": "cnnctl visualize alignment {run} IMAGE \"a sentence\"",
                 "segment": "cnnctl segment --model {run} IMAGE...", "detect": "cnnctl detect --model {run} IMAGE..."}


def load_run_model(run_dir: str | Path, which: str = "model"):
    """-> (keras model, class names, Config) of a run; ``which`` is "model" (last) or "best".

    Loaded with Keras ``safe_mode=True``: no Lambda-layer code from someone
    else's file runs; our own layers are registered serializables.
    """
    from cnnctl.config import load_run_config
    from cnnctl.train.rundir import RunDir, load_classes

    run = RunDir.open(run_dir)
    cfg = load_run_config(run.path)
    if cfg.task not in ("", "classify"):
        raise CnnctlError(f"{run.path} is a {cfg.task} run, not a classifier",
                          hint=f"use `{TASK_COMMANDS[cfg.task].format(run=run.path)}`" if cfg.task in TASK_COMMANDS
                          else "give a classification run")
    classes = load_classes(run)
    path = run.file(f"{which}.keras")
    if not path.is_file():
        other = "best" if which == "model" else "model"
        hint = (f"the run has {other}.keras: use --{other if other == 'best' else 'last'}"
                if run.file(f"{other}.keras").is_file() else "the run has not finished an epoch yet")
        raise CnnctlError(f"{path} does not exist", hint=hint)
    model = load_keras_file(path, hint="the file is damaged or from an incompatible version; "
                                       "use best.keras or resume the run to rewrite it")
    from cnnctl.models import model_num_outputs

    out = model_num_outputs(model)
    if out != len(classes):
        raise CnnctlError(f"{path} predicts {out} classes but the run lists {len(classes)}",
                          hint="the run directory has been mixed with another run's files")
    return model, classes, cfg


def load_keras_file(path, hint: str):
    """A ``.keras`` file loaded with Keras ``safe_mode`` (no code from the file runs), uncompiled.

    A file that needs code to load (a ``Lambda`` layer) is refused with its own message; any
    other failure is one message with ``hint``.
    """
    import keras

    import cnnctl.models  # noqa: F401 - registers cnnctl's layers for deserialisation

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        text = str(e)
        if "arbitrary code execution" in text or "safe_mode" in text:
            raise CnnctlError(
                f"refused to load {path}: it holds a Lambda layer, Python code that would run on loading",
                hint="cnnctl loads models in Keras' safe mode; rebuild the model without Lambda layers "
                     "(cnnctl's own layers load safely), or, only if you trust its author, load it yourself "
                     "with keras.models.load_model(path, safe_mode=False)") from None
        raise CnnctlError(f"cannot load {path}: {type(e).__name__}: {text.splitlines()[0][:300] if text else ''}",
                          hint=hint) from None


def input_spec(model):
    from cnnctl.data.pipeline import InputSpec
    from cnnctl.models import model_input_shape

    return InputSpec.from_shape(model_input_shape(model))


# ----------------------------------------------------------------------------- one inference path
# Every command's forward pass goes through one traced function per model, kept for the life of the
# process: a graph lets grappler fold batch norm into the convolutions and fuse activations, and runs
# without Python between ops. EfficientNet-Lite0, one image, float32, one core: 13.4 ms traced against
# 76.5 ms for an eager call (benchmarks/inference.py, docs/speed.md).
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {policy: its Forward}
# A Forward traces its network again in a form oneDNN can keep its weights reordered for (see Forward)
# once its calls of at most STEADY_MAX_BATCH images, after the first call, have taken STEADY_AFTER_S
# seconds: about what the second trace costs ResNet-50 on one core at most (2.6 s in half precision,
# 3.7-6.2 s in float32 with the folding), so that no process pays much more than twice its best time (a
# ski-rental rule) and one that has computed this long on small batches likely goes on.
STEADY_AFTER_S = {"half": 2.0, "float32": 6.0}
STEADY_MAX_BATCH = 4


def inference_model(model, policy: str | None = None):
    """The network the inference function runs.

    Computing in bfloat16 (or float16), a plain functional model runs as a copy with each convolution +
    batch norm pair folded into one convolution (``cnnctl.bn_folding``; TF's graph optimiser does not
    fuse them there: bf16 Lite0 at batch 32 2.0x faster folded here). In float32 the optimiser fuses them
    itself except after depthwise convolutions, and the model runs as it is: a one-photo command does
    not pay for the copy (0.44 s for Lite0, 1.24 s for ResNet-50 here, docs/speed.md). A long run
    folds them in ``Forward``'s steady trace. With ``policy`` other than the model's own, the copy
    (folded) computes in ``policy``. A model that cannot be copied runs as it is.
    """
    from cnnctl import bn_folding

    own = getattr(model.dtype_policy, "name", None)
    other = bool(policy) and policy != own
    half = (policy if other else own) != "float32"
    try:
        if bn_folding.is_functional(model) and (other or (half and bn_folding.fold_pairs(model))):
            return bn_folding.folded_copy(model, policy if other else None)[0]
    except Exception as e:  # noqa: BLE001 - a layer that cannot be cloned: run the model as it is
        import warnings

        warnings.warn(f"{model.name} runs as saved (its batch norms unfolded, in its own precision): "
                      f"it could not be copied ({type(e).__name__}: {e})", stacklevel=2)
    return model


def inference_function(model, policy: str | None = None):
    """``model``'s forward pass (``training=False``) as a ``Forward``: one ``tf.function``, traced once per
    model and policy, on ``inference_model(model, policy)`` (batch norms folded in half precision),
    which moves to a trace with constant weights on a long run of small batches.

    A model with known inputs gets their signature with the batch dimension left open, so every
    batch size shares one trace; a subclassed model without ``inputs`` is traced per input shape
    (``reduce_retracing``). Outputs are what the model returns (a tensor, or a list/dict of them).
    """
    per_policy = _TRACED.setdefault(model, {})
    fn = per_policy.get(policy)
    if fn is None:
        net = inference_model(model, policy)
        computes_in = policy or getattr(model.dtype_policy, "name", "float32")
        fn = Forward(net, _traced(net, getattr(model, "inputs", None)), half="float16" in computes_in)
        per_policy[policy] = fn
    return fn


def _traced(net, inputs, constants=()):
    """``net``'s forward pass as a ``tf.function``; ``constants``: variables read as ``tf.constant``s of
    their values (``keras.StatelessScope``), so that the graph holds them."""
    import keras
    import tensorflow as tf

    values = [(v, v.numpy()) for v in constants]

    def forward(*xs):
        x = list(xs) if len(xs) > 1 else xs[0]
        if not values:
            return net(x, training=False)
        with keras.StatelessScope(state_mapping=[(v, tf.constant(a)) for v, a in values]):
            return net(x, training=False)
    if inputs:
        signature = [tf.TensorSpec((None, *tuple(i.shape[1:])), i.dtype) for i in inputs]
        return tf.function(forward, input_signature=signature)
    return tf.function(forward, reduce_retracing=True)


class Forward:
    """One network's traced forward pass, called as ``forward(x)`` (or ``forward(x1, x2)``), which moves
    to a faster trace of the same network once it has been called long enough on small batches.

    With its weights in variables, oneDNN cannot keep them reordered into its own layout between calls.
    A trace that reads them as constants lets it (benchmarks/inference_freeze.py, docs/speed.md; one
    core of an Intel Xeon with AMX):

    - half precision: the float32 kernels are cast to bf16 and reordered on every call. With the
      convolution kernels (4-d variables) as constants the output is bit-identical, ResNet-50 takes 18
      against 55 ms at batch 1 and batch 32 gains 3-17%, for about 2 s more setup (0.1 s for
      EfficientNet-Lite0). The other variables stay variables: as constants, the graph optimiser no
      longer fuses the bias and ReLU into the convolutions (2.5x slower at batch 32).
    - float32: the convolutions read plain weights. The steady trace runs the network with its batch
      norms folded and every variable a constant (kernels alone are not enough here): ResNet-50 57
      against 87 ms at batch 1, Lite0 12 against 17 ms (its batch norms after depthwise convolutions
      are not fused by TensorFlow), batch 32 7-10% faster; the output equal to rounding (1e-6 of the
      largest logit); 3.7-6.2 s more setup for ResNet-50, about 1 s for Lite0.

    The switch comes once the calls on at most ``STEADY_MAX_BATCH`` images, after the first call, have
    taken ``STEADY_AFTER_S`` seconds: a one-photo command and a batch-32 sweep never pay for it. If the
    steady trace fails, a warning says so and the first one stays in use. Attributes of the first
    ``tf.function`` are its own (``experimental_get_tracing_count``).
    """

    def __init__(self, net, fn, half: bool):
        self.net, self.fn = net, fn
        self.inputs = getattr(net, "inputs", None)
        self.half = half                    # computing in bfloat16 / float16: the kernels are cast
        self.pending = True                 # the steady trace is still to come
        self.calls = 0
        self.seconds = 0.0                  # spent in counted calls (small batches, after the first)
        self.steady = None                  # the steady tf.function, once traced

    def counts(self, batch: int) -> bool:
        """Whether a call on ``batch`` images counts toward the switch, which is still to come."""
        return self.pending and batch <= STEADY_MAX_BATCH

    def __call__(self, *xs):
        if self.steady is not None:
            return self.steady(*xs)
        counted = self.counts(len(xs[0])) and self.calls > 0
        if counted and self.seconds >= STEADY_AFTER_S["half" if self.half else "float32"]:
            out = self._switch(xs)
            if out is not None:
                return out
        t = time.perf_counter()
        out = self.fn(*xs)
        if counted:
            self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def _switch(self, xs):
        """Trace the steady function and run it on ``xs`` -> its output, or None when the network has
        no weights or cannot run so (the first function then stays in use)."""
        self.pending = False                # one attempt, whatever happens
        try:
            net, constants = self._steady_network()
            if not constants:
                return None
            fn = _traced(net, self.inputs, constants)
            out = fn(*xs)
        except Exception as e:  # noqa: BLE001 - an optimisation: the first function still works
            import warnings

            warnings.warn(f"{self.net.name} keeps reading its variables in inference: tracing it with "
                          f"constant weights failed ({type(e).__name__}: {e})", stacklevel=3)
            return None
        self.steady = fn
        return out

    def _steady_network(self):
        """-> (the network the steady trace runs, the variables it reads as constants)."""
        if self.half:                       # already folded (inference_model)
            return self.net, [v for v in self.net.variables if len(v.shape) == 4]
        from cnnctl import bn_folding

        net = self.net
        if bn_folding.is_functional(net) and bn_folding.fold_pairs(net):
            net = bn_folding.folded_copy(net)[0]
        return net, list(net.variables)

    def __getattr__(self, name):
        return getattr(self.fn, name)


def main_output(out) -> np.ndarray:
    """The first output of a model's call (its logits), as float32 numpy."""
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, np.float32)


def logits_of(model, x: np.ndarray, batch_size: int = 32, once: bool = False, policy: str | None = None) -> np.ndarray:
    """The model's main output for ``x`` (n, h, w, c), float32, ``batch_size`` images per call, computed
    in ``policy`` (None: the model's own).

    ``once``: the caller makes one call in this process (a command on a few images). If ``x`` is one
    batch, nothing is traced yet and the model computes in ``policy`` already, it runs eagerly: no
    trace to pay for, 0.05-0.15 s less on a cold start here. Every other call goes through
    ``inference_function``.
    """
    own = policy is None or policy == getattr(model.dtype_policy, "name", None)
    if once and own and len(x) <= batch_size and model not in _TRACED:
        return main_output(model(x, training=False))
    fn = inference_function(model, None if own else policy)
    chunks = [main_output(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks) if len(chunks) != 1 else chunks[0]


def check_images(paths) -> None:
    """Open every file's header: every missing or unreadable one named in one ``CnnctlError``, before any
    pixel is decoded or any model runs."""
    from cnnctl.data.images import ImageError, open_image

    problems = []
    for p in paths:
        if not Path(p).is_file():
            problems.append(f"{p}: does not exist")
            continue
        try:
            open_image(str(p)).close()
        except ImageError as e:
            problems.append(f"{p}: {e}")
    if problems:
        raise CnnctlError("cannot read " + "; ".join(problems), hint="give JPEG, PNG, BMP, GIF, WebP or TIFF files")


def image_batches(paths, spec, short_side: int = 0, batch_size: int = 32, workers: int = 2):
    """Yield (paths, float32 (b, h, w, c)) batches of image files as ``load_for_model`` reads them.

    Decoding and resizing run ahead in ``workers`` threads (Pillow and NumPy release the GIL), up to
    two batches beyond the one being yielded, so the model computes while the next files decode;
    results stay in the order of ``paths``. A file that fails to decode (a header that passed
    ``check_images``, a truncated body) is one ``CnnctlError`` naming it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from cnnctl.data.images import ImageError

    paths = list(paths)

    def read(p):
        try:
            return load_for_model(str(p), spec, short_side)
        except ImageError as e:
            raise CnnctlError(f"cannot read {p}: {e}", hint="give JPEG, PNG, BMP, GIF, WebP or TIFF files") from None

    ahead = 2 * batch_size
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.submit(read, p) for p in paths[:batch_size + ahead]]
        submitted = len(pending)
        for start in range(0, len(paths), batch_size):
            done = [f.result() for f in pending[:batch_size]]
            pending = pending[batch_size:]
            more = paths[submitted:submitted + batch_size]
            pending += [pool.submit(read, p) for p in more]
            submitted += len(more)
            yield paths[start:start + batch_size], np.stack(done).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def load_for_model(path: str, spec, short_side: int = 0) -> np.ndarray:
    """One image file -> uint8 (spec.height, spec.width, spec.channels) as the model was trained to see it.

    ``short_side`` 0: the whole image resized to the model's size (cnnctl's default pipeline).
    Otherwise the shorter side is resized to ``short_side`` (aspect kept) and the centre crop
    taken: the ImageNet evaluation of the pretrained backbones (256 -> 224) and of runs
    trained with ``data.resize_short``.
    """
    from PIL import Image

    from cnnctl.data.images import load_image

    if not short_side:
        return load_image(path, spec.channels, (spec.height, spec.width))
    arr = load_image(path, spec.channels)
    h, w = arr.shape[:2]
    scale = short_side / min(h, w)
    if h <= w:
        size = (max(short_side, round(w * scale)), short_side)
    else:
        size = (short_side, max(short_side, round(h * scale)))
    pil = Image.fromarray(arr[..., 0] if spec.channels == 1 else arr)
    pil = pil.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    out = np.asarray(pil, dtype=np.uint8)
    out = out[..., None] if out.ndim == 2 else out
    top, left = (out.shape[0] - spec.height) // 2, (out.shape[1] - spec.width) // 2
    return np.ascontiguousarray(out[top:top + spec.height, left:left + spec.width])


def load_images(paths, spec, short_side: int = 0) -> np.ndarray:
    """Image files -> float32 (n, h, w, c) via ``load_for_model``; every unreadable file in one message."""
    from cnnctl.data.images import ImageError

    batch, problems = [], []
    for p in paths:
        try:
            batch.append(load_for_model(str(p), spec, short_side))
        except ImageError as e:
            problems.append(f"{p}: {e}")
    if problems:
        raise CnnctlError("cannot read " + "; ".join(problems), hint="give JPEG, PNG, BMP, GIF, WebP or TIFF files")
    return np.stack(batch).astype(np.float32)


def imagenet_short_side(height: int) -> int:
    """ImageNet evaluation: the shorter side is 256/224 of the crop (256 for 224)."""
    return round(height * 256 / 224)
