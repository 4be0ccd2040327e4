"""``sweep``: Ray Tune over training keys of one ``models`` entry (validated shapes only).

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
the rest of ``params.yaml`` by :func:`segbench.config.params.check_sweep_values`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segbench.config.base import Section

# Random-search distributions: name -> number of bounds. Log-uniform needs low > 0.
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "randint": 2, "lograndint": 2}

# Training keys a trial must not change: the sweep sets epochs itself (sweep.epochs, the ASHA
# horizon) and Ray places the trial (device, devices).
RESERVED_TRAIN_KEYS = {
    "epochs": "use sweep.epochs (every trial runs the same number of epochs)",
    "devices": "Ray places each trial (sweep.resources); DDP inside a trial is not supported",
    "device": "Ray places each trial (sweep.resources.gpu)",
}


class AshaConfig(Section):
    """Asynchronous successive halving: after ``grace_period`` epochs, and at each rung after,
    a trial continues only if its validation Dice is in the top 1/``reduction_factor``."""

    grace_period: int = Field(ge=1, description="epochs every trial runs before a stop")
    reduction_factor: float = Field(gt=1, description="keep the best 1/this at each rung")


class ResourcesConfig(Section):
    """What one trial reserves; Ray runs as many trials at once as the cluster holds."""

    cpu: float = Field(gt=0, description="CPUs per trial (also its torch threads)")
    gpu: float = Field(ge=0, description="GPUs per trial; 0.5 = two trials share one")


class SweepConfig(Section):
    """``sweep``: Ray Tune over training keys of one ``models`` entry."""

    enabled: bool = Field(description="false: the sweep stage writes empty results")
    model: str | None = Field(
        description="the models entry whose training is swept (may be null when disabled)"
    )
    search: Literal["grid", "random"]
    space: dict[str, dict[str, Any]]
    num_samples: int = Field(ge=1, description="random: trials drawn; grid: repeats of the grid")
    epochs: int | None = Field(ge=1, description="epochs per trial; null = train.epochs")
    scheduler: Literal["asha", "fifo"] = Field(description="fifo: no early stopping")
    asha: AshaConfig
    resources: ResourcesConfig
    max_concurrent: int = Field(ge=0, description="trials at once; 0 = all that fit")
    max_failures: int = Field(ge=0, description="retries of a crashed trial")
    seed: int = Field(description="seeds random search's draws")
    storage: str | None = Field(
        description="Ray Tune's results and checkpoints; null = the stage's --state directory "
        "(one machine). A multi-node cluster needs storage every node reaches: a shared "
        "path or an s3://, gs:// URI",
    )

    @field_validator("space", mode="before")
    @classmethod
    def _sections(cls, space):
        if not isinstance(space, dict):
            return space  # pydantic says what it expected
        for section, block in space.items():
            if section not in ("train", "model"):
                raise ValueError(
                    f"{section}: the space has two sections, `train` (keys of the train "
                    "section) and `model` (keys of models.<sweep.model>)"
                )
            if block is not None and not isinstance(block, dict):
                raise ValueError(f"{section}: expected a mapping of keys to values, got {block!r}")
        return {section: block or {} for section, block in space.items()}

    @model_validator(mode="after")
    def _leaves(self):
        if self.enabled and self.model is None:
            raise ValueError("model: the sweep is enabled, so name the models entry it tunes")
        if self.enabled and not any(self.space.values()):
            raise ValueError(
                "space: the search space is empty; give at least one key, e.g. "
                "space: {train: {lr: [0.001, 0.0001]}}"
            )
        for section, key, leaf in self.leaves():
            where = f"space.{section}.{key}"
            if section == "train" and key in RESERVED_TRAIN_KEYS:
                raise ValueError(f"{where}: not sweepable: {RESERVED_TRAIN_KEYS[key]}")
            if isinstance(leaf, list):
                if not leaf:
                    raise ValueError(f"{where}: an empty list leaves nothing to try")
                continue
            dist = distribution(leaf)
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

    def override_key(self, section: str, key: str) -> str:
        """The :meth:`~segbench.config.params.Params.with_overrides` key of
        ``space.<section>.<key>``: ``models.<sweep.model>.train.lr`` (the swept entry's own
        training keys, so that they win over any it sets itself), ``models.<sweep.model>.rank``."""
        if section == "train":
            return f"models.{self.model}.train.{key}"
        return f"models.{self.model}.{key}"


def distribution(leaf: Any) -> tuple[str, tuple[float, float]] | None:
    """``(name, (low, high))`` if ``leaf`` is ``{name: [low, high]}`` of a known
    distribution, else None."""
    if not (isinstance(leaf, dict) and len(leaf) == 1):
        return None
    ((name, bounds),) = leaf.items()
    if name not in DISTRIBUTIONS or not isinstance(bounds, list | tuple) or len(bounds) != 2:
        return None
    if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
        return None
    return name, (float(bounds[0]), float(bounds[1]))
