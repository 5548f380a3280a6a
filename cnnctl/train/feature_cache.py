"""Frozen-network features, computed once per (network, data) and found again by a hash.

Used by every task that trains on top of a frozen network: finetune's
``--freeze features`` (a classifier head) and captioning (a language model
over encoder features); segmentation and detection heads can use it the same
way. A run stores its arrays in ``features.npz`` (no pickle) and the hash they
were computed under in ``features.json``. A later run whose hash matches --
the same frozen weights and input size, the same images and splits -- finds
them among its sibling run directories (or in its own folder, on resume) and
skips the extraction.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def weights_digest(model) -> str:
    """A hash of a network's input shape and every weight (the frozen network's identity)."""
    h = hashlib.sha256()
    h.update(repr(tuple(model.inputs[0].shape)).encode())
    for w in model.weights:
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()


def key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def find_cached(run, key: str) -> Path | None:
    """``features.npz`` of this run or a sibling run computed under ``key``, if any."""
    candidates = [run.path / "features.json", *sorted(run.path.parent.glob("*/features.json"))]
    for meta in candidates:
        try:
            if json.loads(meta.read_text()).get("key") == key and (meta.parent / "features.npz").is_file():
                return meta.parent / "features.npz"
        except (OSError, ValueError):
            continue
    return None


def load_or_compute(run, key: str, compute: Callable[[], dict[str, np.ndarray]], log,
                    extra: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays stored under ``key`` (copied into ``run`` if found elsewhere), else ``compute()`` them.

    -> (arrays, the ``features.json`` record: key, seconds, whether they were reused, shapes).
    """
    from cnnctl.files import atomic_write_npz

    t0 = time.perf_counter()
    cached = find_cached(run, key)
    if cached is not None:
        try:
            with np.load(cached, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            log(f"the stored features in {cached} are unreadable ({type(e).__name__}); computing them again")
            cached = None
        else:
            log(f"reusing the features stored in {cached}")
            if cached.parent != run.path:
                atomic_write_npz(run.file("features.npz"), arrays)
    if cached is None:
        arrays = compute()
        atomic_write_npz(run.file("features.npz"), arrays)
    info = {"key": key, "seconds": round(time.perf_counter() - t0, 2), "reused": cached is not None,
            "shapes": {k: list(v.shape) for k, v in arrays.items()}, **(extra or {})}
    run.write_json("features.json", info)
    return arrays, info
