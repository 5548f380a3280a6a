"""Sources and the tf.data pipeline on real files the tests write, including broken ones."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from cnnctl.config import DataConfig
from cnnctl.data.examples import stratified_split
from cnnctl.data.images import load_image
from cnnctl.data.inspect import inspect_data
from cnnctl.data.pipeline import DataModule, InputSpec, epoch_permutation
from cnnctl.errors import CnnctlError


def _add_odd_files(root):
    """Files a real folder contains: broken ones and unusual-but-valid ones."""
    bars = root / "bars"
    (bars / "empty.jpg").write_bytes(b"")
    (bars / "notes.jpg").write_text("this is not an image")
    good = io.BytesIO()
    Image.fromarray(np.full((28, 28, 3), 200, np.uint8)).save(good, format="JPEG")
    (bars / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    # Valid files that need conversion:
    Image.fromarray(np.full((30, 20, 4), 120, np.uint8), "RGBA").convert("CMYK").save(bars / "cmyk.jpg")
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) * 80).astype(np.uint16)).save(bars / "deep16.png")
    pal = Image.fromarray(np.zeros((28, 28), np.uint8), "L").convert("P")
    pal.info["transparency"] = 0
    pal.save(bars / "palette.png", transparency=0)
    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (10, 250)]
    frames[0].save(bars / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(bars / "really_png.jpg", format="PNG")
    (bars / ".hidden.png").write_bytes(b"junk")
    nested = bars / "more" / "deeper"
    nested.mkdir(parents=True)
    Image.fromarray(np.full((28, 28), 30, np.uint8)).save(nested / "n.png")
    odd = root / "stripes" / "ünïcode name with space.png"
    Image.fromarray(np.full((28, 28), 40, np.uint8)).save(odd)
    return {"empty.jpg", "notes.jpg", "truncated.jpg"}


def test_folder_lists_unusable_files_and_stops_before_training(make_folder):
    root = make_folder()
    bad = _add_odd_files(root)
    with pytest.raises(CnnctlError) as e:
        DataModule(DataConfig(path=str(root)), InputSpec(28, 28, 1), 8, 0, log=lambda m: None)
    msg = str(e.value)
    assert "3 unusable image file(s)" in msg and "--skip-bad" in msg
    for name in bad:
        assert name in msg


def test_skip_bad_trains_on_the_rest_and_converts_odd_files(make_folder):
    root = make_folder()
    _add_odd_files(root)
    logs = []
    dm = DataModule(DataConfig(path=str(root), skip_bad=True, val_split=0.0), InputSpec(28, 28, 1), 8, 0,
                    log=logs.append)
    # 40 pattern images + cmyk, 16-bit, palette, gif, png-as-jpg, nested, unicode = 47 usable.
    assert dm.train.count == 47
    assert any("skipped 3" in m for m in logs)
    x, y = next(iter(dm.train_dataset(0)))
    assert x.shape == (8, 28, 28, 1) and y.shape == (8, 2)


def test_inspect_reports_every_problem_with_its_path(make_folder):
    root = make_folder()
    _add_odd_files(root)
    (root / "empty_class").mkdir()
    report = inspect_data(str(root))
    problems = {os.path.basename(p): why for p, why in report["problems"]}
    assert "empty.jpg" in problems and "0 bytes" in problems["empty.jpg"]
    assert "truncated" in problems["truncated.jpg"].lower()
    assert "not a readable image" in problems["notes.jpg"]
    assert "empty_class" in problems
    notes = report["splits"]["train"]["notes"]
    assert any("CMYK" in k for k in notes) and any("animated" in k for k in notes)
    assert any(".jpg extension" in k for k in notes)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((10, 20), np.uint8)
    arr[:, :5] = 255                     # bright left edge, landscape 10x20
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6                     # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=100)
    out = load_image(str(p), 1)
    assert out.shape == (20, 10, 1)      # portrait once upright
    assert out[:5, :, 0].mean() > 200    # the bright edge is now at the top


def test_grey_and_rgb_mixed_are_converted_to_the_models_channels(make_folder, tmp_path):
    root = make_folder(per_class=6)
    make_folder(per_class=6, rgb=True, fmt="jpg", root=root)
    dm = DataModule(DataConfig(path=str(root), val_split=0.0), InputSpec(32, 32, 3), 4, 0, log=lambda m: None)
    x, _ = next(iter(dm.train_dataset(0)))
    assert x.shape == (4, 32, 32, 3)


def test_single_class_and_missing_path_are_errors(make_folder, tmp_path):
    root = make_folder(classes=2)
    import shutil

    shutil.rmtree(root / "stripes")
    with pytest.raises(CnnctlError, match="at least two classes"):
        DataModule(DataConfig(path=str(root)), InputSpec(28, 28, 1), 8, 0)
    with pytest.raises(CnnctlError, match="does not exist"):
        DataModule(DataConfig(path=str(tmp_path / "nope")), InputSpec(28, 28, 1), 8, 0)
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(CnnctlError, match="no class sub-folders"):
        DataModule(DataConfig(path=str(tmp_path / "flat")), InputSpec(28, 28, 1), 8, 0)


def test_symlink_loop_is_reported_not_followed(make_folder):
    root = make_folder()
    os.symlink(root / "bars", root / "bars" / "loop")
    report = inspect_data(str(root))
    assert any("symlink loop" in why for _, why in report["skipped"])
    assert not report["problems"]  # the loop is passed over; the folder trains


def test_csv_source_with_bad_rows(make_folder, tmp_path):
    make_folder(per_class=4)
    rows = ["path,label"]
    for cls in ("bars", "stripes"):
        for i in range(4):
            rows.append(f"images/{cls}/{i:03d}.png,{cls}")
    rows += ["images/bars/000.png,bars", "images/missing.png,bars", "onlyonecolumn", ",bars"]
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    report = inspect_data(str(csv))
    skipped = " ".join(w for _, w in report["skipped"])
    assert "duplicate row" in skipped and "missing columns" in skipped and "empty path or label" in skipped
    assert [os.path.basename(p) for p, _ in report["problems"]] == ["missing.png"]  # once, and it stops training
    assert "does not exist" in report["problems"][0][1]
    (tmp_path / "nocols.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(CnnctlError, match="needs columns 'path' and 'label'"):
        inspect_data(str(tmp_path / "nocols.csv"))


def test_stratified_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    keep, held = stratified_split(labels, 0.1, seed=1)
    assert np.bincount(labels[held]).tolist() == [5, 3, 2]
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 100
    again = stratified_split(labels, 0.1, seed=1)[1]
    other = stratified_split(labels, 0.1, seed=2)[1]
    np.testing.assert_array_equal(held, again)
    assert not np.array_equal(held, other)


def test_epoch_order_is_a_function_of_seed_and_epoch_and_skip_resumes_it(make_folder):
    root = make_folder(per_class=16)
    cfg = DataConfig(path=str(root), val_split=0.0, augment=["crop", "flip"])
    dm = DataModule(cfg, InputSpec(28, 28, 1), 4, 7, log=lambda m: None)
    full = [x.numpy() for x, _ in dm.train_dataset(3)]
    tail = [x.numpy() for x, _ in dm.train_dataset(3, skip_batches=5)]
    assert len(full) == 8 and len(tail) == 3
    for a, b in zip(full[5:], tail):
        np.testing.assert_array_equal(a, b)   # same order and same augmentation draws
    other_epoch = [x.numpy() for x, _ in dm.train_dataset(4)]
    assert not np.array_equal(full[0], other_epoch[0])
    np.testing.assert_array_equal(epoch_permutation(10, 7, 3), epoch_permutation(10, 7, 3))


def test_tfrecord_convert_round_trip(make_folder, tmp_path):
    from cnnctl.data.tfrecord import convert

    root = make_folder(per_class=5)
    out = tmp_path / "records"
    desc = convert(str(root), str(out), shards=2)
    assert desc["counts"] == {"train": 10}
    dm_files = DataModule(DataConfig(path=str(root), val_split=0.0), InputSpec(28, 28, 1), 10, 0, log=lambda m: None)
    dm_rec = DataModule(DataConfig(path=str(out), val_split=0.0), InputSpec(28, 28, 1), 10, 0, log=lambda m: None)
    assert dm_rec.source == "tfrecord" and dm_rec.class_names == dm_files.class_names
    xa, ya = next(iter(dm_files.eval_dataset("train") if dm_files.test is None else dm_files.eval_dataset("test")))
    xb, yb = next(iter(dm_rec.train_dataset(0)))
    # Same multiset of (image, label): sort by pixel sum then label.
    key = lambda x, y: sorted(zip(x.numpy().sum(axis=(1, 2, 3)).round(3), y.numpy().argmax(1)))
    assert key(xa, ya) == key(xb, yb)


def test_keras_dataset_caches_mnist_npz_and_cifar10_batches(tmp_path):
    import pickle

    from cnnctl.data.sources import cifar10, mnist

    rng = np.random.default_rng(0)
    npz = tmp_path / "mnist.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), y_train=np.arange(12) % 10,
             x_test=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), y_test=np.arange(4))
    m = mnist(str(npz))
    assert m["train"].images.shape == (12, 28, 28, 1) and m["test"].labels.tolist() == [0, 1, 2, 3]

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    planes = rng.integers(0, 256, (6, 3072), dtype=np.uint8)   # rows: 1024 R, 1024 G, 1024 B
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": planes, b"labels": list(range(6))}, f)
    c = cifar10(str(folder))
    assert c["train"].images.shape == (30, 32, 32, 3) and c["test"].images.shape == (6, 32, 32, 3)
    # Channel-planar rows become (h, w, c) pixels: pixel (0, 1) of image 0 is (R[1], G[1], B[1]).
    np.testing.assert_array_equal(c["test"].images[0, 0, 1], planes[0, [1, 1025, 2049]])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": planes, b"labels": Evil()}, f)
    with pytest.raises(CnnctlError, match="refusing to load"):
        cifar10(str(folder))


def test_pca_colour_augmentation_shifts_every_pixel_of_an_image_by_one_colour(make_folder):
    import tensorflow as tf

    from cnnctl.data.pipeline import pca_color_shift, rgb_pca

    rng = np.random.default_rng(0)
    # Pixels whose colours vary mostly along (1, 1, 1) (brightness), a little along red-blue.
    base = rng.normal(120, 40, (50, 8, 8, 1))
    images = np.clip(np.concatenate([base + rng.normal(0, 10, base.shape), base,
                                     base - rng.normal(0, 10, base.shape)], axis=-1), 0, 255).astype(np.uint8)
    eigvals, eigvecs = rgb_pca(images)
    assert eigvals[0] > 10 * eigvals[1] > 0
    assert abs(abs(eigvecs[:, 0] @ np.ones(3) / np.sqrt(3)) - 1) < 0.05   # first component: brightness
    x = tf.constant(images[:4].astype("float32"))
    alpha = tf.constant(rng.normal(0, 0.1, (4, 3)).astype("float32"))
    y = pca_color_shift(x, eigvals, eigvecs, alpha).numpy()
    diff = y - x.numpy()
    # One RGB shift per image: structure (each pixel minus the image mean) is unchanged.
    np.testing.assert_allclose(diff, np.broadcast_to(diff[:, :1, :1, :], diff.shape), atol=1e-4)
    assert np.abs(diff).max() > 0.1
    np.testing.assert_allclose(pca_color_shift(x, eigvals, eigvecs, tf.zeros((4, 3))), x, atol=1e-5)
    # As a pipeline stage on a real folder (RGB) it runs and stays in [0, 255].
    root = make_folder(per_class=8, rgb=True, fmt="jpg")
    dm = DataModule(DataConfig(path=str(root), val_split=0.0, augment=["pca_color"]), InputSpec(28, 28, 3), 8, 0,
                    log=lambda m: None)
    xb, _ = next(iter(dm.train_dataset(0)))
    assert dm.pca is not None and float(tf.reduce_min(xb)) >= 0 and float(tf.reduce_max(xb)) <= 255


def test_ten_crops_are_corners_centre_and_mirrors():
    import tensorflow as tf

    from cnnctl.data.tta import predict_probs, ten_crops

    x = tf.constant(np.arange(2 * 28 * 28 * 3, dtype="float32").reshape(2, 28, 28, 3))
    crops = ten_crops(x, ratio=32 / 28)     # enlarge to 32x32, crop 28x28
    assert crops.shape == (10, 2, 28, 28, 3)
    big = tf.image.resize(x, (32, 32)).numpy()
    np.testing.assert_allclose(crops[0], big[:, :28, :28])        # top-left corner
    np.testing.assert_allclose(crops[3], big[:, 4:, 4:])          # bottom-right corner
    np.testing.assert_allclose(crops[4], big[:, 2:30, 2:30])      # centre
    np.testing.assert_allclose(crops[5], crops[0].numpy()[:, :, ::-1])  # mirror of the first

    import keras
    model = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    probs = predict_probs(model, x, "10crop").numpy()
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_googlenet_144_crops_of_a_landscape_image():
    import tensorflow as tf

    from cnnctl.data.tta import googlenet_144_views, googlenet_short_side

    # A model of input 14x14 wants the image at shorter side 14 x 352/224 = 22; 22x40 landscape.
    assert googlenet_short_side(14) == 22
    img = tf.constant(np.random.default_rng(0).uniform(0, 255, (22, 40, 3)).astype("float32"))
    views = googlenet_144_views(img, (14, 14)).numpy()
    assert views.shape == (144, 14, 14, 3)
    np.testing.assert_allclose(views[72:], views[:72, :, ::-1])          # the mirrors
    # Largest scale (22, views 54..71): no resizing; squares at columns 0, 9, 18.
    big = img.numpy()
    np.testing.assert_allclose(views[54], big[:14, :14])                 # left square, top-left corner
    np.testing.assert_allclose(views[54 + 6 + 3], big[8:22, 9 + 8:9 + 22])  # centre square, bottom-right
    np.testing.assert_allclose(views[54 + 12 + 4], big[4:18, 18 + 4:18 + 18])  # right square, centre
    np.testing.assert_allclose(views[54 + 5], tf.image.resize(big[:, :22], (14, 14), method="area"), rtol=1e-5)
    # Smallest scale: shorter side 16 (14 x 256/224), so the centre crops sit 1 pixel in.
    small = tf.image.resize(img, (16, 29), method="area").numpy()
    np.testing.assert_allclose(views[4], small[1:15, 1:15], rtol=1e-5)
    assert len({v.tobytes() for v in views}) == 144                      # all distinct for a landscape


def test_streamed_folder_decodes_odd_files_and_skips_broken_ones(make_folder):
    root = make_folder()
    _add_odd_files(root)
    logs = []
    dm = DataModule(DataConfig(path=str(root), skip_bad=True, val_split=0.0, cache=False), InputSpec(28, 28, 3), 8, 0,
                    log=logs.append)
    assert dm.train.kind == "paths" and dm.train.count == 47
    assert any("need Pillow" in m for m in logs)       # CMYK, 16-bit, ... go through Pillow on the fly
    seen = 0
    for x, y in dm.train_dataset(0):
        assert x.shape[1:] == (28, 28, 3)
        seen += int(x.shape[0])
    assert seen == 47


def test_scale_jittering_crops_full_size_images_per_seed_epoch_and_position(tmp_path):
    """VGG scale jittering / AlexNet 256 -> 224 crops, scaled down to 40x60 images and 16x16 crops."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):  # landscape and portrait, sizes 40x60 .. 60x40
            shape = (40, 60, 3) if i % 2 else (60, 40, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    cfg = DataConfig(path=str(tmp_path), val_split=0.0, resize_short=[20, 32])
    messages = []
    dm = DataModule(cfg, InputSpec(16, 16, 3), 4, 3, log=messages.append)
    assert any("scale jittering S in [20, 32]" in m for m in messages) and dm.train.kind == "paths"
    first = np.concatenate([x.numpy() for x, _ in dm.train_dataset(0)])
    again = np.concatenate([x.numpy() for x, _ in dm.train_dataset(0)])
    later = np.concatenate([x.numpy() for x, _ in dm.train_dataset(1)])
    assert first.shape == (12, 16, 16, 3)
    np.testing.assert_array_equal(first, again)          # a function of (seed, epoch, position)
    assert not np.array_equal(first, later)
    tail = np.concatenate([x.numpy() for x, _ in dm.train_dataset(0, skip_batches=2)])
    np.testing.assert_array_equal(first[8:], tail)       # resuming mid-epoch redraws the same crops

    # Evaluation: shorter side to (20 + 32) / 2 = 26, centre crop, exactly.
    x, _ = next(iter(dm.eval_dataset("train")))
    path = dm.train.paths[0]
    img = np.asarray(Image.open(path))
    import tensorflow as tf

    from cnnctl.data.pipeline import resize_short_side

    scaled = resize_short_side(tf.constant(img), 26).numpy()
    assert min(scaled.shape[:2]) == 26 and max(scaled.shape[:2]) == 39
    top, left = (scaled.shape[0] - 16) // 2, (scaled.shape[1] - 16) // 2
    np.testing.assert_array_equal(x.numpy()[0], scaled[top:top + 16, left:left + 16])

    # Each random crop is a window of its image scaled to some S in [20, 32].
    order = epoch_permutation(12, 3, 0)
    for pos in range(4):
        src = np.asarray(Image.open(dm.train.paths[order[pos]]))
        found = False
        for s in range(20, 33):
            scaled = resize_short_side(tf.constant(src), s).numpy()
            h, w = scaled.shape[:2]
            found |= any(np.array_equal(first[pos], scaled[t:t + 16, u:u + 16])
                         for t in range(h - 15) for u in range(w - 15))
        assert found, f"crop {pos} is no window of its image at any S in [20, 32]"
    with pytest.raises(CnnctlError, match="smaller than the model"):
        DataModule(DataConfig(path=str(tmp_path), val_split=0.0, resize_short=[12]), InputSpec(16, 16, 3), 4, 0,
                   log=lambda m: None)


def test_scale_jittering_is_refused_for_in_memory_data_sets():
    with pytest.raises(CnnctlError, match="needs image files"):
        DataModule(DataConfig(resize_short=[32]), InputSpec(28, 28, 1), 4, 0, log=lambda m: None)


def test_inspect_exits_0_on_a_trainable_folder_with_thumbs_db_desktop_ini_and_ds_store(make_folder):
    """Files a Windows or macOS folder carries are notes, not problems, and `train` uses the folder."""
    from typer.testing import CliRunner

    from cnnctl.cli import app

    root = make_folder(per_class=6)
    (root / "bars" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))   # an OLE compound file
    (root / "stripes" / "desktop.ini").write_text("[.ShellClassInfo]\nIconResource=x\n")
    (root / "stripes" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(30))
    (root / "stripes" / "[draft] notes.txt").write_text("a path that rich would read as markup")
    # a wide terminal: the table must not wrap the name, whatever the length of the temporary path
    r = CliRunner().invoke(app, ["data", "inspect", str(root)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "Thumbs.db" in r.output and "desktop.ini" in r.output and "not an image file" in r.output
    assert "[draft] notes.txt" in r.output                      # printed escaped, not eaten as markup
    assert ".DS_Store" not in r.output                          # hidden: ignored without a word
    report = inspect_data(str(root))
    assert report["problems"] == [] and len(report["skipped"]) == 3
    dm = DataModule(DataConfig(path=str(root), val_split=0.0), InputSpec(28, 28, 1), 4, 0, log=lambda m: None)
    assert dm.train.count == 12                                  # and train takes the same folder
    (root / "bars" / "broken.png").write_text("not a png")
    r = CliRunner().invoke(app, ["data", "inspect", str(root), "--json"])
    assert r.exit_code == 1, r.output                            # what would stop training still fails
    import json
    assert [os.path.basename(p) for p, _ in json.loads(r.stdout)["problems"]] == ["broken.png"]


def test_a_decompression_bomb_is_reported_from_its_header_and_never_decoded(make_folder, monkeypatch):
    from cnnctl.data import images

    root = make_folder(per_class=4)
    # 13,400 x 13,400 = 179.6 Mpixel, just over the limit; as 1-bit PNG of zeros it is ~25 kB on disk.
    Image.new("1", (13_400, 13_400)).save(root / "bars" / "bomb.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self, *a: decoded.append(self.size) or None)
    report = inspect_data(str(root))
    why = {os.path.basename(p): w for p, w in report["problems"]}["bomb.png"]
    assert "13400x13400" in why and "decompression bomb" in why and "not decoded" in why
    assert (13_400, 13_400) not in decoded
    assert images.MAX_PIXELS < 13_400 ** 2
    monkeypatch.undo()
    with pytest.raises(CnnctlError, match="bomb.png"):
        DataModule(DataConfig(path=str(root)), InputSpec(28, 28, 1), 4, 0, log=lambda m: None)


def test_unreadable_files_and_folders_are_reported_as_permission_denied(make_folder, monkeypatch):
    root = make_folder(per_class=4)
    locked_file = root / "bars" / "000.png"
    locked_dir = root / "stripes" / "private"
    locked_dir.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(locked_dir / "p.png")
    os.chmod(locked_file, 0)
    os.chmod(locked_dir, 0)
    try:
        if os.geteuid() == 0:
            # root reads through any mode bits: make the OS refuse exactly as it would refuse a user.
            real_open, real_scandir = Image.open, os.scandir

            def refuse_open(fp, *a, **k):
                if str(fp) == str(locked_file):
                    raise PermissionError(13, "Permission denied", str(fp))
                return real_open(fp, *a, **k)

            def refuse_scandir(path="."):
                if str(path) == str(locked_dir):
                    raise PermissionError(13, "Permission denied", str(path))
                return real_scandir(path)

            monkeypatch.setattr(Image, "open", refuse_open)
            monkeypatch.setattr(os, "scandir", refuse_scandir)
        report = inspect_data(str(root))
        problems = dict(report["problems"])
        assert problems[str(locked_file)] == "permission denied"
        assert dict(report["skipped"])[str(locked_dir)] == "folder not readable (permission denied)"
        with pytest.raises(CnnctlError, match="000.png: permission denied"):
            DataModule(DataConfig(path=str(root)), InputSpec(28, 28, 1), 4, 0, log=lambda m: None)
    finally:
        os.chmod(locked_file, 0o644)
        os.chmod(locked_dir, 0o755)


def test_a_csv_label_only_in_the_test_split_is_an_error(make_folder, tmp_path):
    make_folder(classes=3, per_class=4)
    rows = ["path,label,split"]
    rows += [f"images/{c}/{i:03d}.png,{c},train" for c in ("bars", "stripes") for i in range(4)]
    rows += [f"images/disc/{i:03d}.png,disc,test" for i in range(4)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(CnnctlError, match="class\\(es\\) with no usable training images: disc"):
        DataModule(DataConfig(path=str(tmp_path / "labels.csv")), InputSpec(28, 28, 1), 4, 0, log=lambda m: None)


def test_an_empty_class_folder_stops_training_with_its_name(make_folder):
    root = make_folder(per_class=4)
    (root / "coats").mkdir()
    with pytest.raises(CnnctlError, match="class\\(es\\) with no usable training images: coats"):
        DataModule(DataConfig(path=str(root)), InputSpec(28, 28, 1), 4, 0, log=lambda m: None)
