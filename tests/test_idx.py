import gzip
import struct

import numpy as np
import pytest

from cnnctl.data.idx import read_idx
from cnnctl.data.sources import BUNDLED, FASHION_CLASSES, fashion_mnist
from cnnctl.errors import CnnctlError


def _write_idx(path, arr: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, gz):
    arr = np.random.default_rng(0).integers(0, 256, (5, 4, 3)).astype(np.uint8)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _write_idx(p, arr, gz)
    np.testing.assert_array_equal(read_idx(p), arr)


def test_truncated_and_bad_magic(tmp_path):
    arr = np.zeros((4, 2, 2), np.uint8)
    p = tmp_path / "t.idx"
    _write_idx(p, arr, False)
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(CnnctlError, match="truncated"):
        read_idx(p)
    q = tmp_path / "q.idx"
    q.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(CnnctlError, match="not an IDX"):
        read_idx(q)


def test_bundled_fashion_mnist_is_the_real_data_set():
    assert (BUNDLED / "fashion_mnist" / "NOTICE").is_file()
    splits = fashion_mnist()
    tr, te = splits["train"], splits["test"]
    assert tr.images.shape == (60000, 28, 28, 1) and te.images.shape == (10000, 28, 28, 1)
    assert tr.class_names == FASHION_CLASSES
    # Balanced: 6,000 train and 1,000 test images per class.
    assert np.bincount(tr.labels).tolist() == [6000] * 10
    assert np.bincount(te.labels).tolist() == [1000] * 10
    # Known first test label (ankle boot, 9) and train pixel statistics used by fashion_cnn.
    assert te.labels[0] == 9
    assert abs(tr.images.mean() - 72.94) < 0.05
