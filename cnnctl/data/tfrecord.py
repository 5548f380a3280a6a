"""Writing sharded TFRecords (``cnnctl data convert``), read back by the ``tfrecord`` source.

Each record is a ``tf.train.Example`` with ``image`` (PNG bytes, lossless,
already upright and 8-bit), ``label`` (int64) and ``path`` (the original
file). ``dataset.json`` beside the shards gives the classes, counts and image
shape.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnctl.data.examples import Examples
from cnnctl.data.images import ImageError, load_image, open_image
from cnnctl.data.sources import load_source
from cnnctl.errors import CnnctlError
from cnnctl.files import atomic_write_text


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def convert(path: str, out: str, shards: int = 0, channels: int = 0, size: tuple[int, int] | None = None,
            source: str = "auto", on_progress: Callable[[int], None] | None = None) -> dict:
    """Write ``out/{train,test}-NNNNN-of-MMMMM.tfrecord`` + ``dataset.json``; -> the description."""
    import tensorflow as tf

    name, splits = load_source(source, path)
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CnnctlError(f"{out_dir} exists and is not empty", hint="choose a new output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    desc = {"source": name, "from": path or "(bundled)", "classes": None, "counts": {}, "skipped": []}
    for split, ex in splits.items():
        if ex is None:
            continue
        if ex.kind == "shards":
            raise CnnctlError(f"{path} is already TFRecords")
        desc["classes"] = list(ex.class_names)
        ch = channels or _guess_channels(ex)
        n_shards = shards or max(1, math.ceil(ex.count / 5000))
        writers = [tf.io.TFRecordWriter(str(out_dir / f"{split}-{i:05d}-of-{n_shards:05d}.tfrecord"))
                   for i in range(n_shards)]
        written = 0
        for i in range(ex.count):
            try:
                arr = (ex.images[i] if ex.kind == "images" else load_image(ex.paths[i], ch, size))
            except ImageError as e:
                desc["skipped"].append([ex.paths[i], str(e)])
                continue
            if arr.shape[-1] != ch:
                arr = np.repeat(arr, 3, axis=-1) if ch == 3 else arr.mean(-1, keepdims=True).astype(np.uint8)
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(arr)])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(ex.labels[i])])),
                "path": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[(ex.paths[i] if ex.paths else f"{split}/{i}").encode("utf-8")])),
            }
            writers[written % n_shards].write(tf.train.Example(features=tf.train.Features(feature=feature))
                                              .SerializeToString())
            written += 1
            if on_progress:
                on_progress(1)
        for w in writers:
            w.close()
        desc["counts"][split] = written
        desc["image_shape"] = list(size or ()) + [ch] if size else None
    atomic_write_text(out_dir / "dataset.json", json.dumps(desc, indent=2) + "\n")
    return desc


def _guess_channels(ex: Examples) -> int:
    if ex.kind == "images":
        return int(ex.images.shape[-1])
    for p in ex.paths[:200]:
        try:
            with open_image(p) as img:
                if img.mode not in ("L", "LA", "I", "I;16", "1", "F"):
                    return 3
        except ImageError:  # reported when converted
            continue
    return 1


