"""``params.yaml`` loaded once into validated, typed objects.

Every section is a frozen pydantic model with ``extra="forbid"``: an unknown key, a wrong type or
an impossible value stops at load time with a one-line message naming the dotted key, e.g.
``params.yaml: train.lr: Input should be greater than 0 (got -0.1)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from segbench.errors import SegbenchError, describe_validation_error
from segbench.models.params import ModelParams
from segbench.models.registry import MODELS, EnsembleParams, get_spec, model_notes
from segbench.sweep.config import DeployConfig, SweepConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(Section):
    """``data.split``: fractions of images per split (summing to 1), strata and groups."""

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    group: str | None = Field(
        None,
        description="regex over the file name; its first group (else the whole match) is the "
        "group key, e.g. a patient id, and a group never crosses splits",
    )
    strata: int = Field(3, ge=1, description="foreground-fraction bins among non-empty masks")

    @model_validator(mode="after")
    def _check(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train: train + val + test must sum to 1, got {total:g}")
        if self.group is not None:
            try:
                re.compile(self.group)
            except re.error as exc:
                raise ValueError(f"group: not a valid regular expression ({exc})") from None
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


Range = tuple[float, float]


def _check_range(model: BaseModel, *keys: str) -> None:
    for key in keys:
        lo, hi = getattr(model, key)
        if not 0 < lo <= hi:
            raise ValueError(f"{key}: must be [low, high] with 0 < low <= high, got {[lo, hi]}")


class SyntheticSource(Section):
    """``data.synthetic``: the embedded generators (no network, no files).

    ``particles`` imitates SEM micrographs of powders; ``ultrasound`` imitates breast B-mode
    frames with at most one dark lesion, and some frames with none (empty references).
    """

    domain: Literal["particles", "ultrasound"] = "particles"
    n_images: int = Field(40, ge=10, description="at least 10 so every split gets an image")
    height: int = Field(768, ge=64)
    width: int = Field(1024, ge=64)
    noise: float = Field(1.0, ge=0, description="particles: detector noise, x the default")
    n_particles: tuple[int, int] = (40, 140)  # per 1024x768 frame, scaled with image area
    radius: Range = (6.0, 60.0)
    lesion_probability: float = Field(0.8, ge=0, le=1, description="ultrasound: P(lesion)")
    lesion_radius: Range = (20.0, 90.0)  # ultrasound, pixels in a 512-wide frame
    speckle: float = Field(1.0, ge=0, description="ultrasound: speckle strength, 0 = none")

    @model_validator(mode="after")
    def _ranges(self):
        _check_range(self, "n_particles", "radius", "lesion_radius")
        return self


class FolderSource(Section):
    """``data.folder``: ``<data.path>/<images>/`` and ``<data.path>/<masks>/`` matched by stem."""

    images: str = "images"
    masks: str = "masks"
    mask_suffix: str = Field("", description="mask stem = image stem + suffix, e.g. _mask")


class HfSource(Section):
    """``data.hf``: a Hugging Face dataset by name (hub) or ``data.path`` (saved to disk)."""

    name: str | None = Field(None, description="hub id, e.g. nielsr/breast-cancer")
    revision: str | None = Field(None, description="git revision (tag, branch, commit) on the hub")
    split: str | None = Field(None, description="one split of the dataset; null = all of them")
    image_column: str = "image"
    mask_column: str = "label"
    id_column: str | None = Field(None, description="column naming each row; null = row index")


class MaskConfig(Section):
    """``data.mask``: how stored mask values become foreground.

    By default any non-zero value is foreground ({0,1}, {0,255} and instance-label masks).
    ``value`` keeps one label of a label image; ``threshold`` binarises lossy (JPEG) masks.
    """

    value: int | None = Field(None, ge=0)
    threshold: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one(self):
        if self.value is not None and self.threshold is not None:
            raise ValueError("value: set either data.mask.value or data.mask.threshold, not both")
        return self


class DataConfig(Section):
    source: Literal["synthetic", "folder", "hf"] = "synthetic"
    path: str | None = Field(None, description="folder source: its root; hf: a saved dataset")
    seed: int = Field(0, ge=0)
    split: SplitConfig = SplitConfig()
    mask: MaskConfig = MaskConfig()
    synthetic: SyntheticSource = SyntheticSource()
    folder: FolderSource = FolderSource()
    hf: HfSource = HfSource()

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source == "folder" and not self.path:
            raise ValueError(
                "path: data.source=folder needs data.path, the folder holding "
                f"{self.folder.images}/ and {self.folder.masks}/"
            )
        if self.source == "hf" and not (self.path or self.hf.name):
            raise ValueError(
                "hf.name: data.source=hf needs data.hf.name (a hub dataset) or data.path "
                "(a dataset saved with datasets' save_to_disk)"
            )
        return self


class NormalizeConfig(Section):
    """``prepare.normalize``: how stored intensities become model inputs (one step, per image).

    ``dtype``: [0, dtype max] (255 or 65535); ``minmax``: the image's own min and max;
    ``percentile``: the image's ``percentiles`` (robust to hot pixels; good for 12-bit data
    stored in 16 bits). The range maps to [0, 1] (clipped) and then to ``(x - 0.5) / 0.25``.
    """

    mode: Literal["dtype", "minmax", "percentile"] = "dtype"
    percentiles: Range = (1.0, 99.0)

    @model_validator(mode="after")
    def _pct(self):
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles: need 0 <= low < high <= 100, got {[lo, hi]}")
        return self


class Probability(Section):
    p: float = Field(0.0, ge=0, le=1, description="probability of applying the transform")


class RotateConfig(Probability):
    limit: float = Field(30.0, ge=0, le=180, description="angle drawn from [-limit, limit]")


class BrightnessContrastConfig(Probability):
    brightness: float = Field(0.2, ge=0, le=1, description="shift, x the image mean")
    contrast: float = Field(0.2, ge=0, le=1)


class GammaConfig(Probability):
    limit: tuple[int, int] = (80, 120)  # gamma x 100, as albumentations

    @model_validator(mode="after")
    def _limit(self):
        _check_range(self, "limit")
        return self


class CenterCropConfig(Probability):
    fraction: float = Field(0.8, gt=0, le=1, description="side of the crop, resized back")


class AugmentConfig(Section):
    """``prepare.augment``: albumentations transforms for training tiles, all seeded.

    ``offline`` writes ``factor`` augmented copies of every training tile (plus the original
    if ``keep_original``); ``online`` writes plain tiles and the training Dataset augments
    each tile anew every epoch; ``none`` augments nothing. Masks use nearest interpolation.
    """

    mode: Literal["offline", "online", "none"] = "offline"
    factor: int = Field(1, ge=1, le=100, description="augmented copies per training tile")
    keep_original: bool = False
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.5, ge=0, le=1, description="probability of a vertical flip")
    rotate: RotateConfig = RotateConfig()
    brightness_contrast: BrightnessContrastConfig = BrightnessContrastConfig()
    gamma: GammaConfig = GammaConfig()
    center_crop: CenterCropConfig = CenterCropConfig()


class PrepareConfig(Section):
    """``prepare``: how train/val images become square tiles."""

    scale: float = Field(1.0, gt=0, le=1, description="resize factor before tiling; 1 = full res")
    tile_size: int = Field(512, ge=32, description="tile side in pixels, after scaling")
    stride: int | None = Field(384, ge=1, description="sliding-window step; < tile_size overlaps")
    overlap: float | None = Field(None, ge=0, lt=1, description="instead of stride: a fraction")
    edges: Literal["shift", "reflect"] = Field(
        "shift",
        description="shift: the last window ends flush with the edge; reflect: the image is "
        "reflect-padded so windows step evenly past it",
    )
    random_crops: int = Field(4, ge=0, description="extra random crops per training image")
    crop_min_foreground: float = Field(
        0.0, ge=0, lt=1, description="redraw a crop (up to 20 times) below this foreground"
    )
    normalize: NormalizeConfig = NormalizeConfig()
    augment: AugmentConfig = AugmentConfig()
    workers: int = Field(0, ge=0, description="processes; 0 = one per available core")
    seed: int = 0

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


class TverskyConfig(Section):
    alpha: float = Field(0.3, ge=0, le=1, description="weight of false positives")
    beta: float = Field(0.7, ge=0, le=1, description="weight of false negatives")


class PlateauConfig(Section):
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(3, ge=0, description="epochs without a better val Dice")


class StepConfig(Section):
    step_size: int = Field(10, ge=1, description="epochs between drops")
    gamma: float = Field(0.1, gt=0, lt=1)


class TrainConfig(Section):
    """``train``: the optimisation, shared by every torch model."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1, description="per process")
    accumulate: int = Field(1, ge=1, description="batches per optimiser step")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    loss: Literal["dice", "bce", "dice_bce", "focal", "focal_dice", "tversky"] = "dice"
    tversky: TverskyConfig = TverskyConfig()
    scheduler: Literal["none", "plateau", "step", "cosine", "poly"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up before the schedule")
    plateau: PlateauConfig = PlateauConfig()
    step: StepConfig = StepConfig()
    poly_power: float = Field(0.9, gt=0)
    early_stopping: int = Field(0, ge=0, description="patience in epochs on val Dice; 0 = off")
    resume: bool = Field(False, description="continue from the last completed epoch")
    devices: int = Field(1, ge=1, description="DDP processes (torchrun) on this machine")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs: {self.warmup_epochs} leaves no epoch after the warm-up "
                f"(epochs: {self.epochs}); use fewer"
            )
        return self


class EvaluateConfig(Section):
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap fraction")
    blend: Literal["gaussian", "mean"] = Field(
        "gaussian", description="how overlapping windows' probabilities are combined"
    )
    batch_size: int = Field(4, ge=1, description="windows per forward pass")
    threshold: float | str = Field(
        0.5, description="probability -> mask, or `tune`: the best pooled Dice on validation"
    )
    min_area: int = Field(0, ge=0, description="drop predicted components below this (px)")
    bootstrap_resamples: int = Field(10_000, ge=100, description="for the 95% intervals")
    seed: int = Field(0, description="seeds the bootstrap")

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
    gallery_size: int = Field(
        5, ge=0, description="best and worst test images shown per model (each)"
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level, after Holm")


class Params(Section):
    """The whole of ``params.yaml``."""

    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    models: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"otsu": {}, "unet": {}})
    ensembles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    sweep: SweepConfig = SweepConfig()
    deploy: DeployConfig = DeployConfig()

    @model_validator(mode="after")
    def _cross_checks(self):
        syn, prep = self.data.synthetic, self.prepare
        smallest = int(min(syn.height, syn.width) * prep.scale)
        # Real data may hold images smaller than a tile (they are reflect-padded); generated
        # data has one known size, so a tile larger than it is a mistake worth stopping on.
        if self.data.source == "synthetic" and prep.tile_size > smallest:
            raise ValueError(
                f"prepare.tile_size: {prep.tile_size} is larger than the images "
                f"({int(syn.height * prep.scale)}x{int(syn.width * prep.scale)} after "
                f"prepare.scale={prep.scale:g}); use at most {smallest}"
            )
        return self

    def model_type(self, name: str) -> str:
        """The registered model that entry ``models.<name>`` builds: its ``model`` key, else
        the entry's own name (``unet: {}`` is a U-Net; ``sam_box: {model: sam_zero_shot}``)."""
        return model_type(name, self.models.get(name))

    def model_params(self, name: str) -> ModelParams:
        """The validated params of entry ``name`` (``models.<name>`` without its ``model`` key)."""
        return get_spec(self.model_type(name)).params(**entry_params(self.models.get(name)))

    def ensemble_params(self, name: str) -> EnsembleParams:
        """``ensembles.<name>``, its members resolved to ``{member: that model's params}``."""
        if name not in self.ensembles:
            known = ", ".join(self.ensembles) or "none"
            raise SegbenchError(f"ensembles.{name}: not configured (configured: {known})")
        block = EnsembleParams(**(self.ensembles[name] or {}))
        members = {
            m: {"model": self.model_type(m), **self.model_params(m).model_dump(mode="json")}
            for m in block.members
        }
        return block.model_copy(update={"members": members})


def model_type(name: str, block: Any) -> str:
    """The registered model an entry ``name: block`` of ``models`` (or of an ensemble's resolved
    members) builds: ``block["model"]`` if given, else ``name``."""
    if isinstance(block, dict) and "model" in block:
        return block["model"]
    return name


# Keys of a models entry about the entry rather than the model: which registered model it builds,
# and whether training takes the sweep's best configuration (segbench.sweep.promote).
ENTRY_KEYS = ("model", "from_sweep")


def entry_params(block: Any) -> dict[str, Any]:
    """An entry's params without the keys that describe the entry (``model``, ``from_sweep``)."""
    return {k: v for k, v in (block or {}).items() if k not in ENTRY_KEYS}


def from_sweep(block: Any) -> bool:
    """Whether a models entry trains with the sweep's best configuration."""
    return bool((block or {}).get("from_sweep", False))


def _validated(params_cls: type[ModelParams], block: Any, key: str) -> ModelParams:
    """One ``models.<name>`` / ``ensembles.<name>`` block, validated; errors name ``key``."""
    if block is not None and not isinstance(block, dict):
        raise SegbenchError(f"params.yaml: {key}: expected a mapping, got {block!r}")
    try:
        return params_cls(**(block or {}))
    except ValidationError as exc:
        msg = describe_validation_error(exc, prefix=key)
        raise SegbenchError(f"params.yaml: {msg}") from None


def _check_models(models: dict[str, Any]) -> None:
    if not models:
        raise SegbenchError("params.yaml: models: list at least one model, e.g. `unet: {}`")
    valid = ", ".join(sorted(MODELS))
    for name, block in models.items():
        if block is not None and not isinstance(block, dict):
            raise SegbenchError(f"params.yaml: models.{name}: expected a mapping, got {block!r}")
        kind = model_type(name, block)
        if kind not in MODELS:
            key = f"models.{name}.model" if kind != name else f"models.{name}"
            raise SegbenchError(
                f"params.yaml: {key}: unknown model {kind!r}; valid: {valid} (an entry with "
                "another name says which it is with `model:`, e.g. `sam_box: {model: "
                "sam_zero_shot, prompt: box}`)"
            )
        if MODELS[kind].kind == "ensemble":
            raise SegbenchError(
                f"params.yaml: models.{name}: ensembles are not trained; list them under "
                "`ensembles:` (e.g. `ensembles: {uformer: {members: [unet, segformer]}}`)"
            )
        _validated(MODELS[kind].params, entry_params(block), f"models.{name}")
        if not isinstance((block or {}).get("from_sweep", False), bool):
            raise SegbenchError(
                f"params.yaml: models.{name}.from_sweep: expected true or false, got "
                f"{block['from_sweep']!r}"
            )


def _check_ensembles(params: Params) -> None:
    for name, block in params.ensembles.items():
        if name in params.models:
            raise SegbenchError(
                f"params.yaml: ensembles.{name}: the name is also under models; an ensemble "
                "needs a name of its own (its results go to eval/<name>)"
            )
        checked = _validated(EnsembleParams, block, f"ensembles.{name}")
        missing = [m for m in checked.members if m not in params.models]
        trained = ", ".join(m for m in params.models if _kind(params, m) == "torch")
        if missing:
            raise SegbenchError(
                f"params.yaml: ensembles.{name}.members: {', '.join(missing)} not under models "
                f"(nothing trains it); add it there or choose from: {trained or 'none'}"
            )
        for member in checked.members:
            if _kind(params, member) != "torch":
                raise SegbenchError(
                    f"params.yaml: ensembles.{name}.members: {member} is a "
                    f"{_kind(params, member)} model: its 0/1 masks carry no probability to "
                    f"average; ensemble trained networks ({trained or 'none'})"
                )
            block = params.model_params(member).model_dump()
            if model_notes(params.model_type(member), block)["oracle_prompts"]:
                raise SegbenchError(
                    f"params.yaml: ensembles.{name}.members: {member} takes its prompts from "
                    "the reference masks, which an ensemble's images do not have; use a "
                    "promptless member (prompt: none)"
                )


def _kind(params: Params, name: str) -> str:
    return MODELS[params.model_type(name)].kind


def parse_params(
    raw: dict[str, Any], *, source: str = "params.yaml", check_sweep: bool = True
) -> Params:
    """Validate a params mapping (as read from YAML); raise :class:`SegbenchError` if it is bad.

    ``check_sweep=False`` skips checking the sweep's space against training, which is how each
    of its values is itself checked (a trial's params).
    """
    if not isinstance(raw, dict):
        raise SegbenchError(f"{source}: expected a mapping at the top level")
    try:
        params = Params(**raw)
    except ValidationError as exc:
        # Cross-checks already name their dotted key; field errors get it from pydantic's loc.
        raise SegbenchError(f"{source}: {describe_validation_error(exc)}") from None
    _check_models(params.models)
    _check_ensembles(params)
    if check_sweep:
        _check_sweep(params, raw)
    return params


def _check_sweep(params: Params, raw: dict[str, Any]) -> None:
    from segbench.sweep.space import check_space

    check_space(params, raw)
    for name, block in params.models.items():
        if from_sweep(block) and (name != params.sweep.model or not params.sweep.enabled):
            tuned = f"tunes {params.sweep.model}" if params.sweep.enabled else "is off (enabled)"
            raise SegbenchError(
                f"params.yaml: models.{name}.from_sweep: the sweep {tuned} (sweep.model); "
                f"set sweep.model: {name} to tune this entry, or remove from_sweep"
            )


def load_raw(path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml`` as a plain mapping, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: no such params file (run from the repository root)")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SegbenchError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    return parse_params(load_raw(path), source=str(path))
