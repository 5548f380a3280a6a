"""Read a PyTorch ``state_dict`` file into numpy arrays, without torch and without arbitrary pickle.

A ``.pth`` file is a pickle whose tensors point into raw storages. Two
layouts exist: the zip archive of ``torch.save`` since PyTorch 1.6
(``*/data.pkl`` + ``*/data/<key>``), and the legacy stream (magic number,
protocol, system info, the pickle, the storage keys, then each storage as an
8-byte element count and its bytes). Both are read here with an unpickler
that resolves only the handful of globals a state dict needs
(``OrderedDict``, ``torch._utils._rebuild_tensor_v2``, storage types) and
refuses everything else, so a malicious file cannot run code.

``read_torchscript`` reads the parameters of a TorchScript archive
(``torch.jit.save``) the same way: its ``data.pkl`` pickles the module tree
as ``__torch__.<module>.<Class>`` objects, which become inert ``ScriptNode``s
(a type name and an attribute dict); the code in the archive is never run.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


SCRIPT_LISTS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")


class TorchFileError(ValueError):
    """The file is not a PyTorch state dict this reader understands (or not a safe one)."""


class _StorageType:
    def __init__(self, name: str):
        if name not in STORAGE_DTYPES:
            raise TorchFileError(f"unsupported tensor storage torch.{name}")
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage referenced by the pickle; its bytes arrive later (legacy) or from the zip."""

    def __init__(self, key: str, dtype: np.dtype):
        self.key, self.dtype, self.array = key, dtype, None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise TorchFileError(f"storage {self.storage.key} missing from the file")
        if not self.size:
            return np.array(flat[self.offset])
        item = flat.itemsize
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, flat.dtype)
        if need > flat.size:
            raise TorchFileError(f"tensor of shape {self.size} runs past its storage")
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, [s * item for s in self.stride])
        return np.array(view)


class ScriptNode:
    """One module of a TorchScript archive: ``type`` ("inceptionv3.Conv2dLayer", mangling removed) and ``attrs``."""

    type = ""

    def __init__(self):
        self.attrs = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TorchFileError(f"unexpected state of a {self.type}: {type(state).__name__}")
        self.attrs = dict(state)

    def __repr__(self):
        return f"ScriptNode({self.type}, {sorted(self.attrs)})"


def _script_class(module: str, name: str):
    """A ScriptNode subclass standing for the TorchScript class ``module.name`` (no code of its own)."""
    path = ".".join(p for p in module.split(".")[1:] if not p.startswith("___torch_mangle"))
    return type(name, (ScriptNode,), {"type": f"{path}.{name}" if path else name})


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, offset, size, stride)


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage], script_modules: bool = False):
        super().__init__(file)
        self.storages, self.script_modules = storages, script_modules

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if self.script_modules and module.startswith("__torch__."):
            return _script_class(module, name)
        if self.script_modules and module == "torch.jit._pickle" and name in SCRIPT_LISTS:
            return list  # build_intlist([1, 3]) etc.: typed lists of module attributes
        raise TorchFileError(f"refusing to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"unexpected storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype)
        return self.storages[key]


def _resolve(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, ScriptNode):   # NEWOBJ without a BUILD leaves a node with no state
        obj.attrs = {k: _resolve(v) for k, v in getattr(obj, "attrs", {}).items()}
        return obj
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _plain_pickle(f):
    up = _SafeUnpickler(f, {})
    return up.load()


def _read_zip(data: bytes, storages: dict[str, _Storage], script_modules: bool = False):
    """The object pickled in ``*/data.pkl`` of a torch.save / torch.jit.save zip, storages filled in."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
        if pkl is None:
            raise TorchFileError("zip archive without data.pkl")
        root = pkl[: -len("data.pkl")]
        obj = _SafeUnpickler(io.BytesIO(z.read(pkl)), storages, script_modules).load()
        for key, st in storages.items():
            st.array = np.frombuffer(z.read(f"{root}data/{key}"), dtype=st.dtype.newbyteorder("<"))
    return obj


_READ_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, struct.error, zipfile.BadZipFile, ValueError)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TorchFileError(f"cannot read {path}: {e.strerror or e}") from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``path`` (a PyTorch state dict, either layout) -> {name: numpy array}."""
    path = Path(path)
    data = _read_bytes(path)
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            obj = _read_zip(data, storages)
        else:
            f = io.BytesIO(data)
            if _plain_pickle(f) != LEGACY_MAGIC:
                raise TorchFileError("not a PyTorch file (bad magic number)")
            _plain_pickle(f)  # protocol version
            _plain_pickle(f)  # system info (endianness, type sizes)
            obj = _SafeUnpickler(f, storages).load()
            for key in _plain_pickle(f):
                st = storages[str(key)]
                (count,) = struct.unpack("<q", f.read(8))
                raw = f.read(count * st.dtype.itemsize)
                if len(raw) != count * st.dtype.itemsize:
                    raise TorchFileError(f"file ends inside storage {key}")
                st.array = np.frombuffer(raw, dtype=st.dtype.newbyteorder("<"))
    except TorchFileError:
        raise
    except _READ_ERRORS as e:
        raise TorchFileError(f"{path} is not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    state = _resolve(obj)
    if not isinstance(state, dict):
        raise TorchFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    if "state_dict" in state and isinstance(state["state_dict"], dict):  # a training checkpoint
        state = state["state_dict"]
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def read_torchscript(source: str | Path | bytes) -> ScriptNode:
    """The root module of a TorchScript archive (a path or its bytes), parameters as numpy arrays."""
    data = source if isinstance(source, bytes) else _read_bytes(Path(source))
    name = "the TorchScript archive" if isinstance(source, bytes) else str(source)
    try:
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise TorchFileError(f"{name} is not a TorchScript archive (not a zip file)")
        root = _resolve(_read_zip(data, {}, script_modules=True))
    except TorchFileError:
        raise
    except _READ_ERRORS as e:
        raise TorchFileError(f"{name} is not a readable TorchScript archive ({type(e).__name__}: {e})") from None
    if not isinstance(root, ScriptNode):
        raise TorchFileError(f"{name} holds a {type(root).__name__}, not a TorchScript module")
    return root


def script_parameters(node: ScriptNode, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array under ``node`` by its dotted attribute path ("net.layers.conv.weight")."""
    out = {}
    for key, value in node.attrs.items():
        if isinstance(value, ScriptNode):
            out.update(script_parameters(value, f"{prefix}{key}."))
        elif isinstance(value, np.ndarray):
            out[prefix + key] = value
    return out
