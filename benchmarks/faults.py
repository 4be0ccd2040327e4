"""Fault injection (issue 16, item 8): kill -9 every stage at seeded random moments, rerun it.

    python benchmarks/faults.py [--seeds 5] [--cases fetch prepare train evaluate sweep]
                                [--dvc] [--in-process]

For each case of tests/faults.py (the same cases and checks as tests/test_faults.py) and each
seed 0 .. N-1: the stage's command, as dvc.yaml gives it, started in a fresh workspace and its
process group sent SIGKILL at a time drawn by ``random.Random(f"{case}-{seed}")`` from 0.05 s
to 90% of an uninterrupted run's wall time (redrawn, up to 3 times, when the stage had already
finished: such a draw counts as missed, not as a kill), then run again to completion and
compared with the uninterrupted run (outputs, other stages' outputs, files left, processes
left). ``--dvc`` adds the same for ``dvc repro prepare`` in a git+DVC copy of the repository;
``--in-process`` runs every stage without the zygote (SEGBENCH_ZYGOTE=0), so that the kill
hits the working process itself rather than the zygote client it is served by.

Prints one line per kill, a table per case and the Markdown rows for BENCHMARKS.md (with the
machine and the date). Exits 1 if any rerun differed, lost an output or left anything behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the cases live in tests/faults.py, shared with the tests

from tests.faults import (  # noqa: E402
    CASES,
    DvcRepo,
    Lab,
    describe,
    markdown,
    run_dvc_trial,
    run_trial,
    summarise,
)


def machine() -> str:
    import psutil
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{date.today().isoformat()}, commit {commit or '?'} (working tree), {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {memory:.0f} GB RAM, Python {platform.python_version()}, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the start"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="kills per case (seeds 0 .. N-1)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--dvc", action="store_true", help="also kill `dvc repro prepare`")
    parser.add_argument("--in-process", action="store_true", help="SEGBENCH_ZYGOTE=0")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces (else removed)")
    args = parser.parse_args(argv)

    from segbench import zygote

    about = machine()
    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="segbench-faults-"))
    # This run's own zygote (stopped at the end), one torch thread per stage as in the tests.
    os.environ["SEGBENCH_ZYGOTE_DIR"] = str(root / "zygotes")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if args.in_process:
        os.environ["SEGBENCH_ZYGOTE"] = "0"
    trials, references = [], {}
    try:
        lab = Lab(root / "lab")
        print(f"MLflow store and zygote ready after {lab.warm():.1f} s", flush=True)
        for name in args.cases:
            ref = lab.reference(CASES[name])
            references[name] = ref.run.seconds
            print(f"{name}: reference {ref.run.seconds:.2f} s", flush=True)
            for seed in range(args.seeds):
                trials.append(run_trial(lab, CASES[name], seed))
                print(describe(trials[-1]), flush=True)
        if args.dvc:
            repo = DvcRepo(lab, CASES["prepare"])
            references["dvc-prepare"] = repo.seconds
            print(f"dvc repro --force prepare: {repo.seconds:.2f} s", flush=True)
            for seed in range(args.seeds):
                trials.append(run_dvc_trial(repo, seed))
                print(describe(trials[-1]), flush=True)
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            zygote.main(["stop"])
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    rows = summarise(trials, references)
    mode = "in-process (SEGBENCH_ZYGOTE=0)" if args.in_process else "served by a zygote"
    print(f"\n{about}; stages {mode}; {time.monotonic() - start:.0f} s in all\n")
    print(markdown(rows))
    bad = [t for t in trials if t.landed and t.problems()]
    for trial in bad:
        print(f"\n{describe(trial)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
