"""``sweep`` and ``deploy`` sections of ``params.yaml``: validated shapes only (no Ray import).

The search space mirrors ``params.yaml``: ``space.train.<key>`` sweeps a key of the ``train``
section, ``space.model.<key>`` a key of the swept entry ``models.<sweep.model>``. Each leaf is a
list (grid: every value; random: a uniform choice) or, for random search, one distribution::

    space:
      model: {rank: [128, 256, 512, 1024]}
      train:
        lr: {loguniform: [1.0e-5, 1.0e-2]}
        batch_size: [2, 4, 8, 16, 32]

Nested (not dotted) keys, so that ``dvc exp run -S 'sweep.space.train.lr=[0.01,0.001]'`` works.
Whether each key exists in training, and whether each value is valid there, is checked against
the rest of ``params.yaml`` by :func:`segbench.sweep.space.check_space`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Random-search distributions: name -> number of bounds. Log-uniform needs low > 0.
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "randint": 2, "lograndint": 2}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AshaConfig(_Section):
    """Asynchronous successive halving: after ``grace_period`` epochs, and at each rung after,
    a trial continues only if its validation Dice is in the top 1/``reduction_factor``."""

    grace_period: int = Field(1, ge=1, description="epochs every trial runs before a stop")
    reduction_factor: float = Field(2.0, gt=1, description="keep the best 1/this at each rung")


class ResourcesConfig(_Section):
    """What one trial reserves; Ray runs as many trials at once as the cluster holds."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial (also its torch threads)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; 0.5 = two trials share one")


class SweepConfig(_Section):
    """``sweep``: Ray Tune over training keys of one ``models`` entry."""

    enabled: bool = Field(False, description="false: the sweep stage writes empty results")
    model: str = Field(
        "sam_lora",
        description="the models entry whose training is swept (named even when disabled: "
        "DVC tracks that entry's params for the sweep stage)",
    )
    search: Literal["grid", "random"] = "grid"
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_samples: int = Field(
        1, ge=1, description="random: trials drawn; grid: repeats of the whole grid"
    )
    epochs: int | None = Field(None, ge=1, description="epochs per trial; null = train.epochs")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="fifo: no early stopping")
    asha: AshaConfig = AshaConfig()
    resources: ResourcesConfig = ResourcesConfig()
    max_concurrent: int = Field(0, ge=0, description="trials at once; 0 = all that fit")
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial")
    seed: int = Field(0, description="seeds random search's draws")
    storage: str | None = Field(
        None,
        description="Ray Tune's results and checkpoints; null = the stage's --state directory "
        "(one machine). A multi-node cluster needs storage every node reaches: a shared "
        "path or an s3://, gs:// URI",
    )

    @field_validator("space")
    @classmethod
    def _sections(cls, space):
        for section, block in space.items():
            if section not in ("train", "model"):
                raise ValueError(
                    f"{section}: the space has two sections, `train` (keys of the train "
                    "section) and `model` (keys of models.<sweep.model>)"
                )
            if not isinstance(block, dict):
                raise ValueError(f"{section}: expected a mapping of keys to values, got {block!r}")
        return space

    @model_validator(mode="after")
    def _leaves(self):
        if self.enabled and not any(self.space.values()):
            raise ValueError(
                "space: the search space is empty; give at least one key, e.g. "
                "space: {train: {lr: [0.001, 0.0001]}}"
            )
        for section, key, leaf in self.leaves():
            where = f"space.{section}.{key}"
            if isinstance(leaf, list):
                if not leaf:
                    raise ValueError(f"{where}: an empty list leaves nothing to try")
                continue
            dist = _distribution(leaf)
            if dist is None:
                raise ValueError(
                    f"{where}: expected a list of values or one of {{{', '.join(DISTRIBUTIONS)}}}"
                    f": [low, high], got {leaf!r}"
                )
            if self.search == "grid":
                raise ValueError(
                    f"{where}: a {dist[0]} distribution needs search: random; a grid takes a "
                    "list of values"
                )
            name, (low, high) = dist
            if not low < high or (name.startswith("log") and low <= 0):
                raise ValueError(f"{where}: {name} needs 0 < low < high (log) or low < high")
        return self

    def leaves(self) -> list[tuple[str, str, Any]]:
        """``[(section, key, list or distribution)]`` in the order written."""
        return [(s, k, v) for s, block in self.space.items() for k, v in block.items()]

    def grid_size(self) -> int:
        """Trials a grid search runs: the product of the list lengths, x ``num_samples``."""
        size = self.num_samples
        for _, _, leaf in self.leaves():
            size *= len(leaf) if isinstance(leaf, list) else 1
        return size


def _distribution(leaf: Any) -> tuple[str, tuple[float, float]] | None:
    if not (isinstance(leaf, dict) and len(leaf) == 1):
        return None
    ((name, bounds),) = leaf.items()
    if name not in DISTRIBUTIONS or not isinstance(bounds, list | tuple) or len(bounds) != 2:
        return None
    if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
        return None
    return name, (float(bounds[0]), float(bounds[1]))


class DeployConfig(_Section):
    """``deploy``: when the Prefect deployment (flows/deploy.py) re-runs the pipeline."""

    cron: str = Field("0 3 * * *", description="cron schedule of the pipeline deployment")
    timezone: str = Field("UTC", description="IANA time zone of the schedule")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value):
        from cronsim import CronSim, CronSimError  # Prefect's own cron parser

        try:
            CronSim(value, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"not a valid cron expression {value!r} ({exc})") from None
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
