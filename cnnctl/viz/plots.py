"""Matplotlib figures written as PNG (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from cnnctl.train.rundir import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))


def curves(rows: list[dict[str, float]], path: Path, title: str = "",
           keys: tuple[str, ...] = ("loss", "accuracy")) -> None:
    """One panel per history key (the task's progress fields), train and validation per epoch."""
    plt = _plt()
    epochs = [int(r["epoch"]) for r in rows]
    # a task's fields a model does not report (Fast R-CNN has no RPN losses) get no panel
    keys = tuple(k for k in keys if any(k in r or "val_" + k in r for r in rows)) or keys[:1]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            ys = [r.get(prefix + key, np.nan) for r in rows]
            if not np.all(np.isnan(ys)):
                ax.plot(epochs, ys, style, label=("validation " if prefix else "train ") + key, markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts in the cells (true rows, predicted columns)."""
    plt = _plt()
    k = len(class_names)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or "confusion matrix")
    _save(fig, path)
    plt.close(fig)
