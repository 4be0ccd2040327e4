"""Time `make run` and `make test` on a fresh clone, against their budgets.

    python benchmarks/fresh_clone.py [--repeats 1] [--keep]

Each repeat clones the committed HEAD into a temporary directory (no virtualenv, no DVC outputs,
no MLflow store: what CI and a new user start from), then times `make run` (set-up included)
and `make test` in it. Budgets: `make run` 15 minutes, `make test` 10 minutes on 2 CPU cores.
Package caches (pip's, uv's) are whatever this machine has; say so when reporting figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGETS_S = {"make run": 15 * 60, "make test": 10 * 60}


def time_once(keep: bool) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="segbench-fresh-"))
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(tmp / "repo")], check=True)
        times = {}
        for target in BUDGETS_S:
            start = time.perf_counter()
            proc = subprocess.run(target.split(), cwd=tmp / "repo", capture_output=True, text=True)
            times[target] = time.perf_counter() - start
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"  {target:10s} {times[target]:7.1f} s  {status}", flush=True)
            if proc.returncode:
                print(proc.stdout[-3000:], proc.stderr[-3000:])
        return times
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the clone for inspection")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    runs = []
    for i in range(args.repeats):
        print(f"repeat {i + 1}/{args.repeats} (commit {head})", flush=True)
        runs.append(time_once(args.keep))
    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs")
    for target, budget in BUDGETS_S.items():
        values = [r[target] for r in runs]
        print(
            f"{target:10s} median {statistics.median(values):7.1f} s over {len(values)} "
            f"(min {min(values):.1f}, max {max(values):.1f}); budget {budget} s"
        )


if __name__ == "__main__":
    main()
