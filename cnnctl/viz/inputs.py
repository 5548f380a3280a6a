"""The images a picture is made of: files the user names, or the first test images of the run's data."""

from __future__ import annotations

import numpy as np

from cnnctl.errors import CnnctlError


def run_images(model, cfg, images: list[str], count: int = 8, log=lambda m: None):
    """-> (float32 (n, h, w, c) pixels in [0, 255] at the model's input, int labels or None, names).

    With ``images`` the named files are read as ``predict`` reads them; otherwise the first
    ``count`` images of the run's test split (its validation split if it has none), one per
    class first so that the picture shows every class.
    """
    from cnnctl.inference import (
        eval_short_side,
        imagenet_short_side,
        input_spec,
        load_images,
    )

    spec = input_spec(model)
    if images:
        # ImageNet evaluation for a pretrained network (shorter side 256/224 of the crop), else the run's.
        short = imagenet_short_side(spec.height) if cfg.data.source == "pretrained" else eval_short_side(cfg.data)
        return load_images(images, spec, short), None, [str(p) for p in images]
    from cnnctl.data.pipeline import DataModule

    if cfg.data.source == "pretrained":
        raise CnnctlError("a pretrained network has no data set of its own", hint="name image files after it")
    dm = DataModule(cfg.data, spec, 256, cfg.train.seed, log=log)
    split = "test" if dm.test is not None else "val"
    xs, ys = [], []
    for x, y in dm.eval_dataset(split):
        xs.append(x.numpy())
        ys.append(np.argmax(y.numpy(), axis=1))
        if sum(len(b) for b in xs) >= 40 * count:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    first = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)]
    rest = [i for i in range(len(y)) if i not in set(first)]
    pick = (first + rest)[:count]
    return x[pick], y[pick], [f"{split} image {i}" for i in pick]
