"""What ``--precision auto`` chooses on this machine, and the timings it chose from.

    python benchmarks/precision_auto.py [--models resnet50 efficientnet_lite0 ...] [--fresh]

For each model and mode (train, infer), ``cnnctl.train.calibrate.time_policies`` times float32 against
mixed_bfloat16 on the model itself (interleaved steps after warm-up, batch scaled to the input), exactly
as ``auto`` does on its first use; the faster is the choice. ``--fresh`` measures again instead of
reading the cache (``$CNNCTL_CACHE/precision.json``). On a CPU without bf16 units auto is float32
without measuring; the table is still measured, to show why.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0", "resnet20", "fashion_cnn"])
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    from cnnctl.train import calibrate

    print(f"`python benchmarks/precision_auto.py` on {calibrate.cpu_name()}\n")
    print("| model | mode | batch | float32 ms/step | bf16 ms/step | bf16 speed | auto picks |")
    print("|---|---|---:|---:|---:|---:|---|")
    for model in args.models:
        for mode in ("train", "infer"):
            key = calibrate.cache_key(model, mode)
            entry = None if args.fresh else calibrate._read_cache().get(key)
            if not entry:
                entry = calibrate.time_policies(model, mode)
                calibrate._write_cache(key, entry)
            f, b = entry["float32"], entry["mixed_bfloat16"]
            print(f"| {model} | {mode} | {entry['batch']} | {1000 * f:.1f} | {1000 * b:.1f} | {f / b:.2f}x | "
                  f"{entry['policy']} |", flush=True)


if __name__ == "__main__":
    main()
