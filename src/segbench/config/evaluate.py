"""``evaluate`` and ``report``: how test images are predicted and scored, and how the report
compares the models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from segbench.config.base import Section


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


class ReportConfig(Section):
    gallery_size: int = Field(ge=0, description="best and worst test images shown per model")
    alpha: float = Field(gt=0, lt=1, description="significance level, after Holm")
