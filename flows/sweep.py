"""Prefect flow: run the Ray Tune sweep, i.e. the DVC stages up to and including ``sweep`` (and
``promote``, which reads the sweep's best trial, when ``dvc.yaml`` has it).

    python flows/sweep.py                                 # a local Ray with this machine's CPUs
    python flows/sweep.py --ray-address ray://head:10001  # join a running Ray cluster
    python flows/sweep.py --force                         # sweep again though nothing changed

The stages run through the pipeline flow's own task and rules (flows/pipeline.py): DVC's status
decides what runs, and the upstream stages (fetch, prepare) run only if they changed.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# `pipeline` is flows/pipeline.py: `python flows/sweep.py` and Prefect's loader both put this
# file's folder on sys.path.
from pipeline import REPO, run_stages
from prefect import flow

from segbench.dag import StageFailed, StageGraph, read_graph
from segbench.errors import USER_ERROR_EXIT, SegbenchError

SWEEP_STAGE = "sweep"
PROMOTE_STAGE = "promote"  # consumes the sweep's best trial; optional


def sweep_targets(graph: StageGraph) -> list[str]:
    """The stages this flow asks for: ``sweep``, and ``promote`` if ``dvc.yaml`` has it."""
    if SWEEP_STAGE not in graph.order:
        raise SegbenchError(
            f"dvc.yaml has no stage named {SWEEP_STAGE!r}; its stages are {', '.join(graph.order)}"
        )
    return [s for s in (SWEEP_STAGE, PROMOTE_STAGE) if s in graph.order]


@flow(name="segbench-sweep", log_prints=True)
def sweep(root: str = str(REPO), force: bool = False, ray_address: str | None = None) -> dict:
    """Run the sweep stage of ``root``'s ``dvc.yaml`` and everything it depends on.

    ``force`` re-runs the sweep (and so what follows it) even if DVC says it is up to date; the
    upstream stages still run only if they changed. ``ray_address`` (``ray://host:10001``,
    ``host:6379`` or ``auto``) becomes ``RAY_ADDRESS`` in the stages' environment, so the sweep
    joins that Ray cluster. Returns ``{stage: "ran" | "unchanged" | "up to date"}``.
    """
    graph = read_graph(root)
    stages = graph.select(sweep_targets(graph))
    print(f"stages, in DVC graph order: {', '.join(stages)}")
    env = {"RAY_ADDRESS": ray_address} if ray_address else None
    return run_stages(root, graph, stages, force=[SWEEP_STAGE] if force else (), env=env)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO), help="the DVC repository")
    parser.add_argument("--force", action="store_true", help="sweep even if it is up to date")
    parser.add_argument("--ray-address", help="join this Ray cluster (else a local Ray starts)")
    args = parser.parse_args()
    try:
        sweep_targets(read_graph(args.root))  # a missing stage: one line, not a failed run
        sweep(root=args.root, force=args.force, ray_address=args.ray_address)
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except StageFailed as exc:  # the stage's own message is in the log above; no traceback
        raise SystemExit(f"error: {exc}") from None
