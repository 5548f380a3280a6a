"""Atomic writes: a write that fails part-way leaves the previous file whole and no temporary behind."""

from pathlib import Path

import numpy as np
import pytest

from cnnctl import files
from cnnctl.errors import CnnctlError


def _fail_after_half(real_savez):
    """np.savez that writes about half of its file, then fails as a full disk does."""
    def savez(path, **arrays):
        real_savez(path, **arrays)
        data = Path(path).read_bytes()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")
    return savez


def test_a_failed_npz_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "features.npz"
    files.atomic_write_npz(target, {"train_x": np.arange(10.0)})
    monkeypatch.setattr(np, "savez", _fail_after_half(np.savez))
    with pytest.raises(CnnctlError, match="could not write .*features.npz: No space left on device"):
        files.atomic_write_npz(target, {"train_x": np.zeros(100_000)})
    monkeypatch.undo()
    with np.load(target, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["train_x"], np.arange(10.0))   # the old version, whole
    assert [p.name for p in tmp_path.iterdir()] == ["features.npz"]    # no temporary left behind


def test_text_is_replaced_whole_and_a_failing_writer_leaves_no_trace(tmp_path):
    target = tmp_path / "dataset.json"
    files.atomic_write_text(target, '{"old": 1}\n')
    files.atomic_write_text(target, '{"new": 2}\n')
    assert target.read_text() == '{"new": 2}\n'

    def half_then_fail(tmp):
        tmp.write_text('{"ne')
        raise OSError(27, "File too large")

    with pytest.raises(CnnctlError, match="File too large"):
        files.atomic_write(target, half_then_fail)
    assert target.read_text() == '{"new": 2}\n' and len(list(tmp_path.iterdir())) == 1
