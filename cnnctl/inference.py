"""Loading a trained run for evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl.data.resize import eval_short_side  # noqa: F401 - re-exported for the commands
from cnnctl.errors import CnnctlError


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
        use = {"generate": f"cnnctl generate {run.path}", "caption": f"cnnctl caption --model {run.path} IMAGE..."}
        raise CnnctlError(f"{run.path} is a {cfg.task} run, not a classifier",
                          hint=f"use `{use[cfg.task]}`" if cfg.task in use else "give a classification run")
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


def logits_of(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's main output for ``x`` (n, h, w, c), float32 in ``batch_size`` chunks.

    A few images (one chunk) go through one eager call: ``model.predict`` would first build its
    tf.data pipeline and trace a predict function, about 0.3 s on one image here. More chunks share
    ``predict_on_batch``'s function, traced once.
    """
    if len(x) <= batch_size:
        out = model(x, training=False)
        return np.asarray(out[0] if isinstance(out, (list, tuple)) else out, np.float32)
    chunks = [model.predict_on_batch(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(c[0] if isinstance(c, (list, tuple)) else c, np.float32) for c in chunks])


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
