"""The classifier that scores a generator's samples (a *judge*): its penultimate features for FID and
KID, its probabilities for the Inception-score analogue, class coverage and label accuracy.

By default cnnctl trains one, once per data set, with the default job's recipe (``fashion_cnn``,
seeded, float32) on the GAN's own training data, and caches it under ``$CNNCTL_CACHE/judges/``
(default ``~/.cache/cnnctl``). It trains in a child process so that its precision and seeds never
touch the GAN run's. ``generate.judge = RUN`` takes a classify run of yours instead.

FIDs in this feature space are for comparing runs with each other; they are not comparable to
published FIDs, which use the Inception network's pool3 features.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError
from cnnctl.train.workers import LAUNCH_STATE_ENV, SCRATCH_ENV

JUDGE_VERSION = 1      # bump when the recipe below changes: cached judges are keyed by it


def _cache_root() -> Path:
    from cnnctl.data.sources import _cache_root as cnnctl_cache

    return cnnctl_cache() / "judges"


def judge_batch(train_images: int) -> int:
    """The default job's batch of 128, smaller for small data sets (at least 20 steps per epoch)."""
    return min(128, max(16, train_images // 20))


def judge_key(data_cfg, image_shape, epochs: int, train_images: int) -> str:
    """Which judge a data set gets: its source and path (with the file's size and time), the image
    shape, the epochs and the recipe version."""
    path = data_cfg.path
    stamp = ""
    if path and Path(path).exists():
        st = Path(path).stat()
        stamp = f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    text = json.dumps([JUDGE_VERSION, data_cfg.source, path, stamp, list(image_shape), epochs, data_cfg.val_split,
                       train_images])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_judge(gen_cfg, data_cfg, image_shape, train_images: int, log) -> Path:
    """The judge's run directory: ``generate.judge`` if set, else the cached one (trained now if new)."""
    if gen_cfg.judge:
        run = Path(gen_cfg.judge)
        if not (run / "classes.json").is_file():
            raise CnnctlError(f"generate.judge = {run} is not a classify run (no classes.json)",
                              hint="give a run of `cnnctl train` on the same classes, or leave generate.judge empty")
        return run
    key = judge_key(data_cfg, image_shape, gen_cfg.judge_epochs, train_images)
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    # The workers of a multi-worker job on one machine share the cache: one trains, the others wait.
    with open(root / f"{key}.lock", "w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        return _train_judge(gen_cfg, data_cfg, image_shape, train_images, root, key, log)


def _train_judge(gen_cfg, data_cfg, image_shape, train_images: int, root: Path, key: str, log) -> Path:
    run = root / key
    if (run / "model.keras").is_file() and (run / "metrics.json").is_file():
        return run
    log(f"training the judge classifier for the sample metrics (once per data set, cached in {run})")
    if run.exists():                      # an interrupted earlier attempt: start it again
        import shutil

        shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "cnnctl", "train", "--strategy", "default", "--epochs", str(gen_cfg.judge_epochs), "--seed", "0",
           "--batch-size", str(judge_batch(train_images)), "--precision", "float32", "--out-dir", str(root), "--name", key,
           "--set", f"data.source={json.dumps(data_cfg.source)}", "--set", f"data.val_split={data_cfg.val_split}",
           "--set", f"model.input_shape={json.dumps(list(image_shape))}", "--set", "data.augment=[]"]
    if data_cfg.path:
        cmd += ["--data", data_cfg.path]
    # one process of its own: not a member of the GAN run's cluster, if it has one
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "SLURM_PROCID", LAUNCH_STATE_ENV, SCRATCH_ENV)}
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not (run / "model.keras").is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise CnnctlError(f"training the judge classifier failed:\n{tail}",
                          hint="fix the problem above, or set generate.judge to a classify run of yours")
    accuracy = json.loads((run / "metrics.json").read_text()).get("test_accuracy")
    log(f"judge classifier ready: test accuracy {accuracy:.4f}" if accuracy is not None else "judge classifier ready")
    return run


class Judge:
    """``describe(pixels [0, 255]) -> (features (n, d), probabilities (n, classes))``."""

    def __init__(self, run: Path):
        import keras

        from cnnctl.inference import load_keras_file

        self.run = Path(run)
        self.class_names = json.loads((self.run / "classes.json").read_text())
        path = self.run / "model.keras"
        model = load_keras_file(path, hint=f"delete {self.run} and run again: the judge is retrained")
        last = model.layers[-1]                           # the logits layer; its input is the feature
        self.model = keras.Model(model.input, [last.input, keras.ops.softmax(model.output)])
        self.input_shape = tuple(int(s) for s in model.inputs[0].shape[1:])
        try:
            self.test_accuracy = json.loads((self.run / "metrics.json").read_text()).get("test_accuracy")
        except (OSError, ValueError):
            self.test_accuracy = None

    def describe(self, pixels: np.ndarray, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for s in range(0, len(pixels), batch):
            f, p = self.model(np.asarray(pixels[s:s + batch], np.float32), training=False)
            feats.append(np.asarray(f, np.float64))
            probs.append(np.asarray(p, np.float64))
        if not feats:
            return np.zeros((0, 0)), np.zeros((0, len(self.class_names)))
        return np.concatenate(feats), np.concatenate(probs)
