"""``evaluate`` and ``report``: how test images are predicted and scored, and how the report
compares the models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from segbench.config.base import Section


class ObjectsConfig(Section):
    """Object-level evaluation of two-class tasks (:mod:`segbench.objects`)."""

    split: Literal["none", "watershed"] = Field(
        description="objects: connected components, or components split at the necks of a "
        "distance-transform watershed (touching particles)"
    )
    min_distance: int = Field(ge=1, description="watershed: least distance between centres, px")
    iou: float = Field(ge=0.5, lt=1, description="a predicted and a reference object match above")


class EvaluateConfig(Section):
    overlap: float = Field(ge=0, lt=1, description="sliding-window overlap fraction")
    blend: Literal["gaussian", "mean"] = Field(
        description="how overlapping windows' probabilities are combined"
    )
    batch_size: int = Field(ge=1, description="windows per forward pass")
    threshold: float | Literal["tune"] = Field(
        description="probability -> mask, or `tune`: the best mean per-image Dice (all images) on "
        "validation"
    )
    min_area: int = Field(ge=0, description="drop predicted components below this (px)")
    tta: Literal["none", "flips", "d4"] = Field(
        description="test-time augmentation: probabilities averaged over flips or the 8 "
        "dihedral views"
    )
    objects: ObjectsConfig
    bootstrap_resamples: int = Field(ge=100, description="for the 95% intervals")
    seed: int = Field(description="seeds the bootstrap")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value):
        if value == "tune":
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or not 0 < number < 1:
            raise ValueError(
                f"must be a number between 0 and 1 (exclusive) or 'tune', got {value!r}"
            )
        return number


class RegistryConfig(Section):
    """The MLflow model registry entry the report stage keeps (:mod:`segbench.registry`)."""

    enabled: bool = Field(description="register the reference model and move the alias to it")
    name: str | None = Field(
        min_length=1, description="registered model name; null = segbench-<dataset>"
    )
    alias: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", description="the alias the reference model holds"
    )

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        # MLflow reserves "latest" and version-like aliases ("v3") for itself.
        if value.lower() == "latest" or (value[:1] in "vV" and value[1:].isdigit()):
            raise ValueError(f"{value!r} is reserved by MLflow; choose another, e.g. champion")
        return value


class ReportConfig(Section):
    gallery_size: int = Field(ge=0, description="best and worst test images shown per model")
    alpha: float = Field(gt=0, lt=1, description="significance level, after Holm")
    registry: RegistryConfig
