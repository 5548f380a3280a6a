"""Wall time of `cnnctl --help` (it must not import TensorFlow). Run: python benchmarks/cli_startup.py"""

import statistics
import subprocess
import sys
import time


def main(repeats: int = 10) -> None:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnctl", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    print("| command | median s | min s | max s | goal |")
    print("|---|---|---|---|---|")
    print(f"| cnnctl --help | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | < 0.3 |")


if __name__ == "__main__":
    main()
