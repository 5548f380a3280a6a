"""Loading a trained run for evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError


def load_run_model(run_dir: str | Path, which: str = "model"):
    """-> (keras model, class names, Config) of a run; ``which`` is "model" (last) or "best".

    Loaded with Keras ``safe_mode=True``: no Lambda-layer code from someone
    else's file runs; our own layers are registered serializables.
    """
    import keras

    import cnnctl.models  # noqa: F401 - registers cnnctl's layers for deserialisation
    from cnnctl.config import load_run_config
    from cnnctl.train.rundir import RunDir, load_classes

    run = RunDir.open(run_dir)
    cfg = load_run_config(run.path)
    classes = load_classes(run)
    path = run.file(f"{which}.keras")
    if not path.is_file():
        other = "best" if which == "model" else "model"
        hint = (f"the run has {other}.keras: use --{other if other == 'best' else 'last'}"
                if run.file(f"{other}.keras").is_file() else "the run has not finished an epoch yet")
        raise CnnctlError(f"{path} does not exist", hint=hint)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        raise CnnctlError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}",
                          hint="the file is damaged or from an incompatible version; "
                               "use best.keras or resume the run to rewrite it") from None
    from cnnctl.models import model_num_outputs

    out = model_num_outputs(model)
    if out != len(classes):
        raise CnnctlError(f"{path} predicts {out} classes but the run lists {len(classes)}",
                          hint="the run directory has been mixed with another run's files")
    return model, classes, cfg


def input_spec(model):
    from cnnctl.data.pipeline import InputSpec
    from cnnctl.models import model_input_shape

    return InputSpec.from_shape(model_input_shape(model))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
