"""Time every DVC stage of the default pipeline from scratch, against the `make run` budget.

    python benchmarks/stage_times.py [--repeats 3] [-S train.epochs=2 ...]

Each repeat copies the repository into a temporary directory (so nothing in the workspace is
touched), then runs every stage with `dvc repro --single-item --force` in DVC's graph order and
records its wall time. Prints the median per stage over repeats, the total, and the budget it is
held to (`make run`: 10 minutes on 2 CPU cores, set-up included). Figures go to BENCHMARKS.md;
`benchmarks/fresh_clone.py` times the same stages as `make run` runs them, from a fresh clone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from segbench.dag import repro_stage, stage_order
from segbench.workspace import commit, copy_repository

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 10 * 60


def copy_repo(dest: Path, overrides: list[str]) -> None:
    copy_repository(REPO, dest)
    if overrides:
        import yaml

        params = yaml.safe_load((dest / "params.yaml").read_text())
        for item in overrides:
            key, value = item.split("=", 1)
            *parents, leaf = key.split(".")
            node = params
            for p in parents:
                node = node[p]
            node[leaf] = yaml.safe_load(value)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        commit(dest, "overrides")


def time_once(overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="segbench-bench-") as tmp:
        root = Path(tmp)
        copy_repo(root, overrides)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        times = {}
        for stage in stage_order(root):
            start = time.perf_counter()
            repro_stage(stage, root, force=True)
            times[stage] = time.perf_counter() - start
            print(f"  {stage:20s} {times[stage]:7.1f} s", flush=True)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "-S",
        dest="overrides",
        action="append",
        default=[],
        help="params override key=value (as in `dvc exp run -S`)",
    )
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        print(f"repeat {i + 1}/{args.repeats}", flush=True)
        runs.append(time_once(args.overrides))
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}; overrides: {args.overrides or 'none'}"
    )
    print(f"{'stage':20s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        print(f"{stage:20s} {statistics.median(values):9.1f} {min(values):7.1f} {max(values):7.1f}")
    totals = [sum(r.values()) for r in runs]
    print(
        f"{'pipeline total':20s} {statistics.median(totals):9.1f} {min(totals):7.1f} "
        f"{max(totals):7.1f}   (make run budget: {BUDGET_S} s including set-up)"
    )


if __name__ == "__main__":
    main()
