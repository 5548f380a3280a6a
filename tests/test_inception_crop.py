"""Inception-style patch sampling (Szegedy et al. 2015, sec. 6): 8%-100% of the area, aspect 3/4-4/3,
drawn as a function of (seed, epoch, position)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnctl.config import DataConfig
from cnnctl.config import load as load_config
from cnnctl.data import inception_crop
from cnnctl.data.pipeline import DataModule, InputSpec, resize_uint8
from cnnctl.errors import CnnctlError


def _boxes(h, w, n, seed=(3, 4), **kw):
    return inception_crop.sample_boxes(tf.fill([n], h), tf.fill([n], w), tf.constant(seed, tf.int64), **kw).numpy()


def test_patches_cover_8_to_100_percent_of_the_area_with_aspect_between_3_4_and_4_3():
    h = w = 400
    y0, x0, ph, pw = _boxes(h, w, 20_000).T
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + ph <= h).all() and (x0 + pw <= w).all()
    area = ph * pw / (h * w)
    ratio = pw / ph
    # Rounding the sides to whole pixels moves the area and the ratio by well under 1% at 400 px.
    assert area.min() >= 0.08 * 0.99 and area.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.99 and ratio.max() <= 4 / 3 * 1.01
    # Spread over the whole ranges, not a fixed patch or a narrow band. (Uniform area would put the
    # quantiles at 0.17 and 0.91; large patches at extreme ratios do not fit, thinning the top.)
    assert np.quantile(area, 0.1) < 0.2 and np.quantile(area, 0.9) > 0.75
    assert ratio.min() < 0.77 and ratio.max() > 1.30
    # Log-uniform aspect on a square image: 3/4 and 4/3 equally likely, median 1 (a draw uniform in
    # the ratio itself would put the median near 1.04).
    assert abs(np.median(ratio) - 1.0) < 0.012
    # Positions spread across the free range: patches are not all centred.
    free = (h - ph).astype(float)
    rel = y0[free > 100] / free[free > 100]
    assert rel.min() < 0.05 and rel.max() > 0.95


def test_an_image_too_long_for_any_patch_gets_the_centre_crop_at_the_nearest_ratio():
    # 10 x 400: a patch of >= 8% (320 px) with aspect <= 4/3 is >= 15.5 px tall, never fits.
    y0, x0, ph, pw = _boxes(10, 400, 5)[0]
    assert (ph, pw) == (10, round(10 * 4 / 3)) and y0 == 0 and x0 == (400 - 13) // 2


def test_the_batch_crop_resizes_exactly_the_drawn_patch():
    h, w, n = 32, 48, 64
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    images = tf.constant(np.broadcast_to((ys * 1000 + xs)[None, ..., None], (n, h, w, 1)).copy())
    seed = tf.constant([5, 6], tf.int64)
    out = inception_crop.crop_batch(images, seed).numpy()
    y0, x0, ph, pw = _boxes(h, w, n, seed=(5, 6)).T
    # Bilinear interpolation of a linear ramp is exact: corners are the patch's corner pixels.
    # (A patch ending on the last row or column ends 1e-6 short of it: 0.03 here.)
    np.testing.assert_allclose(out[:, 0, 0, 0], y0 * 1000 + x0, atol=0.1)
    np.testing.assert_allclose(out[:, -1, -1, 0], (y0 + ph - 1) * 1000 + (x0 + pw - 1), atol=0.1)
    assert out.shape == (n, h, w, 1) and len({(a, b) for a, b in zip(y0, ph)}) > n // 2


def test_a_full_size_crop_of_the_whole_image_is_the_plain_resize():
    img = tf.constant(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    spec = InputSpec(24, 24, 3)
    whole = inception_crop.crop_one(img, spec, tf.constant([1, 2], tf.int64), area=(1.0, 1.0), ratio=(80 / 60, 80 / 60))
    np.testing.assert_array_equal(whole.numpy(), resize_uint8(img, spec).numpy())
    part = inception_crop.crop_one(img, spec, tf.constant([1, 2], tf.int64))
    assert part.shape == (24, 24, 3) and not np.array_equal(part.numpy(), whole.numpy())


def _epochs(dm, *epochs, skip=0):
    return [np.concatenate([x.numpy() for x, _ in dm.train_dataset(e, skip_batches=skip)]) for e in epochs]


def test_in_memory_patches_are_a_function_of_seed_epoch_and_position(make_folder):
    root = make_folder(per_class=10)
    plain = DataModule(DataConfig(path=str(root), val_split=0.0), InputSpec(28, 28, 1), 8, 0, log=lambda m: None)
    dm = DataModule(DataConfig(path=str(root), val_split=0.0, augment=["inception_crop"]), InputSpec(28, 28, 1), 8, 0,
                    log=lambda m: None)
    assert dm.train.kind == "images"
    first, again, later = _epochs(dm, 0, 0, 1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, later)
    assert not np.array_equal(first, _epochs(plain, 0)[0])
    np.testing.assert_array_equal(first[16:], _epochs(dm, 0, skip=2)[0])    # exact resume mid-epoch


def test_full_size_images_are_cropped_before_resizing(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    messages = []
    cfg = DataConfig(path=str(tmp_path), val_split=0.0, resize_short=[20], augment=["inception_crop"])
    dm = DataModule(cfg, InputSpec(16, 16, 3), 4, 1, log=messages.append)
    assert any("Inception patches of the full image (8%-100% of its area, aspect 0.75-1.33)" in m for m in messages)
    first, again, later = _epochs(dm, 0, 0, 1)
    assert first.shape == (8, 16, 16, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, later)
    np.testing.assert_array_equal(first[4:], _epochs(dm, 0, skip=1)[0])


@pytest.mark.parametrize("key, value, needle", [
    ("data.crop_area", "[0.0, 1.0]", "data.crop_area = [0.0, 1.0] is not valid"),
    ("data.crop_area", "[0.5, 0.2]", "data.crop_area = [0.5, 0.2] is not valid"),
    ("data.crop_ratio", "[1.5]", "data.crop_ratio = [1.5] is not valid"),
])
def test_bad_patch_ranges_are_one_message(key, value, needle):
    with pytest.raises(CnnctlError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides=[f"{key}={value}"])


def test_the_inception_recipes_sample_patches():
    for recipe in ("googlenet-imagenet", "bn-inception-imagenet", "inception-v3-imagenet", "inception-v4-imagenet",
                   "inception-resnet-v2-imagenet"):
        cfg = load_config(recipe)
        assert "inception_crop" in cfg.data.augment and cfg.data.resize_short, recipe
        assert cfg.data.crop_area == [0.08, 1.0] and cfg.data.crop_ratio == [0.75, 4 / 3]
