"""``cnnctl data inspect``: what a data set holds and every problem in it, before any training."""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Any

import numpy as np

from cnnctl.data.images import ImageError, inspect_image
from cnnctl.data.sources import load_source


def _inspect_or_reason(path: str):
    """ImageInfo of a fully decoded file, or the reason it cannot be used."""
    try:
        return inspect_image(path, full=True)
    except ImageError as e:
        return str(e)


def inspect_data(path: str, source: str = "auto") -> dict[str, Any]:
    """-> {source, classes, splits: {split: {...}}, problems: [(path, why)], skipped: [(path, why)]}.

    ``problems`` are what ``cnnctl train`` stops on (unreadable image files, a class with no
    readable training image); ``skipped`` is what it passes over and trains without (files that
    are not images, such as Thumbs.db or desktop.ini, broken links, skipped CSV rows).
    """
    name, splits = load_source(source, path)
    report: dict[str, Any] = {"source": name, "path": path or "(bundled)", "splits": {}, "problems": [],
                              "skipped": []}
    for split, ex in splits.items():
        if ex is None:
            continue
        report["classes"] = list(ex.class_names)
        report["problems"] += [list(p) for p in ex.problems]
        report["skipped"] += [list(p) for p in ex.skipped]
        info: dict[str, Any] = {"count": ex.count}
        if ex.kind == "images":
            info["per_class"] = {c: int((ex.labels == i).sum()) for i, c in enumerate(ex.class_names)}
            info["sizes"] = {f"{ex.images.shape[2]}x{ex.images.shape[1]}": ex.count}
            info["modes"] = {"L" if ex.images.shape[3] == 1 else "RGB": ex.count}
        elif ex.kind == "paths":

            with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
                infos = list(pool.map(_inspect_or_reason, ex.paths, chunksize=32))
            good = [(i, x) for i, x in enumerate(infos) if not isinstance(x, str)]
            known = {p for p, _ in ex.problems}  # a CSV's missing files are already listed
            report["problems"] += [[ex.paths[i], x] for i, x in enumerate(infos)
                                   if isinstance(x, str) and ex.paths[i] not in known]
            counts = collections.Counter(int(ex.labels[i]) for i, _ in good)
            info["per_class"] = {c: counts.get(i, 0) for i, c in enumerate(ex.class_names)}
            info["readable"] = len(good)
            info["sizes"] = dict(collections.Counter(f"{x.size[0]}x{x.size[1]}" for _, x in good).most_common(8))
            info["modes"] = dict(collections.Counter(x.mode for _, x in good))
            info["formats"] = dict(collections.Counter(x.format for _, x in good))
            notes = collections.Counter()
            for _, x in good:
                if x.exif_rotated:
                    notes["EXIF-rotated (turned upright when read)"] += 1
                if x.frames > 1:
                    notes["animated (first frame used)"] += 1
                if x.mode in ("CMYK", "I;16", "I;16B", "I;16L", "I", "F"):
                    notes[f"{x.mode} (converted to 8-bit grey/RGB)"] += 1
                if x.mode in ("RGBA", "LA", "PA", "P"):
                    notes[f"{x.mode} (palette/alpha: composited on white)"] += 1
                ext = os.path.splitext(x.path)[1].lower().lstrip(".")
                expected = {"jpeg": ("jpg", "jpeg"), "png": ("png",), "gif": ("gif",), "bmp": ("bmp",),
                            "webp": ("webp",), "tiff": ("tif", "tiff")}.get(x.format.lower())
                if expected and ext not in expected:
                    notes[f"{x.format} files with a .{ext} extension (read by content)"] += 1
            info["notes"] = dict(notes)
            # Classes whose files are all unreadable (an empty class folder is listed already).
            empty = [c for i, (c, n) in enumerate(info["per_class"].items()) if n == 0 and np.any(ex.labels == i)]
            report["problems"] += [[c, "class has no readable images"] for c in empty if split == "train"]
        else:
            info["shards"] = len(ex.shards)
        report["splits"][split] = info
    return report
