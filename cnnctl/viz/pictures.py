"""PNG files of what ``cnnctl.viz.inside`` computes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnnctl.viz.plots import _plt, _save


def _show(ax, img, cmap=None, title: str | None = None, fontsize: int = 7):
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap=cmap or ("gray" if img.ndim == 2 else None), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _unit(img):
    img = np.asarray(img, dtype=np.float32)
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def tiles(images: np.ndarray, path: Path, title: str, captions: list[str] | None = None, columns: int | None = None):
    """A grid of images (n, h, w, 1|3), each scaled to [0, 1] on its own."""
    plt = _plt()
    n = len(images)
    cols = columns or min(n, max(4, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k < n:
            _show(ax, _unit(images[k]), title=captions[k] if captions else None, fontsize=6)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def activation_maps(maps: np.ndarray, path: Path, title: str, limit: int = 64):
    """Feature maps (h, w, k) of one image: the first ``limit`` channels, one shared colour scale."""
    plt = _plt()
    k = min(limit, maps.shape[-1])
    cols = min(k, 8)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False)
    lo, hi = float(maps.min()), float(maps.max())
    for c, ax in enumerate(axes.ravel()):
        if c < k:
            ax.imshow(maps[..., c], cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(c), fontsize=6)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def projections(proj: np.ndarray, images: np.ndarray, path: Path, title: str, captions: list[str]):
    """Deconvnet projections beside the image parts they come from (as in ZFNet's Fig. 2)."""
    plt = _plt()
    n = len(proj)
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 3.4), squeeze=False)
    for k in range(n):
        p = proj[k]
        scale = float(np.percentile(np.abs(p), 99.5)) or float(np.abs(p).max()) or 1.0
        _show(axes[0, k], np.clip(0.5 + p / (2 * scale), 0, 1), title=captions[k], fontsize=6)  # grey = 0
        strength = np.abs(p).max(axis=-1)
        mask = strength > 0.1 * strength.max() if strength.max() > 0 else np.zeros_like(strength, bool)
        ys, xs = np.nonzero(mask)
        img = images[k] / 255.0
        if len(ys):
            img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        _show(axes[1, k], img)
    axes[0, 0].set_ylabel("projection", fontsize=7)
    axes[1, 0].set_ylabel("image patch", fontsize=7)
    fig.suptitle(title, fontsize=8)
    _save(fig, path)
    plt.close(fig)


def overlay(image: np.ndarray, heat: np.ndarray, path: Path, title: str, heat_title: str, cmap: str = "jet",
            extra: tuple[np.ndarray, str] | None = None):
    """The image, the map alone, and the map over the image (maps resized to the image)."""
    plt = _plt()
    panels = 3 + (1 if extra is not None else 0)
    fig, axes = plt.subplots(1, panels, figsize=(3 * panels, 3.3), squeeze=False)
    img = image / 255.0
    grey = img[..., 0] if img.shape[-1] == 1 else img.mean(axis=-1)
    _show(axes[0, 0], img, title="image")
    h, w = image.shape[:2]
    big = _resize(heat, (h, w))
    im = axes[0, 1].imshow(big, cmap=cmap, interpolation="nearest")
    axes[0, 1].set_xticks([])
    axes[0, 1].set_yticks([])
    axes[0, 1].set_title(heat_title, fontsize=7)
    fig.colorbar(im, ax=axes[0, 1], fraction=0.046)
    axes[0, 2].imshow(grey if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    axes[0, 2].imshow(big, cmap=cmap, alpha=0.5, interpolation="bilinear")
    axes[0, 2].set_xticks([])
    axes[0, 2].set_yticks([])
    axes[0, 2].set_title("overlay", fontsize=7)
    if extra is not None:
        im = axes[0, 3].imshow(_resize(extra[0], (h, w)), cmap="viridis", interpolation="nearest")
        axes[0, 3].set_xticks([])
        axes[0, 3].set_yticks([])
        axes[0, 3].set_title(extra[1], fontsize=7)
        fig.colorbar(im, ax=axes[0, 3], fraction=0.046)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def _resize(a: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D map to ``size`` (keeps NaN for uncovered pixels)."""
    a = np.asarray(a, dtype=np.float32)
    if a.shape == tuple(size):
        return a
    rows = (np.arange(size[0]) * a.shape[0] / size[0]).astype(int)
    cols = (np.arange(size[1]) * a.shape[1] / size[1]).astype(int)
    return a[rows][:, cols]


def captioned(images: list[np.ndarray], generated: list[str], references: list[str], right: list[bool],
              path: Path, title: str, columns: int = 4):
    """A grid of images, each with its generated caption (green: equal to a reference, red: not)
    and its first reference caption below it."""
    plt = _plt()
    n = len(images)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        img = np.asarray(images[k])
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_title(generated[k], fontsize=7, color="darkgreen" if right[k] else "firebrick", wrap=True)
        ax.text(0.5, -0.06, f"ref: {references[k]}", transform=ax.transAxes, ha="center", va="top", fontsize=6,
                color="dimgray", wrap=True)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def alignment(image: np.ndarray, boxes: list[tuple[int, int, int, int] | None], words: list[str],
              region_of_word: list[int], scores: list[float], path: Path, title: str):
    """Karpathy & Fei-Fei Fig. 5 in the simplest form: each region outlined in its own colour, and each
    word of the sentence written in the colour of the region it aligns to (``None`` box: the whole image)."""
    plt = _plt()
    colours = plt.get_cmap("tab10")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(7.5, 3.6), gridspec_kw={"width_ratios": [1, 1]})
    img = np.asarray(image)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    ax.axis("off")
    used = sorted(set(region_of_word))
    for r in used:
        box = boxes[r]
        if box is None:
            x0, y0, x1, y1 = 0, 0, img.shape[1], img.shape[0]
        else:
            x0, y0, x1, y1 = box
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=2.5,
                                   ls="--" if box is None else "-", edgecolor=colours(r % 10)))
    bx.axis("off")
    for k, (word, r, score) in enumerate(zip(words, region_of_word, scores)):
        where = "whole image" if boxes[r] is None else f"cell {r + 1}"
        bx.text(0.02, 0.95 - k * 0.085, f"{word}", color=colours(r % 10), fontsize=11, weight="bold",
                transform=bx.transAxes, va="top")
        bx.text(0.45, 0.95 - k * 0.085, f"-> {where}  ({score:.2f})", color="dimgray", fontsize=8,
                transform=bx.transAxes, va="top")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)
