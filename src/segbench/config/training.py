"""``train``: the optimisation shared by every trained network (an entry may override its loss,
optimiser and weight decay: :meth:`segbench.config.models.Entry.train_config`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from segbench.config.base import Section

LOSSES = ("dice", "bce", "dice_bce", "focal", "focal_dice", "tversky")
OPTIMIZERS = ("adam", "adamw", "sgd")
Loss = Literal["dice", "bce", "dice_bce", "focal", "focal_dice", "tversky"]
Optimizer = Literal["adam", "adamw", "sgd"]


class TverskyConfig(Section):
    alpha: float = Field(ge=0, le=1, description="weight of false positives")
    beta: float = Field(ge=0, le=1, description="weight of false negatives")


class PlateauConfig(Section):
    factor: float = Field(gt=0, lt=1)
    patience: int = Field(ge=0, description="epochs without a better val Dice")


class StepConfig(Section):
    step_size: int = Field(ge=1, description="epochs between drops")
    gamma: float = Field(gt=0, lt=1)


class TrainConfig(Section):
    """``train``: the optimisation, shared by every torch model."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="per process")
    accumulate: int = Field(ge=1, description="batches per optimiser step")
    optimizer: Optimizer
    lr: float = Field(gt=0, le=1)
    weight_decay: float = Field(ge=0)
    momentum: float = Field(ge=0, lt=1, description="sgd only")
    loss: Loss
    tversky: TverskyConfig
    class_weights: list[float] | None = Field(
        description="one loss weight per class (several classes); null = equal"
    )
    scheduler: Literal["none", "plateau", "step", "cosine", "poly"]
    warmup_epochs: int = Field(ge=0, description="linear warm-up before the schedule")
    plateau: PlateauConfig
    step: StepConfig
    poly_power: float = Field(gt=0)
    early_stopping: int = Field(ge=0, description="patience in epochs on val Dice; 0 = off")
    devices: int = Field(ge=1, description="DDP processes (torchrun) on this machine")
    device: Literal["auto", "cpu", "cuda"]
    num_workers: int = Field(ge=0)
    seed: int
    # Each torch model is trained this many times, seeds seed, seed + 1, ...: the report shows
    # the seed-to-seed spread and tests per-image scores averaged over the seeds.
    repeats: int = Field(ge=1, description="trainings per torch model, seeds seed, seed + 1, ...")

    # Removed on 2026-11-29: left set to true it broke every later training and the sweep.
    refused_keys: ClassVar[dict[str, str]] = {
        "resume": "no longer a setting (remove it): a killed training continues by itself "
        "when its checkpoint matches; SEGBENCH_RESUME=0 starts it afresh"
    }

    @model_validator(mode="after")
    def _weights(self):
        if self.class_weights is not None and (
            len(self.class_weights) < 2
            or min(self.class_weights) < 0
            or max(self.class_weights) <= 0
        ):
            raise ValueError(
                "class_weights: one non-negative weight per class (at least two, not all 0), "
                "or null"
            )
        return self

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs: {self.warmup_epochs} leaves no epoch after the warm-up "
                f"(epochs: {self.epochs}); use fewer"
            )
        return self


def merge_train(train: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``train`` with ``overrides`` set, validated as a whole; a nested section (``tversky``,
    ``plateau``, ``step``) takes the keys given and keeps the others."""
    if not overrides:
        return train
    data = train.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainConfig.model_validate(data)
