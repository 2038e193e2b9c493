"""Run every benchmark at full scale (or `--quick`, about a tenth), one after the other, and summarise.

Each benchmark prints its own table; this prints each one's wall time and, at the end, every PASS/FAIL line.
The benchmarks run in sequence on purpose: on a 2-core machine, two at once would measure each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = {
    "bench_training_set.py": ["--labels", "200000", "--feature-rows", "300000", "--entities", "10000"],
    "bench_features.py": ["--events", "1000000", "--entities", "10000"],
    "bench_online.py": ["--entities", "10000", "--repeat", "300"],
    "bench_serving.py": ["--entities", "5000", "--requests", "400", "--batches", "10"],
    "bench_drift.py": ["--rows", "100000"],
    "bench_drift_calibration.py": ["--quick"],
    "bench_overload.py": ["--entities", "2000", "--seconds", "5"],
    "bench_backfill.py": ["--quick"],
    "bench_cli.py": ["--repeat", "3"],
    "bench_scores.py": ["--quick"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a tenth of the full scale")
    args = parser.parse_args()

    verdicts: list[str] = []
    for script, quick_args in BENCHMARKS.items():
        print(f"=== {script} {'(quick)' if args.quick else '(full scale)'}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / script), *(quick_args if args.quick else [])],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        print(proc.stdout, end="")
        elapsed = time.perf_counter() - started
        print(f"=== {script}: exit code {proc.returncode}, {elapsed:.0f}s\n", flush=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIPPED"))]
        verdicts += [f"{script}: {line}" for line in lines]
        if proc.returncode != 0:
            verdicts.append(f"{script}: ERROR (exit code {proc.returncode})")

    print("=== summary")
    print("\n".join(verdicts))
    return 1 if any(": ERROR" in v for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
