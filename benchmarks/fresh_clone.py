"""Time `make run` and `make test` on a fresh clone: set-up, every stage, and the share of the
pipeline's time spent outside compute.

    python benchmarks/fresh_clone.py [--repeats 3] [--no-test] [--keep]

Each repeat clones the committed HEAD into a temporary directory (no virtualenv, no DVC outputs,
no MLflow store: what CI and a new user start from), then times `make setup`, `make run` (the
virtualenv then exists, so this is the pipeline and the summary) and `make test`. `make run`
runs with SEGBENCH_TIMINGS set (segbench.timing), so every stage process reports its span and
the seconds inside its pipeline function (compute) and in MLflow calls. Outside compute is
everything else: interpreter start, imports, MLflow, DVC's own bookkeeping between stages.

Budgets (2 CPU cores, set-up included): `make run` 600 s, `make test` 360 s; the target for the
share outside compute is under 15%. Package caches (pip's, uv's) are whatever this machine has;
say so when reporting figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGETS_S = {"make run": 600, "make test": 360}
OUTSIDE_TARGET = 0.15


def stage_name(argv: list[str]) -> str:
    """``stages/train.py unet ...`` -> ``train@unet``; ``stages/evaluate.py ensembles/e`` ->
    ``evaluate_ensemble@e``."""
    script = Path(argv[0]).stem
    if script in ("train", "ensemble"):
        return f"{script}@{argv[1]}"
    if script == "evaluate":
        kind, name = Path(argv[1]).parent.name, Path(argv[1]).name
        return f"{'evaluate_ensemble' if kind == 'ensembles' else 'evaluate'}@{name}"
    return script


def stages(timings: Path) -> list[dict]:
    """One row per stage process, in the order they ran: its wall time, compute, MLflow."""
    records = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
    commands = {r["client"]: r for r in records if r["kind"] == "command"}
    rows = []
    for client in sorted((r for r in records if r["kind"] == "client"), key=lambda r: r["start"]):
        phases = commands.get(client["pid"], {}).get("phases", {})
        rows.append(
            {
                "stage": stage_name(client["argv"]),
                "start": client["start"],
                "wall": client["end"] - client["start"],
                "compute": phases.get("compute", 0.0),
                "mlflow": phases.get("mlflow", 0.0),
            }
        )
    return rows


def run(cmd: str, cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd.split(), cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    print(f"  {cmd:12s} {seconds:7.1f} s  {status}", flush=True)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(1)
    return seconds


def time_once(keep: bool, with_test: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="segbench-fresh-"))
    repo = tmp / "repo"
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
        timings = tmp / "timings.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "SEGB"))}
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(REPO))
        )
        out = {"setup": run("make setup", repo, env)}
        out["run"] = run("make run", repo, env | {"SEGBENCH_TIMINGS": str(timings)})
        out["stages"] = stages(timings)
        if with_test:
            out["test"] = run("make test", repo, env)
        return out
    finally:
        subprocess.run([repo / ".venv/bin/python", "-m", "segbench.zygote", "stop"], cwd=repo,
                       capture_output=True)  # fmt: skip
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def summarise(runs: list[dict]) -> None:
    med = statistics.median
    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{len(runs)} repeat(s), medians")  # fmt: skip
    per_stage = defaultdict(lambda: defaultdict(list))
    for r in runs:
        for row in r["stages"]:
            for key in ("wall", "compute", "mlflow"):
                per_stage[row["stage"]][key].append(row[key])
    print("\n| stage | wall s | compute s | MLflow s | outside compute s |\n|---|---|---|---|---|")
    for stage, v in per_stage.items():
        wall, compute = med(v["wall"]), med(v["compute"])
        print(f"| {stage} | {wall:.1f} | {compute:.1f} | {med(v['mlflow']):.1f} | "
              f"{wall - compute:.1f} |")  # fmt: skip
    setup, pipeline = med(r["setup"] for r in runs), med(r["run"] for r in runs)
    compute = med(sum(s["compute"] for s in r["stages"]) for r in runs)
    spans = med(sum(s["wall"] for s in r["stages"]) for r in runs)
    mlflow = med(sum(s["mlflow"] for s in r["stages"]) for r in runs)
    print(
        f"\nmake run on a fresh clone: {setup + pipeline:.0f} s (set-up {setup:.0f} s, pipeline "
        f"{pipeline:.0f} s); budget {BUDGETS_S['make run']} s"
    )
    print(
        f"pipeline: compute {compute:.0f} s; outside compute {pipeline - compute:.0f} s = "
        f"{(pipeline - compute) / pipeline:.1%} (target < {OUTSIDE_TARGET:.0%}): stage processes "
        f"{spans - compute:.0f} s (of which MLflow {mlflow:.0f} s), DVC between stages and the "
        f"summary {pipeline - spans:.0f} s; with set-up "
        f"{(setup + pipeline - compute) / (setup + pipeline):.1%} outside compute"
    )
    if all("test" in r for r in runs):
        test = med(r["test"] for r in runs)
        print(
            f"make test on a fresh clone: {setup + test:.0f} s with set-up ({test:.0f} s of "
            f"tests); budget {BUDGETS_S['make test']} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-test", action="store_true", help="time make run only")
    parser.add_argument("--keep", action="store_true", help="keep the clones for inspection")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    runs = []
    for i in range(args.repeats):
        print(f"repeat {i + 1}/{args.repeats} (commit {head})", flush=True)
        runs.append(time_once(args.keep, not args.no_test))
    summarise(runs)


if __name__ == "__main__":
    main()
