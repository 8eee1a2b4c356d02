"""Time examples/image/build.sh when nothing the image is made from changed (the skipped build).

tests/test_image.py checks that such a run says "is up to date" and keeps the image id; how
long it takes is measured here (target ≤ 20 s). The first run builds the image if it is
missing or stale and is not counted.

    .venv/bin/python tests/bench/bench_image_build.py [--runs 5]

Not a pytest module: the name does not match test_*.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "examples" / "image" / "build.sh"


def run_build() -> tuple[float, str]:
    """One build.sh run: (seconds, stderr). Raises if it fails."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
        env=os.environ | {"PYTHON": sys.executable},
    )
    return time.monotonic() - started, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    run_build()  # builds it if needed; not timed
    took = []
    for _ in range(args.runs):
        seconds, stderr = run_build()
        if "is up to date" not in stderr:
            raise SystemExit(f"build.sh rebuilt the image on a run with nothing changed:\n{stderr}")
        took.append(seconds)
    print(
        f"skipped image build: median {statistics.median(took):.2f} s, max {max(took):.2f} s "
        f"over {args.runs} runs (target ≤ 20 s)"
    )


if __name__ == "__main__":
    main()
