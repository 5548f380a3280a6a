"""Data sources: a path (or nothing) -> ``{"train": Examples, "test": Examples | None}``.

Registered by name; ``auto`` picks one from what the path is. No TensorFlow
here: sources list files or load arrays; ``cnnctl.data.pipeline`` turns them
into ``tf.data.Dataset``s.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np

from cnnctl.data.examples import Examples
from cnnctl.data.idx import read_idx
from cnnctl.data.images import IMAGE_EXTENSIONS, walk_images
from cnnctl.errors import CnnctlError
from cnnctl.registry import Registry

SOURCES = Registry("data source")
BUNDLED = Path(__file__).resolve().parent / "bundled"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
KERAS_DATASETS = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"

Splits = dict  # {"train": Examples, "test": Examples | None}


def _idx_pair(folder: Path, prefix: str, classes: list[str]) -> Examples:
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int32)
    if images.ndim != 3 or len(images) != len(labels):
        raise CnnctlError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return Examples(class_names=classes, labels=labels, images=images[..., None].astype(np.uint8))


@SOURCES.register("fashion_mnist", bundled=True,
                  about="Fashion-MNIST, 60k train / 10k test, 28x28 grey, 10 classes (bundled, MIT)")
def fashion_mnist(path: str = "") -> Splits:
    """The bundled Fashion-MNIST (or a folder holding its four idx.gz files)."""
    folder = Path(path) if path else BUNDLED / "fashion_mnist"
    return {"train": _idx_pair(folder, "train", FASHION_CLASSES),
            "test": _idx_pair(folder, "t10k", FASHION_CLASSES)}


@SOURCES.register("mnist", about="MNIST from keras' cache ~/.keras/datasets/mnist.npz (any .npz of x_train, "
                                  "y_train, x_test, y_test and optional class_names)")
def mnist(path: str = "") -> Splits:
    p = Path(path) if path else KERAS_DATASETS / "mnist.npz"
    if not p.is_file():
        raise CnnctlError(f"MNIST cache {p} not found",
                          hint="copy mnist.npz there (keras.datasets.mnist.load_data() writes it when online)")
    try:
        with np.load(p, allow_pickle=False) as z:
            xtr, ytr, xte, yte = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
            names = [str(n) for n in z["class_names"]] if "class_names" in z.files else [str(i) for i in range(10)]
    except (OSError, KeyError, ValueError) as e:
        raise CnnctlError(f"{p} is not a valid mnist.npz: {e}") from None
    if xtr.ndim != 3 or xte.ndim != 3 or len(xtr) != len(ytr) or len(xte) != len(yte):
        raise CnnctlError(f"{p}: x_train/x_test must be (n, h, w) images with one label each")
    top = int(max(ytr.max(initial=0), yte.max(initial=0)))
    if top >= len(names) or min(ytr.min(initial=0), yte.min(initial=0)) < 0:
        raise CnnctlError(f"{p}: labels must lie in 0..{len(names) - 1} (the classes), found {top}")
    return {"train": Examples(names, ytr.astype(np.int32), images=xtr[..., None].astype(np.uint8)),
            "test": Examples(names, yte.astype(np.int32), images=xte[..., None].astype(np.uint8))}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: no other class can be built (no code runs)."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy", "ndarray"), ("numpy", "dtype")})

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return data, np.asarray(d[b"labels"], dtype=np.int32)
    except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
        raise CnnctlError(f"{path} is not a CIFAR-10 python batch: {e}") from None


@SOURCES.register("cifar10", about="CIFAR-10 from keras' cache ~/.keras/datasets/cifar-10-batches-py")
def cifar10(path: str = "") -> Splits:
    folder = Path(path) if path else KERAS_DATASETS / "cifar-10-batches-py"
    if not (folder / "data_batch_1").is_file():
        raise CnnctlError(f"CIFAR-10 batches not found in {folder}",
                          hint="extract cifar-10-python.tar.gz there (the python version of CIFAR-10)")
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = _cifar_batch(folder / "test_batch")
    return {"train": Examples(CIFAR10_CLASSES, np.concatenate([p[1] for p in parts]),
                              images=np.concatenate([p[0] for p in parts])),
            "test": Examples(CIFAR10_CLASSES, yte, images=xte)}


def _class_folder(root: Path, class_names: list[str] | None = None, split: str = "train") -> Examples:
    """root/<class>/**/image -> Examples(paths); classes sorted by name."""
    if not root.is_dir():
        raise CnnctlError(f"{root} is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    names = class_names or [d.name for d in subdirs]
    if class_names is None and not subdirs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = ("put the images in one sub-folder per class: DIR/<class>/<image>"
                if loose else "point --data at a folder of class sub-folders")
        raise CnnctlError(f"{root} has no class sub-folders", hint=hint)
    paths, labels, problems, skipped = [], [], [], []
    for d in subdirs:
        if d.name not in names:
            raise CnnctlError(f"{d} is a class the training split does not have",
                              hint="the class folders of train/ and test/ must match: " + ", ".join(names))
        files, passed_over = walk_images(d)
        skipped += passed_over
        if not files:  # stops training only in the training split; a test split just lacks the class
            (problems if split == "train" else skipped).append((str(d), "empty class folder: no images"))
        paths += files
        labels += [names.index(d.name)] * len(files)
    ex = Examples(names, np.asarray(labels, dtype=np.int32), paths=paths)
    ex.problems, ex.skipped = problems, skipped
    return ex


@SOURCES.register("folder", about="DIR/<class>/<image> (or DIR/train/<class> + DIR/test/<class>); JPEG/PNG/BMP/GIF/WebP/TIFF")
def folder(path: str) -> Splits:
    root = Path(path)
    if (root / "train").is_dir():
        train = _class_folder(root / "train")
        test_dir = next((root / n for n in ("test", "val", "validation") if (root / n).is_dir()), None)
        test = _class_folder(test_dir, train.class_names, split="test") if test_dir else None
    else:
        train, test = _class_folder(root), None
    return {"train": train, "test": test}


@SOURCES.register("distorted", about="distorted:R|RTS|P|E|cluttered: bundled Fashion-MNIST distorted as in the "
                                      "Spatial Transformer paper's experiments (sec. 4.1), seeded")
def distorted(path: str) -> Splits:
    from cnnctl.data.distort import distort, parse_kind

    kind = parse_kind(path or "")
    base = fashion_mnist("")
    cache = _cache_root() / "distorted" / f"fashion_mnist-{kind}-v1.npz"
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("train", "test")}
        except (OSError, KeyError, ValueError):
            arrays = None  # a broken cache is made again
    if arrays is None or any(len(arrays[s]) != base[s].count for s in ("train", "test")):
        arrays = {split: distort(base[split].images[..., 0], kind, seed)
                  for split, seed in (("train", 0), ("test", 1))}
        from cnnctl.files import atomic_write_npz

        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_npz(cache, arrays)
        except (OSError, CnnctlError):
            pass  # read-only cache: generated again next time (deterministic either way)
    return {split: Examples(base[split].class_names, base[split].labels, images=arrays[split][..., None])
            for split in ("train", "test")}


def _cache_root() -> Path:
    import os

    return Path(os.environ.get("CNNCTL_CACHE") or Path.home() / ".cache" / "cnnctl")


@SOURCES.register("csv", about="a CSV file with columns path,label (paths relative to the CSV)")
def csv_source(path: str) -> Splits:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CnnctlError(f"cannot read CSV {p}: {e}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise CnnctlError(f"CSV {p} is empty", hint="write a header line 'path,label' and one row per image")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise CnnctlError(f"CSV {p} needs columns 'path' and 'label'; its header is {rows[0]}",
                          hint="first line: path,label")
    ip, il = header.index("path"), header.index("label")
    isplit = header.index("split") if "split" in header else None
    entries, skipped, seen = [], [], set()
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(ip, il):
            skipped.append((f"{p}:{n}", "row has missing columns: skipped"))
            continue
        rel, label = row[ip].strip(), row[il].strip()
        split = row[isplit].strip().lower() if isplit is not None and len(row) > isplit else "train"
        if not rel or not label:
            skipped.append((f"{p}:{n}", "empty path or label: skipped"))
            continue
        full = str(p.parent / rel) if not os.path.isabs(rel) else rel
        if (full, label) in seen:
            skipped.append((f"{p}:{n}", f"duplicate row {rel},{label}: skipped"))
            continue
        seen.add((full, label))
        entries.append((full, label, split))
    if not entries:
        raise CnnctlError(f"CSV {p} has no usable rows")
    names = sorted({e[1] for e in entries})

    def make(split_names):
        sel = [e for e in entries if e[2] in split_names]
        ex = Examples(names, np.asarray([names.index(e[1]) for e in sel], dtype=np.int32),
                      paths=[e[0] for e in sel])
        return ex

    train = make({"train", ""})
    test = make({"test", "val", "validation"})
    train.skipped = skipped
    unknown = {e[2] for e in entries} - {"train", "", "test", "val", "validation"}
    if unknown:
        raise CnnctlError(f"CSV {p}: unknown split value(s) {sorted(unknown)}", hint="use train or test")
    missing = [e[0] for e in entries if not os.path.exists(e[0])]
    train.problems += [(m, "file listed in the CSV does not exist") for m in missing]
    return {"train": train, "test": test if test.count else None}


@SOURCES.register("tfrecord", about="a folder written by `cnnctl data convert` (train-*.tfrecord, test-*.tfrecord, classes.json)")
def tfrecord(path: str) -> Splits:
    root = Path(path)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise CnnctlError(f"{root} has no dataset.json", hint="write TFRecords with `cnnctl data convert SRC OUT`")
    try:
        meta = json.loads(meta_path.read_text())
        names = list(meta["classes"])
    except (OSError, ValueError, KeyError) as e:
        raise CnnctlError(f"{meta_path} is not a cnnctl dataset description: {e}") from None
    splits = {}
    for split in ("train", "test"):
        shards = sorted(str(s) for s in root.glob(f"{split}-*.tfrecord"))
        if shards:
            splits[split] = Examples(names, np.zeros(0, np.int32), shards=shards,
                                     count=int(meta.get("counts", {}).get(split, 0)))
    if "train" not in splits:
        raise CnnctlError(f"{root} holds no train-*.tfrecord shards")
    return {"train": splits["train"], "test": splits.get("test")}


def detect(path: str) -> str:
    """The source name for ``path``: '' -> bundled Fashion-MNIST."""
    if not path:
        return "fashion_mnist"
    if path.lower().startswith("distorted:"):
        return "distorted"
    p = Path(path)
    if not p.exists():
        raise CnnctlError(f"data path {path!r} does not exist",
                          hint="give a class folder, a CSV file, a TFRecord folder, or omit --data for Fashion-MNIST")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "csv"
        if p.name.endswith(".npz"):
            return "mnist"
        raise CnnctlError(f"{path} is a file cnnctl cannot read as a data set",
                          hint="use a class folder, a .csv of path,label, or a TFRecord folder")
    if (p / "dataset.json").is_file():
        return "tfrecord"
    if (p / "data_batch_1").is_file():
        return "cifar10"
    if (p / "train-images-idx3-ubyte.gz").is_file():
        return "fashion_mnist"
    return "folder"


def load_source(source: str, path: str) -> tuple[str, Splits]:
    """Resolve ``auto`` and call the source -> (name, splits)."""
    name = detect(path) if source == "auto" else source
    entry = SOURCES.get(name)
    if not path and name in ("folder", "csv", "tfrecord"):
        raise CnnctlError(f"the {name} data source needs a path",
                          hint="pass --data PATH (an ImageNet-style folder: DIR/train/<class>, DIR/val/<class>)")
    if path and name != "distorted" and not Path(path).exists():
        raise CnnctlError(f"data path {path!r} does not exist")
    return name, entry.fn(path)
