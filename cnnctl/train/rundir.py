"""Run directories: atomic files, a lock, and resume backups.

Layout of ``checkpoints/<name>/``::

    config.toml      the resolved recipe
    classes.json     label -> class name
    model.keras      the last epoch's model (Keras v3 format)
    best.keras       the best epoch by train.monitor
    backup/          resume state: ckpt-<step>/{variables.npz, state.json} + LATEST
    history.csv      one row per epoch
    tensorboard/     TensorBoard event files
    curves.png       loss / accuracy curves
    metrics.json     final test metrics, wall time, images/s
    run.lock         held (flock) while a process trains into the directory

Every file is written to a temporary name in the same directory, fsynced and
renamed over the target, so a kill at any instant leaves the previous
version readable.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnctl import files
from cnnctl.errors import CnnctlError


def model_state_variables(model) -> list:
    """What a resume restores by default: the model's variables and its optimizer's."""
    return list(model.variables) + list(model.optimizer.variables)


def _resume_hint(path: Path) -> str:
    """Where a write into a run failed: free space, then resume the run that holds ``path``."""
    run = next((p for p in (path.parent, *path.parents) if (p / "config.toml").is_file()), path.parent)
    return (f"free disk space (or fix permissions), then continue with `cnnctl train --resume {run}`; "
            "the previous checkpoint is intact")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> None:
    """``cnnctl.files.atomic_write`` for a file of a run (the error's hint says how to resume)."""
    files.atomic_write(path, write, suffix, hint=lambda: _resume_hint(Path(path)))


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda t: t.write_bytes(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npz(path, arrays: dict) -> None:
    files.atomic_write_npz(path, arrays, hint=lambda: _resume_hint(Path(path)))


def atomic_save_model(model, path) -> None:
    files.atomic_save_model(model, path, hint=lambda: _resume_hint(Path(path)))


def default_run_name(model: str, source: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    source = re.sub(r"[^A-Za-z0-9_.+-]+", "-", source).strip("-")     # "scenes:free" -> "scenes-free"
    return f"{model}-{source}-{stamp}"


class RunDir:
    """One run's directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # -------------------------------------------------------------- creation / opening
    @classmethod
    def create(cls, out_dir: str, name: str) -> RunDir:
        if not re.fullmatch(r"[\w.+-]+", name):
            raise CnnctlError(f"run name {name!r} has characters that do not belong in a folder name",
                              hint="use letters, digits, '-', '_', '.' and '+'")
        root = Path(out_dir)
        path, n = root / name, 1
        while path.exists():
            n += 1
            path = root / f"{name}-{n}"
        try:
            path.mkdir(parents=True)
        except OSError as e:
            raise CnnctlError(f"cannot create run directory {path}: {e.strerror}") from None
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        p = Path(path)
        if not p.is_dir():
            raise CnnctlError(f"run directory {p} does not exist",
                              hint="give a folder under checkpoints/ written by `cnnctl train`")
        if not (p / "config.toml").is_file():
            raise CnnctlError(f"{p} is not a cnnctl run directory (no config.toml)",
                              hint="give a folder written by `cnnctl train`")
        return cls(p)

    def file(self, name: str) -> Path:
        return self.path / name

    # -------------------------------------------------------------- lock
    def lock(self) -> None:
        """Take the run's lock, or fail naming the process that holds it."""
        lock_path = self.file("run.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CnnctlError(f"{self.path} is in use: process {holder} is training into it",
                              hint=f"wait for it to finish or stop it (kill {holder}), then resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -------------------------------------------------------------- small files
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.file(name), json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.file(name).read_text())
        except (OSError, ValueError) as e:
            raise CnnctlError(f"cannot read {self.file(name)}: {e}") from None

    def write_history(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines = [",".join(keys)] + [",".join(f"{r.get(k, '')}" for k in keys) for r in rows]
        atomic_write_text(self.file("history.csv"), "\n".join(lines) + "\n")

    # -------------------------------------------------------------- resume backups
    def save_backup(self, model, state: dict[str, Any], variables=None, keep: int = 2) -> None:
        """The task's state ``variables`` (default: model + optimizer variables) and the loop state
        -> backup/ckpt-<step>/, then LATEST -> it."""
        backup = self.file("backup")
        backup.mkdir(exist_ok=True)
        step = int(state["global_step"])
        # A new folder every time (never rewrite the one LATEST may point at): the step backup and
        # the epoch-end backup can share a global step.
        stem = f"ckpt-{step:010d}-{int(state['epoch']):05d}-{int(state['step_in_epoch']):07d}"
        ckpt, n = backup / stem, 1
        while ckpt.exists():
            ckpt, n = backup / f"{stem}-{n}", n + 1
        ckpt.mkdir()
        if variables is None:
            variables = model_state_variables(model)
        arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
        meta = {**state, "variable_paths": [v.path for v in variables],
                "variable_shapes": [list(a.shape) for a in arrays.values()]}

        atomic_write_npz(ckpt / "variables.npz", arrays)
        atomic_write_text(ckpt / "state.json", json.dumps(meta, indent=1))
        atomic_write_text(backup / "LATEST", ckpt.name + "\n")
        # Old checkpoints go only after LATEST points at the new one.
        for old in sorted(backup.glob("ckpt-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def has_backup(self) -> bool:
        return (self.file("backup") / "LATEST").is_file()

    def load_backup(self, model, variables=None) -> dict[str, Any]:
        """Restore the task's state ``variables`` (default: model + optimizer variables) from the
        latest backup -> the saved loop state."""
        backup = self.file("backup")
        try:
            name = (backup / "LATEST").read_text().strip()
            ckpt = backup / name
            meta = json.loads((ckpt / "state.json").read_text())
            with np.load(ckpt / "variables.npz", allow_pickle=False) as z:
                arrays = [z[f"v{i:05d}"] for i in range(len(z.files))]
        except (OSError, ValueError, KeyError) as e:
            raise CnnctlError(f"the resume backup in {backup} is unreadable: {e}",
                              hint="start a new run, or restore the run directory from a copy") from None
        if variables is None:
            variables = model_state_variables(model)
        shapes = [tuple(v.shape) for v in variables]
        saved = [tuple(a.shape) for a in arrays]
        if shapes != saved:
            raise CnnctlError(
                f"the checkpoint in {self.path} belongs to another architecture or optimizer "
                f"({len(saved)} saved variables vs {len(shapes)} in the model built from its config)",
                hint="resume with the same model and optimizer settings the run was started with")
        for v, a in zip(variables, arrays):
            v.assign(a)
        return meta


def load_classes(run: RunDir) -> list[str]:
    return list(run.read_json("classes.json"))


def history_rows(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    keys = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        vals = line.split(",")
        rows.append({k: float(v) for k, v in zip(keys, vals) if v != ""})
    return rows


__all__ = [
    "RunDir",
    "atomic_save_model",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_npz",
    "atomic_write_text",
    "default_run_name",
    "history_rows",
    "load_classes",
]
