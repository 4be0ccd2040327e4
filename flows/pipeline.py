"""Prefect flow: run the DVC pipeline's stages as Prefect tasks, in DVC's own graph order.

    python flows/pipeline.py            # offline, on Prefect's ephemeral server
    python flows/pipeline.py --force    # re-run every stage even if DVC thinks it is up to date

The stage graph is read from ``dvc.yaml`` through DVC; this file declares no DAG of its own.
Each task is ``dvc repro --single-item <stage>``, with retries for transient failures (but not
for user errors such as bad params, which would fail the same way again).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server's default 20 s start-up limit is too short on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task

from segbench.dag import StageFailed, metrics_show, repro_stage, stage_order

REPO = Path(__file__).resolve().parents[1]


def _retry_unless_user_error(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return not (isinstance(exc, StageFailed) and exc.user_error)


@task(
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_user_error,
    task_run_name="{stage}",
)
def run_stage(stage: str, root: str, force: bool = False) -> str:
    """One DVC stage; returns DVC's output (also in the task's logs)."""
    result = repro_stage(stage, root, force=force)
    get_run_logger().info(result.output.strip() or f"{stage}: up to date")
    return result.output


@flow(name="segbench-pipeline", log_prints=True)
def pipeline(root: str = str(REPO), force: bool = False) -> dict[str, dict]:
    """Run every stage in graph order; return (and print) the DVC metrics of the workspace."""
    stages = stage_order(root)
    print(f"stages, in DVC graph order: {', '.join(stages)}")
    for stage in stages:
        run_stage(stage, root, force)
    metrics = metrics_show(root)
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
    args = parser.parse_args()
    try:
        pipeline(root=args.root, force=args.force)
    except StageFailed as exc:  # the stage's own message is in the log above; no traceback
        raise SystemExit(f"error: {exc}") from None
