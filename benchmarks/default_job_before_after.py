"""The default job before and after a change: same seed, --deterministic, test accuracy side by side.

Checks that moving classification onto the task engine (issue 12) changed nothing a user sees:

    python benchmarks/default_job_before_after.py [--before 6b0890d^] [--out /tmp/before-after]

``--before`` is a git revision of this repository (default: the commit before the task engine);
it is checked out into a temporary worktree and run from there with its own code. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(code: Path, out: Path, name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "cnnctl", "train", "--seed", "0", "--deterministic", "--out-dir", str(out),
           "--name", name]
    r = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return json.loads((out / name / "metrics.json").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="6b0890d^")
    ap.add_argument("--out", default="/tmp/before-after")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tree = out / "before-tree"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before], check=True)
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    now = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    before = run(tree, out, f"before-{rev}")
    after = run(ROOT, out, f"after-{now}")
    print("\n| default job, seed 0, --deterministic | test accuracy | test loss | epochs | wall s |")
    print("|---|---:|---:|---:|---:|")
    for label, m in ((f"before the task engine ({rev})", before), (f"after ({now})", after)):
        print(f"| {label} | {m['test_accuracy']:.4f} | {m['test_loss']:.4f} | {m['epochs_trained']} | "
              f"{m['wall_time_s']:.0f} |")
    same = before["test_accuracy"] == after["test_accuracy"] and before["test_loss"] == after["test_loss"]
    print(f"\nidentical: {'yes' if same else 'NO'}")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
