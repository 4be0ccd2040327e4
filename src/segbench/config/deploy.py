"""``deploy``: when the Prefect deployment (``flows/deploy.py``) re-runs the pipeline.

The cron expression is checked when params.yaml loads (with cronsim, a small standard cron
parser), so a typo stops there rather than at 3 am; Prefect parses it again when
``flows/deploy.py`` registers the deployment.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from segbench.config.base import Section


class DeployConfig(Section):
    cron: str = Field(description="cron schedule of the pipeline deployment")
    timezone: str = Field(description="IANA time zone of the schedule")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value):
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(
                f"not a valid cron expression {value!r} ({exc}); five fields, minute hour day "
                'month weekday, e.g. "0 3 * * *"'
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; e.g. UTC, Europe/Berlin") from None
        return value
