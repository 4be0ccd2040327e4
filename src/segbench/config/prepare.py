"""``prepare``: how train/val images become square tiles, how intensities are normalised, and
how training tiles are augmented."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from segbench.config.base import Range, Section, check_range


class NormalizeConfig(Section):
    """``prepare.normalize``: how stored intensities become model inputs (one step, per image).

    ``dtype``: [0, dtype max] (255 or 65535); ``minmax``: the image's own min and max;
    ``percentile``: the image's ``percentiles`` (robust to hot pixels; good for 12-bit data
    stored in 16 bits). The range maps to [0, 1] (clipped) and then to ``(x - 0.5) / 0.25``.
    """

    mode: Literal["dtype", "minmax", "percentile"]
    percentiles: Range

    @model_validator(mode="after")
    def _pct(self):
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles: need 0 <= low < high <= 100, got {[lo, hi]}")
        return self


class Probability(Section):
    p: float = Field(ge=0, le=1, description="probability of applying the transform")


class RotateConfig(Probability):
    limit: float = Field(ge=0, le=180, description="angle drawn from [-limit, limit]")


class BrightnessContrastConfig(Probability):
    brightness: float = Field(ge=0, le=1, description="shift, x the image mean")
    contrast: float = Field(ge=0, le=1)


class GammaConfig(Probability):
    limit: tuple[int, int]  # gamma x 100, as albumentations

    @model_validator(mode="after")
    def _limit(self):
        check_range(self, "limit")
        return self


class ColorJitterConfig(Probability):
    """Hue and saturation jitter: colour (rgb) data only; grey data is left untouched."""

    hue: float = Field(ge=0, le=0.5, description="hue shift, fraction of the colour wheel")
    saturation: float = Field(ge=0, le=1, description="saturation factor range 1 +- this")


class CenterCropConfig(Probability):
    fraction: float = Field(gt=0, le=1, description="side of the crop, resized back")


class AugmentConfig(Section):
    """``prepare.augment``: albumentations transforms for training tiles, all seeded.

    ``offline`` writes ``factor`` augmented copies of every training tile (plus the original
    if ``keep_original``); ``online`` writes plain tiles and the training Dataset augments
    each tile anew every epoch; ``none`` augments nothing. Masks use nearest interpolation.
    """

    mode: Literal["offline", "online", "none"]
    factor: int = Field(ge=1, le=100, description="augmented copies per training tile")
    keep_original: bool
    hflip: float = Field(ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(ge=0, le=1, description="probability of a vertical flip")
    rotate: RotateConfig
    brightness_contrast: BrightnessContrastConfig
    gamma: GammaConfig
    color_jitter: ColorJitterConfig
    center_crop: CenterCropConfig


class PrepareConfig(Section):
    """``prepare``: how train/val images become square tiles."""

    scale: float = Field(gt=0, le=1, description="resize factor before tiling; 1 = full res")
    tile_size: int = Field(ge=32, description="tile side in pixels, after scaling")
    stride: int | None = Field(ge=1, description="sliding-window step; < tile_size overlaps")
    overlap: float | None = Field(ge=0, lt=1, description="instead of stride: a fraction")
    edges: Literal["shift", "reflect"] = Field(
        description="shift: the last window ends flush with the edge; reflect: the image is "
        "reflect-padded so windows step evenly past it",
    )
    random_crops: int = Field(ge=0, description="extra random crops per training image")
    crop_min_foreground: float = Field(
        ge=0, lt=1, description="redraw a crop (up to 20 times) below this foreground"
    )
    normalize: NormalizeConfig
    augment: AugmentConfig
    workers: int = Field(ge=0, description="processes; 0 = one per available core")
    seed: int

    @model_validator(mode="after")
    def _stride(self):
        if self.tile_size % 32:  # encoders downsample by 32
            raise ValueError(f"tile_size: must be a multiple of 32, got {self.tile_size}")
        if self.overlap is not None and self.stride is not None:
            raise ValueError(
                "overlap: set either prepare.stride or prepare.overlap (the other to null)"
            )
        if self.overlap is None and self.stride is None:
            raise ValueError("stride: set prepare.stride or prepare.overlap")
        if self.step > self.tile_size:
            raise ValueError(
                f"stride: {self.step} is larger than tile_size ({self.tile_size}), which "
                "leaves pixels that no tile covers; use stride <= tile_size"
            )
        return self

    @property
    def step(self) -> int:
        """The sliding-window step in pixels, from ``stride`` or ``overlap``."""
        if self.stride is not None:
            return self.stride
        return max(1, round(self.tile_size * (1.0 - self.overlap)))
