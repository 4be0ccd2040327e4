"""Prefect flow: run the DVC pipeline's stages as Prefect tasks, in DVC's own graph order.

    python flows/pipeline.py                     # offline, on Prefect's ephemeral server
    python flows/pipeline.py --targets prepare   # only `prepare` and what it depends on
    python flows/pipeline.py --force             # re-run stages even if they are up to date

The stage graph is read from ``dvc.yaml`` through DVC; this file declares no DAG of its own.
DVC's status is computed once, in this process: a stage runs (as a task, ``dvc repro
--single-item <stage>``) only if DVC says it changed or a stage upstream of it ran in this flow
run, so a run that finds nothing changed takes seconds. Tasks retry transient failures, but not
user errors such as bad params, which would fail the same way again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Collection
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server's default 20 s start-up limit is too short on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task
from prefect.exceptions import FailedRun
from prefect.states import Failed

from segbench.dag import (
    StageFailed,
    StageGraph,
    changed_stages,
    metrics_show,
    read_graph,
    repro_stage,
    repro_stages,
)
from segbench.errors import USER_ERROR_EXIT, SegbenchError

REPO = Path(__file__).resolve().parents[1]


class _ChosenFailure(logging.Filter):
    """Prefect's engine logs a traceback for a deployment's flow run that ends Failed even when
    the flow chose that state (FailedRun) after logging the reason in one line; drop that one
    record. Flows that raise (a stage that failed) keep Prefect's log as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, FailedRun)


# Loaded before the engine runs the flow (a served run imports this file first).
logging.getLogger("prefect.flow_runs").addFilter(_ChosenFailure())


def _retry_unless_user_error(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return not (isinstance(exc, StageFailed) and exc.user_error)


@task(
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_user_error,
    task_run_name="{stage}",
)
def run_stage(stage: str, root: str, force: bool = False, env: dict[str, str] | None = None) -> str:
    """One DVC stage; returns DVC's output (also in the task's logs). ``env`` is added to the
    stage command's environment."""
    result = repro_stage(stage, root, force=force, env=env)
    get_run_logger().info(result.output.strip() or f"{stage}: up to date")
    return result.output


def run_stages(
    root: str,
    graph: StageGraph,
    stages: list[str],
    *,
    force: Collection[str] = (),
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Run ``stages`` (already in graph order) where DVC's status says they changed, or a stage
    upstream of them ran, or they are in ``force``; ``{stage: "ran" | "unchanged" | "up to
    date"}`` (see :func:`segbench.dag.repro_stages`). Call inside a flow."""
    logger = get_run_logger()
    changed = changed_stages(root, [s for s in stages if s not in force])
    logger.info(f"DVC status: {len(changed)} of {len(stages)} stages changed")
    outcome = repro_stages(
        graph,
        stages,
        changed=changed,
        force=force,
        run=lambda stage, forced: run_stage(stage, root, forced, env),
        log=logger.info,
    )
    ran = [s for s, what in outcome.items() if what == "ran"]
    logger.info(f"ran {len(ran)} of {len(stages)} stages: {', '.join(ran) or 'none'}")
    return outcome


@flow(name="segbench-pipeline", log_prints=True)
def pipeline(
    root: str = str(REPO), force: bool = False, targets: list[str] | None = None
) -> dict[str, dict]:
    """Run the stages of ``root``'s ``dvc.yaml`` (only ``targets`` and what they depend on, if
    given) in graph order; return (and print) the DVC metrics of the workspace,
    ``{metrics file: {name: value}}``. Unknown targets (a deployment run's parameters are not
    checked by the command line) fail the run with one line in its log."""
    graph = read_graph(root)
    try:
        stages = graph.select(targets)
    except SegbenchError as exc:
        get_run_logger().error(f"error: {exc}")
        return Failed(message=str(exc))
    print(f"stages, in DVC graph order: {', '.join(stages)}")
    run_stages(root, graph, stages, force=stages if force else ())
    metrics = metrics_show(root)
    if metrics:
        print("test metrics (dvc metrics show):\n" + format_metrics(metrics))
    return metrics


def format_metrics(metrics: dict[str, dict], keys=("dice", "iou", "pixel_accuracy")) -> str:
    """A plain table: one row per metrics file, the headline metrics as columns."""
    lines = [f"{'metrics file':40s} " + " ".join(f"{k:>15s}" for k in keys)]
    for path, values in sorted(metrics.items()):
        cells = (
            f"{values[k]:15.4f}" if isinstance(values.get(k), float) else f"{'n/a':>15s}"
            for k in keys
        )
        lines.append(f"{path:40s} " + " ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO), help="the DVC repository")
    parser.add_argument("--force", action="store_true", help="re-run up-to-date stages too")
    parser.add_argument(
        "--targets", nargs="+", metavar="STAGE", help="run only these stages and their upstream"
    )
    args = parser.parse_args()
    try:
        # Checked before the flow starts, so a typo is one line rather than a failed flow run.
        read_graph(args.root).select(args.targets)
        pipeline(root=args.root, force=args.force, targets=args.targets)
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except StageFailed as exc:  # the stage's own message is in the log above; no traceback
        raise SystemExit(f"error: {exc}") from None
