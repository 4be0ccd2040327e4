"""Wall time of a short command run in-process (a fresh interpreter, as now) and served by the
zygote (segbench.zygote), side by side.

    python benchmarks/zygote_overhead.py [--repeats 5]

Commands: ``trivial`` (prints a line), ``torch_op`` (imports torch, one 64x64 matmul) and
``cli_help`` (``segbench fetch --help`` through segbench.cli.main, the stages' entry point).
Each is started as ``python -c "...run_stage(...)"`` the way a DVC stage would be, with
``SEGBENCH_ZYGOTE=0`` (in-process) and then against a warm zygote with the default preload list
in a temporary zygote directory, which is stopped at the end. Prints the median and the range.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT = (
    "import sys, importlib; from segbench.zygote import run_stage; "
    "m, f = sys.argv[1].split(':'); run_stage(getattr(importlib.import_module(m), f), sys.argv[2:])"
)
COMMANDS = {
    "trivial": ["zygote_overhead:trivial"],
    "torch_op": ["zygote_overhead:torch_op"],
    "cli_help": ["segbench.cli:main", "fetch", "--help"],
}


def trivial(argv: list[str]) -> None:
    print("done")


def torch_op(argv: list[str]) -> None:
    import torch

    a = torch.rand(64, 64)
    print(float((a @ a).sum()) > 0)


def time_run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLIENT, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def wait_for_zygote(env: dict[str, str], directory: Path) -> None:
    subprocess.run([sys.executable, "-c", CLIENT, *COMMANDS["trivial"]], env=env, check=True)
    deadline = time.monotonic() + 300
    while not list(directory.glob("zygote-*.sock")):
        if time.monotonic() > deadline:
            raise SystemExit(f"no zygote came up; see {directory}/*.log")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="zb-", dir="/tmp")) / "z"
    path = [str(REPO / "src"), str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "SEGBENCH_ZYGOTE_DIR": str(directory), "PYTHONPATH": os.pathsep.join(path)}
    env.pop("SEGBENCH_ZYGOTE_PRELOAD", None)
    try:
        wait_for_zygote(env, directory)
        print(f"{'command':10s} {'in-process s':>22s} {'served s':>22s}   (median [min-max])")
        for name, command in COMMANDS.items():
            cells = []
            for zygote in ("0", "1"):
                runs = [
                    time_run(command, {**env, "SEGBENCH_ZYGOTE": zygote})
                    for _ in range(args.repeats)
                ]
                cells.append(f"{statistics.median(runs):.2f} [{min(runs):.2f}-{max(runs):.2f}]")
            print(f"{name:10s} {cells[0]:>22s} {cells[1]:>22s}")
        print(f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    finally:
        subprocess.run([sys.executable, "-m", "segbench.zygote", "stop"], env=env, check=False)
        shutil.rmtree(directory.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
