"""The alignment model on grid scenes: ``cnnctl train align-scenes``, then R@K and median rank beside chance.

    python benchmarks/align_scenes.py [--out checkpoints/bench-align]

Prints a markdown table (docs/captioning.md carries it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="checkpoints/bench-align")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cnnctl", "train", "align-scenes", "--out-dir", str(out),
                        "--name", "align-scenes"], capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(r.stdout[-3000:] + r.stderr[-3000:])
    wall = time.perf_counter() - t0
    m = json.loads((out / "align-scenes" / "metrics.json").read_text())
    print(f"\n### brnn_alignment on grid scenes ({m['test_images']} test images, each against every test sentence)\n")
    print("| | R@1 | R@5 | R@10 | median rank |")
    print("|---|---:|---:|---:|---:|")
    for label, key in (("image -> text", "test_image_to_text_"), ("text -> image", "test_text_to_image_")):
        print(f"| {label} | {m[key + 'r@1']:.3f} | {m[key + 'r@5']:.3f} | {m[key + 'r@10']:.3f} | "
              f"{m[key + 'median_rank']:.0f} |")
    print(f"| chance | {m['chance_r@1']:.3f} | {m['chance_r@5']:.3f} | {m['chance_r@10']:.3f} | "
          f"{m['chance_median_rank']:.1f} |")
    print(f"\nwall time {wall:.0f} s ({m['epochs_trained']} epochs); {m['test_distinct_sentences']} distinct sentences "
          f"among the {m['test_images']} test scenes: a sentence word for word equal to the true one counts as correct, "
          f"and chance is computed for that rule")


if __name__ == "__main__":
    main()
