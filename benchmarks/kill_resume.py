"""Kill a training run with SIGKILL at 10 random moments, resume it each time, compare with an uninterrupted run.

    python benchmarks/kill_resume.py [--kills 10] [--seed 0]

The run: fashion_cnn on 6,000 Fashion-MNIST training images (a seeded .npz subset), 3 epochs of
batch 64 (~85 steps each), `--deterministic --precision float32 --checkpoint-every 10`.
First an uninterrupted reference run; then the same run is started, killed with SIGKILL after a
random delay, resumed with `cnnctl train --resume`, killed again, ... 10 times, then allowed to
finish. Prints: kills that landed, resumes that succeeded, whether the final weights are
bit-identical to the reference, the global step each resume restarted from, and the steps
recomputed (estimated from the kill time and the reference run's step rate, so marked ~).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def weights(path: Path) -> list[np.ndarray]:
    import keras

    import cnnctl.models  # noqa: F401 - registers cnnctl's layers for loading

    return [np.asarray(w) for w in keras.models.load_model(path, compile=False, safe_mode=True).weights]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    from cnnctl.data.sources import load_source

    _, splits = load_source("fashion_mnist", "")
    tr, te = splits["train"], splits["test"]
    pick = np.random.default_rng(0).permutation(tr.count)[:6000]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "fashion6k.npz"
        np.savez(data, x_train=tr.images[pick, ..., 0], y_train=tr.labels[pick], x_test=te.images[:2000, ..., 0],
                 y_test=te.labels[:2000], class_names=np.array(tr.class_names))
        common = ["--data", str(data), "--epochs", "3", "--batch-size", "64", "--deterministic", "--precision",
                  "float32", "--strategy", "default", "--checkpoint-every", "10", "--out-dir", str(tmp)]
        cmd = [sys.executable, "-m", "cnnctl", "train"]
        t0 = time.perf_counter()
        ref = subprocess.run(cmd + common + ["--name", "reference"], capture_output=True, text=True, check=False)
        ref_s = time.perf_counter() - t0
        if ref.returncode:
            sys.exit(ref.stdout + ref.stderr)
        metrics = json.loads((tmp / "reference" / "metrics.json").read_text())
        steps_total = 3 * int(np.ceil(0.9 * 6000 / 64))
        rate = steps_total / metrics["train_time_s"]            # steps per second while training
        run, latest = tmp / "killed", tmp / "killed" / "backup" / "LATEST"
        kills, attempts, resumes_ok, restarts, recomputed = 0, 0, 0, [], []
        finished = False
        def latest_step() -> int | None:
            try:
                return int(latest.read_text().split("-")[1])
            except (OSError, IndexError, ValueError):
                return None

        while kills < args.kills and not finished:
            resuming = latest.is_file()
            if not resuming and run.exists():
                shutil.rmtree(run)                              # killed before its first checkpoint
            argv = cmd + (["--resume", str(run)] if resuming else common + ["--name", "killed"])
            before = latest_step()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            # Wait until this attempt has written a checkpoint (so it trained), then kill it a random
            # 0-1.5 s later: sometimes right after a checkpoint, sometimes between two.
            while proc.poll() is None and latest_step() in (None, before):
                time.sleep(0.02)
            seen, seen_at = latest_step(), time.perf_counter()
            wait = float(rng.uniform(0.0, 1.5))
            while proc.poll() is None and time.perf_counter() - seen_at < wait:
                time.sleep(0.01)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
                out, _ = proc.communicate()
                reached = (seen or 0) + (time.perf_counter() - seen_at) * rate
                recomputed.append(max(0.0, reached - (latest_step() or 0)))
            else:
                out, _ = proc.communicate()
                finished = True
            if resuming:
                attempts += 1
                m = re.search(r"global step (\d+)", out or "")
                if m:
                    resumes_ok += 1
                    restarts.append(int(m.group(1)))
        if not finished:
            attempts += 1
            final = subprocess.run(cmd + ["--resume", str(run)], capture_output=True, text=True, check=False)
            m = re.search(r"global step (\d+)", final.stdout)
            if m:
                resumes_ok += 1
                restarts.append(int(m.group(1)))
            if final.returncode:
                sys.exit(final.stdout + final.stderr)
        same = all(np.array_equal(a, b) for a, b in zip(weights(tmp / "reference" / "model.keras"),
                                                        weights(tmp / "killed" / "model.keras")))
        print("| kills | resumes that succeeded | final weights bit-identical | resumed at global steps | "
              "steps recomputed per kill (~) |")
        print("|---|---|---|---|---|")
        print(f"| {kills} | {resumes_ok} / {attempts} | {'yes' if same else 'NO'} | "
              f"{', '.join(map(str, restarts))} | mean {np.mean(recomputed):.1f}, max {np.max(recomputed):.1f} "
              f"(checkpoint every 10 steps) |")
        print(f"\nreference run {ref_s:.0f} s, {steps_total} steps")


if __name__ == "__main__":
    main()
