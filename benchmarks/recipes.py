"""Run small recipes on the bundled Fashion-MNIST and print (model, epochs, wall time, test accuracy).

    python benchmarks/recipes.py [RECIPE ...]     # default: every *-fashion recipe

Each recipe runs as `cnnctl train RECIPE` in a fresh process; the numbers are
read back from the run's metrics.json. Run directories go to a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def main(recipes: list[str]) -> None:
    recipes = recipes or sorted(p.stem for p in PIPELINES.glob("*-fashion.toml"))
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for recipe in recipes:
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "cnnctl", "train", recipe, "--name", recipe, "--out-dir", out],
                               check=False, capture_output=True, text=True)
            wall = time.perf_counter() - t
            metrics_path = Path(out) / recipe / "metrics.json"
            if p.returncode or not metrics_path.is_file():
                rows.append((recipe, "-", "-", f"{wall:.0f}", "failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]))
                continue
            m = json.loads(metrics_path.read_text())
            model = tomllib.loads((Path(out) / recipe / "config.toml").read_text())["model"]["name"]
            rows.append((recipe, model, m["epochs_trained"], f"{wall:.0f}", f"{100 * m['test_accuracy']:.2f}%"))
            print(rows[-1], file=sys.stderr)
    print("| recipe | model | epochs | wall time s | Fashion-MNIST test accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
