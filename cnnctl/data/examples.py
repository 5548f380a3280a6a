"""What a data source returns before any TensorFlow is involved.

An ``Examples`` holds one split of a data set in one of three forms:

- ``images``: a uint8 array ``(n, h, w, c)`` in memory (bundled sets, caches);
- ``paths``: image files on disk, decoded in the tf.data pipeline;
- ``shards``: TFRecord files written by ``cnnctl data convert``.

``labels`` is an int32 array ``(n,)`` (empty for shards, whose labels live in
the records) and ``class_names`` maps label -> name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Examples:
    class_names: list[str]
    labels: np.ndarray                       # (n,) int32
    images: np.ndarray | None = None         # (n, h, w, c) uint8
    paths: list[str] | None = None           # n image files
    shards: list[str] | None = None          # TFRecord files
    count: int = 0                           # number of examples (shards: from their index)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why): training stops on these
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, why): passed over, training goes on
    needs_pil: np.ndarray | None = None      # (n,) bool: files TensorFlow cannot decode faithfully

    def __post_init__(self):
        if self.images is not None or self.paths is not None:
            self.count = len(self.labels)

    @property
    def kind(self) -> str:
        return "images" if self.images is not None else "paths" if self.paths is not None else "shards"

    def subset(self, index: np.ndarray) -> Examples:
        """The examples at ``index`` (not for shards)."""
        if self.kind == "shards":
            raise ValueError("cannot index TFRecord shards")
        return Examples(
            class_names=self.class_names,
            labels=self.labels[index],
            images=None if self.images is None else self.images[index],
            paths=None if self.paths is None else [self.paths[i] for i in index],
            needs_pil=None if self.needs_pil is None else self.needs_pil[index],
        )


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split -> (keep_index, held_out_index), each sorted.

    From every class, ``round(fraction * count)`` examples (at least one when
    the class has two or more and fraction > 0) are held out.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = round(fraction * len(idx))
        if fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        held.append(rng.permutation(idx)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep, held_idx
