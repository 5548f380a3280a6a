"""What a spatial transformer does: each input beside the output of every transformer in the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError


def transformers(model) -> list:
    from cnnctl.layers import SpatialTransformer

    found = [layer for layer in model.layers if isinstance(layer, SpatialTransformer)]
    if not found:
        raise CnnctlError(f"{model.name} has no SpatialTransformer layer",
                          hint="train a model with one, e.g. --model st_cnn")
    return found


def stn_grid(model, x: np.ndarray, path: Path, titles: list[str], class_names=None, labels=None) -> list[str]:
    """Write a PNG: one row per image, the input then each transformer's output (min-max scaled)."""
    import keras

    from cnnctl.viz.plots import _plt, _save

    sts = transformers(model)
    probe = keras.Model(model.inputs[0], [layer.output for layer in sts])
    outs = probe(x, training=False)
    outs = [np.asarray(o, dtype=np.float32) for o in (outs if isinstance(outs, (list, tuple)) else [outs])]
    plt = _plt()
    cols = 1 + len(sts)
    fig, axes = plt.subplots(len(x), cols, figsize=(2.2 * cols, 2.2 * len(x)), squeeze=False)
    for i in range(len(x)):
        panels = [x[i]] + [o[i] for o in outs]
        names = ["input"] + [f"{layer.name} ({layer.transform})" for layer in sts]
        for j, (img, name) in enumerate(zip(panels, names)):
            ax = axes[i, j]
            img = img.astype(np.float32)
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img[..., :3], cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
        if labels is not None and class_names:
            axes[i, 0].set_ylabel(class_names[int(labels[i])], fontsize=8)
    fig.suptitle(f"{model.name}: inputs and what the spatial transformer(s) make of them", fontsize=9)
    _save(fig, path)
    plt.close(fig)
    return [layer.name for layer in sts]
