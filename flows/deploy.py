"""Serve two Prefect deployments: the pipeline on a cron schedule, the sweep on demand.

    prefect server start --host 127.0.0.1                          # in another terminal
    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/deploy.py                                         # deploy.cron of params.yaml
    python flows/deploy.py --cron "30 2 * * 1-5" --timezone Europe/Berlin --targets report

It registers ``segbench-pipeline/scheduled`` (cron schedule) and ``segbench-sweep/on-demand``
(no schedule) with the server at PREFECT_API_URL, then runs until stopped (Ctrl-C), executing
their runs in subprocesses of this process, one at a time: both flows run DVC in the same
repository, and DVC's lock lets only one ``dvc repro`` in at a time.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import httpx
from pipeline import REPO, pipeline
from prefect import serve
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
    # limit=1: one flow run at a time, see the module docstring.
    serve(*deployments(root, schedule, args.targets), limit=1)


if __name__ == "__main__":
    main()
