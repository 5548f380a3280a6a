"""Pretrained weights: the torch-free .pth reader, the EfficientNet-Lite0 conversion, real photos."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnctl.errors import CnnctlError
from cnnctl.weights.torch_file import TorchFileError, read_state_dict

DATA = Path(__file__).parent / "data"


def _write_torch_zip(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` in torch.save's zip layout (float32 / int64), without torch.

    Fake ``torch`` / ``torch._utils`` modules give pickle the global names torch itself writes.
    """
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    for obj, module in ((FloatStorage, "torch"), (LongStorage, "torch"), (_rebuild_tensor_v2, "torch._utils")):
        obj.__module__, obj.__qualname__ = module, obj.__name__
    torch_mod.FloatStorage, torch_mod.LongStorage, torch_mod._utils = FloatStorage, LongStorage, utils_mod
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Tensor:
        def __init__(self, key, array):
            self.key, self.array = key, array

        def __reduce__(self):
            strides = tuple(s // self.array.itemsize for s in self.array.strides)
            return (_rebuild_tensor_v2, (("storage", self.key), 0, self.array.shape, strides, False,
                                         collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "storage":
                key = obj[1]
                kind = LongStorage if tensors[key].dtype == np.int64 else FloatStorage
                return ("storage", kind, key, "cpu", int(tensors[key].size))
            return None

    saved = {m: sys.modules.get(m) for m in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(collections.OrderedDict((k, Tensor(k, np.array(v, order="C")))
                                                              for k, v in tensors.items()))
    finally:
        for m, mod in saved.items():
            if mod is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = mod
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, v in tensors.items():
            z.writestr(f"archive/data/{key}", np.array(v, order="C").astype(v.dtype.newbyteorder("<")).tobytes())


def test_zip_state_dict_round_trips_and_foreign_code_is_refused(tmp_path):
    tensors = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
               "bn.num_batches_tracked": np.array(7, dtype=np.int64)}
    path = tmp_path / "ok.pth"
    _write_torch_zip(path, tensors)
    state = read_state_dict(path)
    assert set(state) == set(tensors)
    np.testing.assert_array_equal(state["conv.weight"], tensors["conv.weight"])
    assert int(state["bn.num_batches_tracked"]) == 7

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}))
    with pytest.raises(TorchFileError, match="refusing to load"):
        read_state_dict(evil)
    assert not (tmp_path / "owned").exists()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(TorchFileError):
        read_state_dict(junk)


def test_converted_efficientnet_lite0_matches_the_pytorch_logits_on_real_photos(tmp_path, monkeypatch):
    """Logits of the original PyTorch model (benchmarks/efficientnet_torch_reference.py) on 4 photos."""
    from cnnctl.data.pipeline import InputSpec
    from cnnctl.inference import load_for_model
    from cnnctl.weights import imagenet_class_names, load_pretrained

    monkeypatch.setenv("CNNCTL_CACHE", str(tmp_path / "cache"))
    messages = []
    model = load_pretrained("efficientnet_lite0", "imagenet", log=messages.append)
    assert any("converting" in m for m in messages)
    cached = tmp_path / "cache" / "weights" / "efficientnet_lite0-imagenet.npz"
    assert cached.is_file()
    ref = np.load(DATA / "efficientnet_lite0_torch_logits.npz", allow_pickle=False)
    x = np.stack([load_for_model(str(DATA / "photos" / f"{n}.jpg"), InputSpec(224, 224, 3), 256)
                  for n in ref["names"]]).astype("float32")
    logits = np.asarray(model(x, training=False))
    # The bound the README states: max absolute difference 2e-5 on logits up to 11 (float32 sums
    # in another order; 7e-6 seen here). A wrong BN epsilon or padding is off by 1e-3 or more.
    assert np.abs(logits - ref["logits"]).max() <= 2e-5

    classes = imagenet_class_names()
    top5 = {str(n): [classes[i] for i in np.argsort(-row)[:5]] for n, row in zip(ref["names"], logits)}
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top5["chelsea"][:2])
    assert top5["coffee"][0] == "espresso"
    assert {"missile", "projectile", "space shuttle"} & set(top5["rocket"][:2])

    again = load_pretrained("efficientnet_lite0", "imagenet", log=messages.append)   # from the cache now
    assert sum("converting" in m for m in messages) == 1
    np.testing.assert_array_equal(np.asarray(again(x, training=False)), logits)

    # A cache of another shape (here: one variable transposed) or a damaged one is converted again,
    # never loaded into the wrong places and never fatal.
    good = cached.read_bytes()
    with np.load(cached) as f:
        arrays = dict(f)
    arrays["w0"] = np.ascontiguousarray(np.swapaxes(arrays["w0"], 0, 1)[:, :2])
    np.savez(cached, **arrays)
    swapped = load_pretrained("efficientnet_lite0", "imagenet", log=messages.append)
    assert sum("another version of the model" in m for m in messages) == 1
    np.testing.assert_array_equal(np.asarray(swapped(x, training=False)), logits)
    cached.write_bytes(good[: len(good) // 2])
    truncated = load_pretrained("efficientnet_lite0", "imagenet", log=messages.append)
    assert sum("is unreadable" in m for m in messages) == 1
    np.testing.assert_array_equal(np.asarray(truncated(x, training=False)), logits)


def test_efficientnet_lite0_has_the_reference_parameter_count():
    from cnnctl import models

    assert models.trainable_params(models.build("efficientnet_lite0")) == 4_652_008  # PyTorch's count


def test_weights_of_the_wrong_shape_are_refused_with_the_tensor_named(tmp_path):
    bad = tmp_path / "bad.pth"
    _write_torch_zip(bad, {"_conv_stem.weight": np.zeros((16, 3, 3, 3), np.float32),
                           "_fc.weight": np.zeros((1000, 1280), np.float32)})
    from cnnctl.weights import load_pretrained

    with pytest.raises(CnnctlError, match=r"_conv_stem.weight has shape \(16, 3, 3, 3\)"):
        load_pretrained("efficientnet_lite0", str(bad))
    with pytest.raises(CnnctlError, match="no ImageNet weights for 'resnet20'"):
        load_pretrained("resnet20", "imagenet")
