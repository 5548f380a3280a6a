"""Plain CNN against ST-CNN on each distortion of the Spatial Transformer paper (Table 1), same budget.

    python benchmarks/stn.py [--epochs 5] [KIND ...]     # kinds: R RTS P E cluttered (default: all)

Each run is `cnnctl train st-cnn-rts --data distorted:KIND --model M` (the recipe's optimizer and
schedule) with the input size of the distortion; cnn_baseline is widened to st_cnn's parameter
count. Prints a markdown table of test errors on the 10,000 distorted Fashion-MNIST test images
and writes the ST-CNN's `cnnctl visualize stn` picture of each distortion to docs/images/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"R": 28, "RTS": 42, "P": 28, "E": 28, "cluttered": 60}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "images"


def cnnctl(*args: str) -> None:
    p = subprocess.run([sys.executable, "-m", "cnnctl", *args], capture_output=True, text=True, check=False)
    if p.returncode:
        sys.exit(f"cnnctl {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kinds", nargs="*", default=list(SIZES))
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for kind in args.kinds:
            size = SIZES[kind]
            result = {}
            for model in ("cnn_baseline", "st_cnn"):
                name = f"{model}-{kind}"
                t = time.perf_counter()
                cnnctl("train", "st-cnn-rts", "--data", f"distorted:{kind}", "--model", model,
                       "--set", f"model.input_shape=[{size},{size},1]", "--epochs", str(args.epochs),
                       "--name", name, "--out-dir", str(out), "--strategy", "default")
                m = json.loads((out / name / "metrics.json").read_text())
                result[model] = (100 * (1 - m["test_accuracy"]), m["params"], time.perf_counter() - t)
            cnnctl("visualize", "stn", str(out / f"st_cnn-{kind}"), "--count", "6")
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / f"st_cnn-{kind}" / "visualize" / "stn.png", DOCS / f"stn-{kind}.png")
            (ce, cp, ct), (se, sp, st) = result["cnn_baseline"], result["st_cnn"]
            rows.append((kind, f"{size}x{size}", f"{ce:.2f}%", f"{se:.2f}%", f"{cp:,} / {sp:,}", f"{ct:.0f} / {st:.0f}"))
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"\nTest error on distorted Fashion-MNIST (10,000 test images), {args.epochs} epochs each\n")
    print("| distortion | input | CNN | ST-CNN | parameters (CNN / ST-CNN) | wall time s (CNN / ST-CNN) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
