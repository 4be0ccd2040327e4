"""``params.yaml`` loaded once into validated, typed objects.

Every section is a frozen pydantic model with ``extra="forbid"``: an unknown key, a wrong type or
an impossible value stops at load time with a one-line message naming the dotted key, e.g.
``params.yaml: train.lr: Input should be greater than 0 (got -0.1)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segbench.errors import SegbenchError, describe_validation_error
from segbench.models.registry import MODELS, ModelParams, get_spec


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitFractions(Section):
    """Fractions of images per split; they must sum to 1."""

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train: train + val + test must sum to 1, got {total:g}")
        return self


class SyntheticSource(Section):
    """``data.synthetic``: the embedded SEM-like particle generator."""

    n_images: int = Field(40, ge=10, description="at least 10 so every split gets an image")
    height: int = Field(768, ge=64)
    width: int = Field(1024, ge=64)
    n_particles: tuple[int, int] = (40, 140)  # per 1024x768 frame, scaled with image area
    radius: tuple[float, float] = (6.0, 60.0)

    @model_validator(mode="after")
    def _ranges(self):
        for key in ("n_particles", "radius"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi:
                raise ValueError(f"{key}: must be [low, high] with 0 < low <= high, got {[lo, hi]}")
        return self


class DataConfig(Section):
    source: Literal["synthetic"] = "synthetic"
    seed: int = 0
    split: SplitFractions = SplitFractions()
    synthetic: SyntheticSource = SyntheticSource()


class PrepareConfig(Section):
    """``prepare``: how train/val images become square tiles."""

    scale: float = Field(1.0, gt=0, le=1, description="resize factor before tiling; 1 = full res")
    tile_size: int = Field(512, ge=32, description="tile side in pixels, after scaling")
    stride: int = Field(384, ge=1, description="sliding-window step; < tile_size overlaps")
    random_crops: int = Field(4, ge=0, description="extra random crops per image")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.5, ge=0, le=1, description="probability of a vertical flip")
    seed: int = 0

    @model_validator(mode="after")
    def _stride(self):
        if self.tile_size % 32:  # encoders downsample by 32
            raise ValueError(f"tile_size: must be a multiple of 32, got {self.tile_size}")
        if self.stride > self.tile_size:
            raise ValueError(
                f"stride: {self.stride} is larger than tile_size ({self.tile_size}), which "
                "leaves pixels that no tile covers; use stride <= tile_size"
            )
        return self


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["dice", "bce", "dice_bce"] = "dice"
    scheduler: Literal["cosine", "none"] = "cosine"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0)
    seed: int = 0


class EvaluateConfig(Section):
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap fraction")
    threshold: float = Field(0.5, gt=0, lt=1, description="probability -> binary mask")
    batch_size: int = Field(4, ge=1)


class ReportConfig(Section):
    n_examples: int = Field(3, ge=0, description="test images shown per model")


class Params(Section):
    """The whole of ``params.yaml``."""

    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    models: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"otsu": {}, "unet": {}})
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _cross_checks(self):
        syn, prep = self.data.synthetic, self.prepare
        smallest = int(min(syn.height, syn.width) * prep.scale)
        if self.data.source == "synthetic" and prep.tile_size > smallest:
            raise ValueError(
                f"prepare.tile_size: {prep.tile_size} is larger than the images "
                f"({int(syn.height * prep.scale)}x{int(syn.width * prep.scale)} after "
                f"prepare.scale={prep.scale:g}); use at most {smallest}"
            )
        return self

    def model_params(self, name: str) -> ModelParams:
        """The validated params of model ``name`` (``models.<name>``)."""
        return get_spec(name).params(**(self.models.get(name) or {}))


def _check_models(models: dict[str, Any]) -> None:
    if not models:
        raise SegbenchError("params.yaml: models: list at least one model, e.g. `unet: {}`")
    for name, block in models.items():
        if name not in MODELS:
            valid = ", ".join(sorted(MODELS))
            raise SegbenchError(f"params.yaml: models.{name}: unknown model; valid: {valid}")
        if block is not None and not isinstance(block, dict):
            raise SegbenchError(f"params.yaml: models.{name}: expected a mapping, got {block!r}")
        try:
            MODELS[name].params(**(block or {}))
        except ValidationError as exc:
            msg = describe_validation_error(exc, prefix=f"models.{name}")
            raise SegbenchError(f"params.yaml: {msg}") from None


def parse_params(raw: dict[str, Any], *, source: str = "params.yaml") -> Params:
    """Validate a params mapping (as read from YAML); raise :class:`SegbenchError` if it is bad."""
    if not isinstance(raw, dict):
        raise SegbenchError(f"{source}: expected a mapping at the top level")
    try:
        params = Params(**raw)
    except ValidationError as exc:
        # Cross-checks already name their dotted key; field errors get it from pydantic's loc.
        raise SegbenchError(f"{source}: {describe_validation_error(exc)}") from None
    _check_models(params.models)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: no such params file (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SegbenchError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    return parse_params(raw, source=str(path))
