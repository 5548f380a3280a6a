"""Atomic file writes: every file cnnctl writes goes through here.

A file is written to a temporary name beside its target, fsynced and renamed
over the target (then the folder is fsynced), so a kill or a full disk at any
instant leaves either the old version or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from cnnctl.errors import CnnctlError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


Hint = str | Callable[[], str] | None   # a callable is asked only when the write fails


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "",
                 hint: Hint = None) -> None:
    """Call ``write(tmp_path)``, fsync, then rename ``tmp_path`` over ``path``.

    ``suffix`` ends the temporary name (writers that insist on an extension: ``.keras``, ``.npz``).
    An ``OSError`` (disk full, permissions) becomes one ``CnnctlError`` naming the file, with ``hint``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if callable(hint):
            hint = hint()
        raise CnnctlError(f"could not write {path}: {e.strerror or e}",
                          hint=hint or f"free disk space (or fix permissions) and run the command again; "
                                       f"the previous version of {path.name} is intact") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes, hint: Hint = None) -> None:
    atomic_write(path, lambda t: t.write_bytes(data), hint=hint)


def atomic_write_text(path, text: str, hint: Hint = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), hint=hint)


def atomic_write_npz(path, arrays: dict, hint: Hint = None) -> None:
    """``np.savez(path, **arrays)``, atomically (``np.savez`` alone truncates the old file first)."""
    import numpy as np

    atomic_write(path, lambda t: np.savez(t, **arrays), suffix=".npz", hint=hint)


def atomic_save_model(model, path, hint: Hint = None) -> None:
    """``model.save`` to a temporary ``.keras`` name, then rename."""
    def write(tmp: Path):
        try:
            model.save(str(tmp))
        except OSError:
            raise
        except Exception as e:  # h5py/zipfile wrap ENOSPC and EFBIG in their own types
            raise OSError(getattr(e, "errno", None) or 28, str(e)) from e

    atomic_write(path, write, suffix=".keras", hint=hint)
