"""Wall time of the commands that must answer without TensorFlow: `cnnctl --help` and `cnnctl models`
(read from the shipped table, cnnctl/model_catalog.json). For comparison, `cnnctl models` with the
table ignored (every model built to count it, as before the table) and `python -c "import tensorflow"`.

    python benchmarks/cli_startup.py [--repeats 10]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD_EVERYTHING = ("import sys; from pathlib import Path; import cnnctl.model_catalog as c; "
                    "c.CATALOG_PATH = Path(sys.argv[1]); "
                    "sys.argv = ['cnnctl', 'models', '--json']; "
                    "import runpy; runpy.run_module('cnnctl', run_name='__main__')")


def wall(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        no_table = str(Path(tmp) / "absent.json")
        rows = [
            ("cnnctl --help", wall([py, "-m", "cnnctl", "--help"], args.repeats), "< 0.3"),
            ("cnnctl models", wall([py, "-m", "cnnctl", "models"], args.repeats), "< 3"),
            ("cnnctl models --json", wall([py, "-m", "cnnctl", "models", "--json"], args.repeats), "< 3"),
            ('python -c "import tensorflow"', wall([py, "-c", "import tensorflow"], 3), "(reference)"),
            ("cnnctl models, no table (builds all)", wall([py, "-c", BUILD_EVERYTHING, no_table], 1),
             "(reference)"),
        ]
    print(f"`python benchmarks/cli_startup.py --repeats {args.repeats}`\n")
    print("| command | median s | min s | max s | goal |")
    print("|---|---:|---:|---:|---|")
    for name, times, goal in rows:
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | {goal} |")


if __name__ == "__main__":
    main()
