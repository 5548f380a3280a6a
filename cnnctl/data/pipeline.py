"""Examples -> ``tf.data.Dataset`` of ``(images float32 (b, h, w, c) in [0, 255], one-hot targets (b, k))``.

Stages are small functions [Model Garden Decoder/Parser; fastai item vs batch
transforms]: order (a permutation that is a function of seed and epoch) ->
decode (parallel, order kept) -> batch -> batch transforms
(channels, size, augmentation with stateless seeds) -> prefetch.

Because the order and every random draw are functions of (seed, epoch,
batch index), the data of epoch e from batch k on is the same whether a run
started there or resumed there.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from dataclasses import dataclass

import numpy as np

from cnnctl.config import DataConfig
from cnnctl.data import inception_crop
from cnnctl.data.examples import Examples, stratified_split
from cnnctl.data.images import ImageError, inspect_image, load_image
from cnnctl.data.sources import load_source
from cnnctl.errors import CnnctlError

TF_DECODABLE = {"JPEG", "PNG", "BMP", "GIF"}
PARALLEL_CALLS = max(2, os.cpu_count() or 2)  # fixed, not AUTOTUNE: see DataModule._dataset
PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class InputSpec:
    """What the model wants: height, width, channels."""

    height: int
    width: int
    channels: int

    @classmethod
    def from_shape(cls, shape) -> InputSpec:
        h, w, c = (int(s) for s in shape)
        return cls(h, w, c)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, 0xDA7A]).permutation(n)


def _check_files(paths: list[str], full: bool) -> tuple[list[str | None], np.ndarray]:
    """Read every file's header (or all its pixels) in threads -> (problem or None, needs_pillow flags)."""
    def one(p):
        try:
            info = inspect_image(p, full=full)
        except ImageError as e:
            return str(e), False
        needs_pil = (info.format not in TF_DECODABLE or info.mode not in ("L", "RGB", "RGBA", "P", "LA")
                     or info.exif_rotated)
        return None, needs_pil

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(one, paths, chunksize=64))
    return [r[0] for r in results], np.array([r[1] for r in results], dtype=bool)


def _decode_all(paths: list[str], spec: InputSpec) -> tuple[np.ndarray, list[str | None]]:
    """Decode every file with Pillow (threads) into uint8 ``(n, h, w, c)``; problems per file."""
    out = np.zeros((len(paths), spec.height, spec.width, spec.channels), dtype=np.uint8)
    problems: list[str | None] = [None] * len(paths)

    def one(i):
        try:
            out[i] = load_image(paths[i], spec.channels, (spec.height, spec.width))
        except ImageError as e:
            problems[i] = str(e)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(one, range(len(paths)), chunksize=32))
    return out, problems


def rgb_pca(images: np.ndarray, max_pixels: int = 2_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (3,) and eigenvectors (3, 3, columns) of the RGB covariance of ``images`` scaled to [0, 1].

    Krizhevsky et al. 2012, sec. 4.1: "PCA on the set of RGB pixel values
    throughout the ImageNet training set". A seeded sample of at most
    ``max_pixels`` pixels is used.
    """
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    if len(pixels) > max_pixels:
        pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)]
    eigvals, eigvecs = np.linalg.eigh(np.cov(pixels, rowvar=False))
    order = np.argsort(eigvals)[::-1]
    return eigvals[order].astype(np.float32), eigvecs[:, order].astype(np.float32)


def pca_color_shift(x, eigvals, eigvecs, alpha):
    """AlexNet colour augmentation on float images in [0, 255] (b, h, w, 3).

    Each image gets ``[p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T`` (in [0, 1] units, times 255) added to
    every pixel, with ``alpha`` (b, 3) drawn from N(0, sigma): intensity and colour of the
    illumination change, the image's structure does not.
    """
    import tensorflow as tf

    shift = tf.linalg.matvec(tf.constant(eigvecs)[None], alpha * tf.constant(eigvals)[None])  # (b, 3)
    return x + 255.0 * shift[:, None, None, :]


def resize_uint8(img, spec: InputSpec):
    """uint8 (h, w, c) -> uint8 (spec.height, spec.width, c).

    Shrinking uses area averaging (anti-aliased, and twice as fast here as
    bilinear with ``antialias=True``); enlarging uses bilinear interpolation.
    """
    import tensorflow as tf

    size = (spec.height, spec.width)
    shape = tf.shape(img)
    shrink = tf.logical_and(shape[0] >= spec.height, shape[1] >= spec.width)
    out = tf.cond(shrink, lambda: tf.image.resize(img, size, method="area"),
                  lambda: tf.image.resize(img, size, method="bilinear"))
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def resize_short_side(img, short):
    """uint8 (h, w, c) -> uint8 image whose shorter side is ``short`` (int32 scalar), aspect kept."""
    import tensorflow as tf

    shape = tf.shape(img)
    h, w = shape[0], shape[1]
    short = tf.cast(short, tf.int32)
    scale = tf.cast(short, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
    nh = tf.where(h <= w, short, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
    nw = tf.where(h <= w, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32), short)
    out = tf.cond(scale < 1.0, lambda: tf.image.resize(img, (nh, nw), method="area"),
                  lambda: tf.image.resize(img, (nh, nw), method="bilinear"))
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def scale_and_crop(img, spec: InputSpec, short_range: tuple[int, int] | None, seed=None):
    """The ImageNet training/eval crop of one full-size uint8 image -> uint8 (spec.height, spec.width, c).

    Training (``seed`` given): shorter side to S drawn uniformly from ``short_range`` (both ends
    included; Simonyan & Zisserman 2015 sec. 3.1 scale jittering, Krizhevsky et al. 2012 sec. 4.1
    with S = 256), then a random crop. Evaluation (``seed`` None): shorter side to
    ``short_range[0]``, centre crop.
    """
    import tensorflow as tf

    lo, hi = short_range
    if seed is None:
        img = resize_short_side(img, lo)
        return tf.image.resize_with_crop_or_pad(img, spec.height, spec.width)
    s = tf.random.stateless_uniform((), seed, lo, hi + 1, dtype=tf.int32)
    img = resize_short_side(img, s)
    return tf.image.stateless_random_crop(img, (spec.height, spec.width, spec.channels), seed + [0, 1])


def shard_by_example(ds):
    """``ds`` with AutoShardPolicy.DATA: under MultiWorkerMirroredStrategy every worker builds the
    same global batches (their order is a function of seed and epoch) and keeps its slice of each.

    TensorFlow's AUTO policy would shard TFRecord sources by file instead: each worker would then
    batch different examples in a different order, and neither the steps of a one-process run nor
    an exact resume would be kept.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def splits_without_empty_replica(n: int, replicas: int) -> bool:
    """Whether a batch of ``n`` reaches every one of ``replicas`` replicas: a strategy gives each
    replica ceil(n / replicas) examples until they run out, so 5 on 4 replicas is 2, 2, 1, 0."""
    q, s = divmod(n, replicas)
    return n > 0 and (s == 0 or q + s >= replicas)


def tail_cut(n: int, replicas: int) -> list[int] | None:
    """Sizes to cut the last ``n`` examples of a split into: the first a multiple of ``replicas``,
    each reaching every replica; None when no cut does (n too small)."""
    if n % replicas == 0:
        return [n]
    for first in range(n - n % replicas, 0, -replicas):
        if splits_without_empty_replica(n - first, replicas):
            return [first, n - first]
    return None


def no_empty_replica(ds, replicas: int):
    """Evaluation batches ``ds`` re-cut so that a ``replicas``-way strategy can evaluate them; the
    examples, their order and every per-example mean are unchanged.

    Two things break ``model.evaluate`` under a distribution strategy in Keras 3.15 / TF 2.21:
    - a strategy gives each replica ceil(n / replicas) examples of a batch of n until they run out,
      so a short last batch (1 on 2 replicas; 5 on 4) leaves a replica with 0, and oneDNN's Conv2D
      answers an empty batch with its *input's* shape ((0, h, w, c_in), not c_out): the next bias
      add or batch norm fails with "Incompatible shapes" (oneDNN is on by default on CPUs with
      AVX-512 VNNI/BF16);
    - Keras builds the model from the mean over replicas of the *first* batch's slices, which fails
      ("AddN ... must have the same size") unless that batch divides evenly.
    Full batches (multiples of ``replicas``: the engine checks) pass through as they come. A short
    last batch and the batches held back with it (fewer than replicas^2 examples, so a cut exists
    unless the split is that small) are cut again: first a multiple of ``replicas``, then the rest.
    A split too small for any cut is repeated whole ``replicas`` times (every example the same
    number of times, so losses and accuracies averaged over examples are those of the split).
    """
    import collections

    import tensorflow as tf

    specs = tf.nest.flatten(ds.element_spec)
    if replicas <= 1 or not all(isinstance(s, tf.TensorSpec) and s.shape.rank for s in specs):
        return ds

    def count(batch) -> int:
        return int(tf.shape(tf.nest.flatten(batch)[0])[0])

    def joined(batches):
        return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)

    def batches():
        held, total = collections.deque(), 0
        for batch in ds:
            held.append((batch, count(batch)))
            total += held[-1][1]
            while total - held[0][1] >= replicas * replicas:
                total -= held[0][1]
                yield held.popleft()[0]
        if not held:
            return
        if held[-1][1] % replicas == 0:
            yield from (b for b, _ in held)
            return
        tail = joined([b for b, _ in held])
        sizes = tail_cut(total, replicas)
        if sizes is None:
            yield joined([tail] * replicas)
            return
        start = 0
        for size in sizes:
            yield tf.nest.map_structure(lambda t, a=start, z=size: t[a:a + z], tail)
            start += size

    relaxed = tf.nest.map_structure(lambda s: tf.TensorSpec((None, *s.shape[1:]), s.dtype), ds.element_spec)
    return shard_by_example(tf.data.Dataset.from_generator(batches, output_signature=relaxed))


def _finish(ds):
    """Deterministic order, data sharding across workers, no autotuning, prefetch."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # No autotuning: tf.data's autotune thread (model::Model::OptimizeLoop) sleeps in a timed
    # wait that iterator teardown cannot interrupt, so fit() stalled up to ~20 s with both cores
    # idle at the end of some epochs (seen with gdb in TF 2.21). Fixed parallelism instead.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


class DataModule:
    """Train / validation / test splits of one data set, ready to feed a model of input ``spec``.

    Args:
        cfg: the recipe's [data] section.
        spec: the model's input (height, width, channels); images are converted to it.
        batch_size: the global batch size.
        seed: decides the validation split, the order of every epoch and augmentation.
        log: a callable taking one line of text (what was converted or skipped).
    """

    def __init__(self, cfg: DataConfig, spec: InputSpec, batch_size: int, seed: int, log=print):
        self.cfg, self.spec, self.batch_size, self.seed, self.log = cfg, spec, batch_size, seed, log
        self.source, splits = load_source(cfg.source, cfg.path)
        train, test = splits["train"], splits.get("test")
        self.class_names = list(train.class_names)
        self.num_classes = len(self.class_names)
        if self.num_classes < 2:
            raise CnnctlError(f"the data at {cfg.path or self.source!r} has {self.num_classes} class(es)",
                              hint="a classifier needs at least two classes (one sub-folder per class)")
        self.problems: list[tuple[str, str]] = list(train.problems) + (list(test.problems) if test else [])
        skipped = len(train.skipped) + (len(test.skipped) if test else 0)
        if skipped:
            self.log(f"passed over {skipped} file(s) that are not images or not reachable "
                     "(`cnnctl data inspect PATH` lists them)")
        train = self._materialize(train, "train")
        if train.kind != "shards":
            empty = [n for i, n in enumerate(self.class_names) if not np.any(train.labels == i)]
            if empty:
                raise CnnctlError(f"class(es) with no usable training images: {', '.join(empty)}",
                                  hint="add images to those class folders or remove the folders")
        test = self._materialize(test, "test") if test is not None else None
        if train.kind != "shards" and cfg.val_split > 0:
            keep, held = stratified_split(train.labels, cfg.val_split, seed)
            self.val, self.train = train.subset(held), train.subset(keep)
        else:
            self.train, self.val = train, None
        if test is None and self.val is not None:
            self.log("no test split in the data: the validation split is used as the test set")
        self.test = test if test is not None else self.val
        if self.val is None and test is not None and train.kind == "shards":
            self.val = test
        if cfg.resize_short:
            self._check_resize_short()
        self.pca = None
        if "vflip" in cfg.augment or "elastic" in cfg.augment:
            raise CnnctlError("data.augment: vflip and elastic are segmentation augmentations",
                              hint="classification takes flip, crop, mixup and pca_color")
        if "pca_color" in cfg.augment:
            self.pca = self._fit_pca()
        if self.train.count == 0:
            raise CnnctlError("the training split is empty after removing unusable files",
                              hint="run `cnnctl data inspect PATH` to see what is wrong with the files")

    # ------------------------------------------------------------------ file checking / caching
    def _materialize(self, ex: Examples, split: str) -> Examples:
        if ex.kind != "paths":
            return ex
        n = len(ex.paths)
        need = n * self.spec.height * self.spec.width * self.spec.channels
        cache = self.cfg.cache and need <= self.cfg.cache_limit_gb * 2**30 and not self.cfg.resize_short
        if cache:
            images, problems = _decode_all(ex.paths, self.spec)
            needs_pil = None
        else:
            # Full decode once: a truncated JPEG passes a header check but would stop TF mid-epoch.
            problems, needs_pil = _check_files(ex.paths, full=True)
        bad = [(p, why) for p, why in zip(ex.paths, problems) if why]
        if bad:
            self.problems += bad
            if not self.cfg.skip_bad:
                shown = "\n".join(f"  {p}: {why}" for p, why in bad[:10])
                more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
                raise CnnctlError(
                    f"{len(bad)} unusable image file(s) in the {split} split:\n{shown}{more}",
                    hint="fix or remove them, or pass --skip-bad to train without them "
                         "(`cnnctl data inspect PATH` lists every problem)")
            self.log(f"skipped {len(bad)} unusable file(s) in the {split} split (--skip-bad)")
        ok = np.array([why is None for why in problems], dtype=bool)
        index = np.flatnonzero(ok)
        if cache:
            self.log(f"decoded {len(index)} {split} images into memory "
                     f"({need / 2**20:.0f} MiB, {self.spec.height}x{self.spec.width}x{self.spec.channels})")
            return Examples(ex.class_names, ex.labels[index], images=images[index])
        ex.needs_pil = needs_pil
        out = ex.subset(index)
        converted = int(out.needs_pil.sum())
        if converted:
            self.log(f"{converted} {split} file(s) need Pillow (EXIF rotation, CMYK, 16-bit or other formats): converted on the fly")
        return out

    def _check_resize_short(self):
        kinds = {ex.kind for ex in (self.train, self.val, self.test) if ex is not None}
        if "images" in kinds:
            raise CnnctlError(f"data.resize_short needs image files; {self.source} is decoded into memory at "
                              "the model's size", hint="drop data.resize_short, or train from a folder, CSV or "
                              "TFRecords of full-size images (`cnnctl data convert`)")
        side = max(self.spec.height, self.spec.width)
        short = [*self.cfg.resize_short, self.eval_short]
        if min(short) < side:
            raise CnnctlError(f"data.resize_short {self.cfg.resize_short} (evaluation {self.eval_short}) is smaller "
                              f"than the model's {self.spec.height}x{self.spec.width} crop",
                              hint=f"use sizes >= {side}, e.g. [{round(side * 256 / 224)}]")
        what = ("scale jittering S in [{}, {}]".format(*self.cfg.resize_short) if len(self.cfg.resize_short) == 2
                else f"shorter side {self.cfg.resize_short[0]}")
        crops = f"{what}, random {self.spec.height}x{self.spec.width} crops"
        if "inception_crop" in self.cfg.augment:
            (a0, a1), (r0, r1) = self.cfg.crop_area, self.cfg.crop_ratio
            crops = (f"Inception patches of the full image ({a0:.0%}-{a1:.0%} of its area, aspect {r0:.2f}-{r1:.2f}) "
                     f"resized to {self.spec.height}x{self.spec.width}")
        self.log(f"training crops: {crops}; evaluation: shorter side {self.eval_short}, centre crop")

    @property
    def eval_short(self) -> int:
        from cnnctl.data.resize import eval_short_side

        return eval_short_side(self.cfg)

    def _fit_pca(self):
        if self.spec.channels != 3:
            self.log("pca_color needs RGB input: skipped for this 1-channel model")
            return None
        ex = self.train
        if ex.kind == "images":
            sample = ex.images[np.random.default_rng(self.seed).permutation(ex.count)[:4000]]
            if sample.shape[-1] == 1:
                self.log("pca_color on grey images has only an intensity component")
                sample = np.repeat(sample, 3, axis=-1)
        elif ex.kind == "paths":
            pick = np.random.default_rng(self.seed).permutation(ex.count)[:500]
            sample = np.stack([load_image(ex.paths[i], 3, (64, 64)) for i in pick])
        else:
            raise CnnctlError("pca_color is not available for TFRecord data yet",
                              hint="train from the image folder, or drop pca_color from data.augment")
        eigvals, eigvecs = rgb_pca(sample, seed=self.seed)
        self.log(f"RGB PCA for colour augmentation: eigenvalues {np.round(eigvals, 4).tolist()}")
        return eigvals, eigvecs

    def describe(self) -> str:
        """The split sizes and classes, for the line the engine prints before training."""
        val = self.val.count if self.val else 0
        test = self.test.count if self.test else 0
        return f"{self.train.count} train / {val} val / {test} test images, {self.num_classes} classes"

    # ------------------------------------------------------------------ sizes
    def steps(self, split: str = "train") -> int:
        ex = getattr(self, split)
        return 0 if ex is None else math.ceil(ex.count / self.batch_size)

    # ------------------------------------------------------------------ datasets
    def train_dataset(self, epoch: int, skip_batches: int = 0, augment: bool = True):
        """Batches of epoch ``epoch`` in their seeded order, starting at batch ``skip_batches``."""
        return self._dataset(self.train, order_key=epoch, skip=skip_batches, augment=augment)

    def eval_dataset(self, split: str = "val", short_side: int = 0):
        """Batches of ``split`` in file order without augmentation.

        With ``short_side`` > 0, batches of one image each, resized so that its shorter side is
        ``short_side`` with the aspect ratio kept (images held in memory at the model's size are
        square): the input of multi-crop evaluation.
        """
        ex = getattr(self, split)
        if ex is None:
            return None
        if short_side:
            return self._full_size_dataset(ex, short_side)
        return self._dataset(ex, order_key=None, skip=0, augment=False)

    def _full_size_dataset(self, ex: Examples, short_side: int):
        import tensorflow as tf

        spec, k = self.spec, self.num_classes
        if ex.kind == "images":
            images, labels = self._tensors(ex)
            ds = tf.data.Dataset.from_tensor_slices((images, labels))
        elif ex.kind == "paths":
            read = self._reader(bool(ex.needs_pil is not None and ex.needs_pil.any()), full=True)
            flags = ex.needs_pil if ex.needs_pil is not None else np.zeros(ex.count, bool)
            ds = tf.data.Dataset.from_tensor_slices((np.asarray(ex.paths, dtype=str), ex.labels, flags))
            ds = ds.map(lambda path, label, flag: (read(path, flag), label), num_parallel_calls=PARALLEL_CALLS,
                        deterministic=True)
        else:
            ds = self._shard_dataset(ex, None, full=True)

        def fit(img, label):  # uint8 (h, w, c) -> float32 (1, h', w', spec.channels)
            if img.shape[-1] != spec.channels:
                img = tf.image.grayscale_to_rgb(img) if img.shape[-1] == 1 else tf.image.rgb_to_grayscale(img)
            x = tf.cast(resize_short_side(img, short_side), tf.float32)
            return x[None], tf.one_hot(label, k)[None]

        return _finish(ds.map(fit, num_parallel_calls=PARALLEL_CALLS, deterministic=True))

    def _dataset(self, ex: Examples, order_key: int | None, skip: int, augment: bool):
        import tensorflow as tf

        b = self.batch_size
        order = (epoch_permutation(ex.count, self.seed, order_key) if order_key is not None and ex.kind != "shards"
                 else np.arange(ex.count))
        first = skip
        if ex.kind == "images":
            # Pure TF (no from_generator: its Python thread made iterator teardown stall ~20 s at
            # epoch ends on this CPU). Images stay one tensor; each batch gathers its indices.
            images, labels = self._tensors(ex)
            perm = tf.constant(order, dtype=tf.int32)
            n = ex.count

            def gather(i):
                idx = perm[i * b:tf.minimum((i + 1) * b, n)]
                return i, tf.gather(images, idx), tf.gather(labels, idx)

            ds = tf.data.Dataset.range(first, math.ceil(n / b)).map(gather)
        elif ex.kind == "paths":
            paths = np.asarray(ex.paths, dtype=object)[order]
            flags = (ex.needs_pil if ex.needs_pil is not None else np.zeros(ex.count, bool))[order]
            ds = tf.data.Dataset.from_tensor_slices((np.arange(ex.count), paths.astype(str), ex.labels[order], flags))
            ds = ds.skip(first * b)
            decode = self._decode_fn(bool(flags.any()), epoch=order_key if augment else None)
            ds = ds.map(decode, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
            ds = ds.batch(b)
            ds = tf.data.Dataset.zip(tf.data.Dataset.range(first, 1 << 62), ds).map(
                lambda i, xy: (i, xy[0], xy[1]))
        else:
            ds = self._shard_dataset(ex, order_key, crop_epoch=order_key if augment else None)
            ds = ds.batch(b)
            ds = tf.data.Dataset.zip(tf.data.Dataset.range(0, 1 << 62), ds).map(
                lambda i, xy: (i, xy[0], xy[1]))
            ds = ds.skip(first)
        epoch = -1 if order_key is None else order_key
        if ex.kind != "shards":  # known length: Keras shows steps and does not warn at the end
            ds = ds.apply(tf.data.experimental.assert_cardinality(max(0, math.ceil(ex.count / b) - first)))
        ds = ds.map(self._batch_fn(epoch, augment), num_parallel_calls=PARALLEL_CALLS, deterministic=True)
        return _finish(ds)

    def _tensors(self, ex: Examples):
        """The in-memory arrays of ``ex`` as tensors, converted once."""
        import tensorflow as tf

        cache = self.__dict__.setdefault("_tensor_cache", {})
        if id(ex) not in cache:
            cache[id(ex)] = (tf.convert_to_tensor(ex.images), tf.convert_to_tensor(ex.labels))
        return cache[id(ex)]

    def _reader(self, any_pil: bool, full: bool):
        """(path, needs_pil) -> uint8 (h, w, c): the whole image (``full``) or resized to the model's size."""
        import tensorflow as tf

        spec = self.spec
        size = None if full else (spec.height, spec.width)

        def pil_decode(path):
            return load_image(path.decode("utf-8") if isinstance(path, bytes) else str(path), spec.channels, size)

        def with_tf(path):
            img = tf.io.decode_image(tf.io.read_file(path), channels=spec.channels, expand_animations=False)
            return img if full else resize_uint8(img, spec)

        def with_pil(path):
            img = tf.numpy_function(pil_decode, [path], tf.uint8, stateful=False)
            return tf.ensure_shape(img, (None, None, spec.channels) if full else (spec.height, spec.width, spec.channels))

        def read(path, needs_pil):
            if not any_pil:  # the common case: no per-image branch at all
                return with_tf(path)
            return tf.cond(needs_pil, lambda: with_pil(path), lambda: with_tf(path))

        return read

    def _decode_fn(self, any_pil: bool = True, epoch: int | None = None):
        """(position, path, label, needs_pil) -> (uint8 (h, w, c) at the model's size, label).

        Without ``data.resize_short`` the whole image is resized to the model's size. With it,
        the full-size image is scaled and cropped (random per position when ``epoch`` is given).
        """
        read = self._reader(any_pil, full=bool(self.cfg.resize_short))
        fit = self._crop_fn(epoch)
        return lambda pos, path, label, needs_pil: (fit(read(path, needs_pil), pos), label)

    def _crop_fn(self, epoch: int | None):
        """(uint8 image, position) -> uint8 image at the model's size, per ``data.resize_short``."""
        import tensorflow as tf

        spec, rs = self.spec, self.cfg.resize_short
        if not rs:
            return lambda img, pos: img
        if epoch is None:
            return lambda img, pos: scale_and_crop(img, spec, (self.eval_short, self.eval_short))
        short_range = (int(rs[0]), int(rs[-1]))
        base = int(self.seed) * 1_000_003 + int(epoch)
        patches = "inception_crop" in self.cfg.augment

        def fit(img, pos):
            if patches:       # a patch of the full-size image instead of scale + crop
                seed = tf.stack([tf.constant(base, tf.int64), tf.cast(pos, tf.int64) + inception_crop.INCEPTION_STREAM])
                return inception_crop.crop_one(img, spec, seed, self.cfg.crop_area, self.cfg.crop_ratio)
            seed = tf.stack([tf.constant(base, tf.int64), tf.cast(pos, tf.int64) + (7 << 40)])
            return scale_and_crop(img, spec, short_range, seed)

        return fit

    def _shard_dataset(self, ex: Examples, order_key: int | None, crop_epoch: int | None = None,
                       full: bool = False):
        """Decoded (image, label) pairs of TFRecord shards: at the model's size, cropped per
        ``data.resize_short``, or whole (``full``)."""
        import tensorflow as tf

        spec = self.spec
        shards = list(ex.shards)
        if order_key is not None:
            shards = [shards[i] for i in epoch_permutation(len(shards), self.seed, order_key)]
        ds = tf.data.Dataset.from_tensor_slices(shards)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(shards)),
                           num_parallel_calls=PARALLEL_CALLS, deterministic=True)
        features = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

        fit = self._crop_fn(crop_epoch)
        crop = bool(self.cfg.resize_short)

        def parse(pos, record):
            f = tf.io.parse_single_example(record, features)
            img = tf.io.decode_image(f["image"], channels=spec.channels, expand_animations=False)
            if not full:
                img = fit(img, pos) if crop else resize_uint8(img, spec)
            return img, tf.cast(f["label"], tf.int32)

        if order_key is not None:
            ds = ds.shuffle(10_000, seed=int(epoch_permutation(1 << 16, self.seed, order_key)[0]),
                            reshuffle_each_iteration=False)
        return ds.enumerate().map(parse, num_parallel_calls=PARALLEL_CALLS, deterministic=True)

    def _batch_fn(self, epoch: int, augment: bool):
        """(batch index, uint8 images, int labels) -> (float32 images (b,h,w,c), one-hot (b,k))."""
        import tensorflow as tf

        spec, k, cfg, seed = self.spec, self.num_classes, self.cfg, self.seed
        pca = self.pca
        augs = list(cfg.augment) if augment else []
        patches_here = "inception_crop" in augs and not cfg.resize_short
        from cnnctl.data import geometry

        def fn(i, images, labels):
            x = tf.cast(images, tf.float32)
            c = x.shape[-1]
            if c != spec.channels:
                x = tf.image.grayscale_to_rgb(x) if c == 1 else tf.image.rgb_to_grayscale(x)
                if spec.channels not in (1, 3):
                    raise CnnctlError(f"cannot convert {c}-channel images to {spec.channels} channels")
            if x.shape[1] != spec.height or x.shape[2] != spec.width:
                x = tf.image.resize(x, (spec.height, spec.width), antialias=True)
            y = tf.one_hot(labels, k)
            base = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, i])  # stateless seed per batch
            n = tf.shape(x)[0]
            if patches_here:                       # full-size images get theirs when decoded (_crop_fn)
                x = inception_crop.crop_batch(x, base + [0, inception_crop.INCEPTION_STREAM], cfg.crop_area,
                                              cfg.crop_ratio)
            if "crop" in augs:                     # masks and boxes would move with these (data/geometry.py)
                x, _, _ = geometry.random_translate(x, base, cfg.crop_padding)
            if "flip" in augs:
                x, _, _ = geometry.random_flip(x, base)
            if "pca_color" in augs and pca is not None:
                alpha = tf.random.stateless_normal((n, 3), base + [0, 6 << 40], stddev=cfg.pca_std)
                x = tf.clip_by_value(pca_color_shift(x, *pca, alpha), 0.0, 255.0)
            if "mixup" in augs:
                a = cfg.mixup_alpha
                g1 = tf.random.stateless_gamma((n,), base + [0, 3 << 40], alpha=a)
                g2 = tf.random.stateless_gamma((n,), base + [0, 4 << 40], alpha=a)
                lam = g1 / (g1 + g2 + 1e-12)                           # Beta(a, a) per example
                perm = tf.argsort(tf.random.stateless_uniform((n,), base + [0, 5 << 40]))
                x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * tf.gather(x, perm)
                y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, perm)
            return tf.ensure_shape(x, (None, spec.height, spec.width, spec.channels)), y

        return fn
