"""Serve two Prefect deployments: the pipeline on a cron schedule, the sweep on demand.

    prefect server start --host 127.0.0.1                          # in another terminal
    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/deploy.py                                         # deploy.cron of params.yaml
    python flows/deploy.py --cron "30 2 * * 1-5" --timezone Europe/Berlin --targets report

It registers ``segbench-pipeline/scheduled`` (cron schedule) and ``segbench-sweep/on-demand``
(no schedule) with the server at PREFECT_API_URL, then runs until stopped (Ctrl-C), executing
their runs in subprocesses of this process, one at a time: both flows run DVC in the same
repository, and DVC's lock lets only one ``dvc repro`` in at a time. SIGTERM or Ctrl-C stops it
within STOP_GRACE_S seconds, pausing the schedule on the way out while the server answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import httpx
from pipeline import REPO, pipeline
from prefect.runner import Runner
from prefect.schedules import Cron, Schedule
from prefect.settings import get_current_settings
from pydantic import ValidationError
from sweep import sweep

from segbench.config import DeployConfig, load_params
from segbench.dag import read_graph
from segbench.errors import SegbenchError, exit_on_user_error

PIPELINE_DEPLOYMENT = "scheduled"  # segbench-pipeline/scheduled
SWEEP_DEPLOYMENT = "on-demand"  # segbench-sweep/on-demand
HEALTH_TIMEOUT_S = 5.0
# Stopping, Prefect's runner pauses the schedule on the server; with the server gone its client
# retries for a minute or more. Past this many seconds after SIGTERM or Ctrl-C, exit anyway.
# SEGBENCH_DEPLOY_STOP_GRACE_S overrides it (the tests shorten it).
STOP_GRACE_S = float(os.environ.get("SEGBENCH_DEPLOY_STOP_GRACE_S", "8"))

_START_SERVER = (
    "start one with `prefect server start --host 127.0.0.1` (in another terminal), then "
    "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


def check_api(url: str | None, *, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise a :class:`SegbenchError` unless ``url`` (a Prefect API URL, ``http://host:port/api``)
    answers ``GET <url>/health`` within ``timeout`` seconds. Schedules need a real server: the
    ephemeral one that one-off flow runs use lives only as long as its process."""
    if not url:
        raise SegbenchError(
            f"PREFECT_API_URL is not set; a schedule needs a Prefect server: {_START_SERVER}"
        )
    health = f"{url.rstrip('/')}/health"
    try:
        response = httpx.get(health, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SegbenchError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({health}: {reason}); "
            f"{_START_SERVER}"
        ) from None


def cron_schedule(cron: str, timezone: str) -> Schedule:
    """A Prefect schedule from a cron expression (``"0 3 * * *"``: minute hour day month
    weekday) and an IANA time zone (``UTC``, ``Europe/Berlin``); a :class:`SegbenchError` if
    either is invalid."""
    # The deploy section's own validation (cronsim, Prefect's parser), so a bad value fails
    # here rather than when registering, with the same words as in params.yaml.
    try:
        DeployConfig(cron=cron, timezone=timezone)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = err["loc"][0]
        value = cron if field == "cron" else timezone
        why = err["msg"].removeprefix("Value error, ")
        raise SegbenchError(f"--{field} {value!r} is not valid: {why}") from None
    return Cron(cron, timezone=timezone)


def deployments(root: Path, schedule: Schedule, targets: list[str] | None) -> list:
    """The two runner deployments: the pipeline of ``root`` (only ``targets`` and their
    upstream, if given) on ``schedule``, and the sweep with no schedule."""
    return [
        pipeline.to_deployment(
            name=PIPELINE_DEPLOYMENT,
            schedule=schedule,
            parameters={"root": str(root), "targets": targets},
            description=f"The DVC pipeline of {root}; stages DVC finds unchanged are skipped.",
        ),
        sweep.to_deployment(
            name=SWEEP_DEPLOYMENT,
            parameters={"root": str(root)},
            description=f"The Ray Tune sweep of {root}, on demand (-p ray_address=... to join "
            "a Ray cluster, -p force=true to sweep again).",
        ),
    ]


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the DVC repository")
    parser.add_argument("--cron", help='e.g. "0 3 * * *" (default: deploy.cron of params.yaml)')
    parser.add_argument("--timezone", help="IANA name, e.g. UTC (default: deploy.timezone)")
    parser.add_argument(
        "--targets", nargs="+", metavar="STAGE", help="scheduled runs run only these stages"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    defaults = load_params(root / "params.yaml").deploy
    schedule = cron_schedule(args.cron or defaults.cron, args.timezone or defaults.timezone)
    read_graph(root).select(args.targets)  # an unknown stage fails now, not at 3 am
    check_api(get_current_settings().api.url)
    serve_until_stopped(deployments(root, schedule, args.targets))


def _exit_by_deadline(status: int, grace_s: float = STOP_GRACE_S) -> None:
    """Exit with ``status`` in ``grace_s`` seconds unless the process has ended by then."""

    def deadline() -> None:
        time.sleep(grace_s)
        print(
            f"error: Prefect did not shut down within {grace_s:.0f} s (is the server gone?); "
            "exiting without pausing the schedule",
            file=sys.stderr,
            flush=True,
        )
        os._exit(status)

    threading.Thread(target=deadline, name="stop-deadline", daemon=True).start()


class _Runner(Runner):
    """Prefect's runner, whose SIGTERM handling (graceful: stop, pause, exit 0) has a deadline."""

    def handle_sigterm(self, *args, **kwargs) -> None:
        _exit_by_deadline(128 + signal.SIGTERM)
        super().handle_sigterm(*args, **kwargs)


def serve_until_stopped(served: list) -> None:
    """Serve the deployments (flow runs in subprocesses, one at a time: limit=1, see the
    module docstring) until SIGTERM or Ctrl-C; either stops it within STOP_GRACE_S."""
    runner = _Runner(pause_on_shutdown=True, limit=1)
    for deployment in served:
        runner.add_deployment(deployment)

    def on_sigint(signum, frame):
        _exit_by_deadline(128 + signal.SIGINT)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in served)
    print(f"serving {names} (Ctrl-C to stop)", flush=True)
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
