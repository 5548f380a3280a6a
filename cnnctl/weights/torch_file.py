"""Read a PyTorch ``state_dict`` file into numpy arrays, without torch and without arbitrary pickle.

A ``.pth`` file is a pickle whose tensors point into raw storages. Two
layouts exist: the zip archive of ``torch.save`` since PyTorch 1.6
(``*/data.pkl`` + ``*/data/<key>``), and the legacy stream (magic number,
protocol, system info, the pickle, the storage keys, then each storage as an
8-byte element count and its bytes). Both are read here with an unpickler
that resolves only the handful of globals a state dict needs
(``OrderedDict``, ``torch._utils._rebuild_tensor_v2``, storage types) and
refuses everything else, so a malicious file cannot run code.
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


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, offset, size, stride)


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
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
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _plain_pickle(f):
    up = _SafeUnpickler(f, {})
    return up.load()


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``path`` (a PyTorch state dict, either layout) -> {name: numpy array}."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TorchFileError(f"cannot read {path}: {e.strerror or e}") from None
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if pkl is None:
                    raise TorchFileError("zip archive without data.pkl")
                root = pkl[: -len("data.pkl")]
                obj = _SafeUnpickler(io.BytesIO(z.read(pkl)), storages).load()
                for key, st in storages.items():
                    st.array = np.frombuffer(z.read(f"{root}data/{key}"), dtype=st.dtype.newbyteorder("<"))
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
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, zipfile.BadZipFile, ValueError) as e:
        raise TorchFileError(f"{path} is not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    state = _resolve(obj)
    if not isinstance(state, dict):
        raise TorchFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    if "state_dict" in state and isinstance(state["state_dict"], dict):  # a training checkpoint
        state = state["state_dict"]
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
