"""``models`` and ``ensembles``: one typed entry per model, discriminated by its ``model`` key.

An entry of ``models`` names the registered model it builds with ``model:``; an entry without
that key is the registered model of its own name (``unet: {...}`` is a U-Net, ``sam_box:
{model: sam_zero_shot, ...}`` a zero-shot SAM). Entries are resolved once, at load, into one of
the classes below; everything downstream reads typed fields, never raw dicts.

Each class says what kind of model it is (``kind``): ``torch`` (trained by gradient descent),
``classical`` (fitted in closed form), ``zero_shot`` (used as it comes) or ``ensemble`` (a mix of
trained torch models, fitted by :mod:`segbench.ensemble`). Builders live in
:mod:`segbench.models.registry`, keyed by the same names.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from segbench.config.base import Section
from segbench.config.training import Loss, Optimizer, TrainConfig, merge_train

Kind = Literal["torch", "classical", "zero_shot", "ensemble"]


class Entry(Section):
    """Base of every entry: its kind, and the notes a reader of its numbers must know."""

    kind: ClassVar[Kind]
    model: str

    @property
    def oracle_prompts(self) -> bool:
        """Its prompts are drawn from the reference masks (a perfect user): its test scores
        are not those of a model that segments the image on its own."""
        return False

    @property
    def random_init(self) -> bool:
        """A SAM without a checkpoint: its numbers say nothing about Segment Anything."""
        return False

    @property
    def scratch_decoder(self) -> bool:
        """SAM's mask decoder re-initialised and trained on this data alone (a study's
        setting): the row measures that decoder, not SAM's fine-tuned one."""
        return False

    def notes(self) -> dict[str, bool]:
        return {
            "oracle_prompts": self.oracle_prompts,
            "random_init": self.random_init,
            "scratch_decoder": self.scratch_decoder,
        }

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """The ``train`` section this entry trains with (some entries set their own keys)."""
        return train


class TrainedEntry(Entry):
    """A network trained by gradient descent (``kind = "torch"``).

    ``train`` (optional) sets any key of the ``train`` section for this model alone, e.g.
    ``{epochs: 50, batch_size: 20, devices: 4, lr: 0.0001}`` or ``{plateau: {patience: 5}}``;
    the rest comes from ``train``. The merged configuration is validated as ``train`` is
    (:meth:`train_config`), at load.
    """

    kind: ClassVar[Kind] = "torch"
    from_sweep: bool = Field(description="train with the sweep's best values (stage promote)")
    train: dict[str, Any] | None = Field(
        None, description="keys of the train section set for this model alone"
    )

    @field_validator("train")
    @classmethod
    def _train_keys(cls, value):
        if value is None:
            return value
        unknown = sorted(k for k in value if k not in TrainConfig.model_fields)
        if unknown:
            valid = ", ".join(TrainConfig.model_fields)
            raise ValueError(f"{unknown[0]}: not a key of train; valid: {valid}")
        return value

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """``train`` with this entry's own keys set (raises pydantic's ValidationError for a
        value ``train`` refuses; :class:`~segbench.config.params.Params` names the entry)."""
        return merge_train(train, self.train or {})


class UnetEntry(TrainedEntry):
    """``model: unet``: a segmentation_models_pytorch U-Net."""

    model: Literal["unet"]
    encoder_name: str = Field(description="any segmentation_models_pytorch encoder")
    encoder_weights: str | None = Field(
        description="local path to an encoder state dict (.pth); null = random init"
    )
    encoder_depth: int = Field(ge=3, le=5)
    decoder_channels: tuple[int, ...]

    @model_validator(mode="after")
    def _depth(self):
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(
                f"decoder_channels: needs {self.encoder_depth} entries (encoder_depth), got "
                f"{len(self.decoder_channels)}"
            )
        return self


class AttentionUnetEntry(TrainedEntry):
    """``model: attention_unet``: U-Net with additive attention gates on its skips."""

    model: Literal["attention_unet"]
    encoder_name: str = Field(description="any segmentation_models_pytorch encoder")
    encoder_weights: str | None = Field(
        description="local path to an encoder state dict (.pth); null = random init"
    )
    decoder_channels: tuple[int, ...] = Field(
        min_length=5, max_length=5, description="coarsest stage first"
    )


class SegformerEntry(TrainedEntry):
    """``model: segformer``: a segmentation_models_pytorch SegFormer (MiT encoder, MLP decoder)."""

    model: Literal["segformer"]
    encoder_name: str = Field(description="mit_b0 ... mit_b5, or another smp encoder")
    encoder_weights: str | None = Field(
        description="local path to an encoder state dict (.pth); null = random init"
    )
    decoder_segmentation_channels: int = Field(ge=1)


class OtsuEntry(Entry):
    """``model: otsu``: per-image Otsu threshold, polarity chosen on the training split."""

    kind: ClassVar[Kind] = "classical"
    model: Literal["otsu"]
    smooth_sigma: float = Field(ge=0.0, description="Gaussian pre-smoothing, pixels")


class _EdgeEntry(Entry):
    """An edge baseline (:mod:`segbench.models.edges`): edges at a threshold chosen on the
    validation split, closed, filled and opened into regions; two classes only."""

    kind: ClassVar[Kind] = "classical"
    close_radius: int = Field(
        ge=0, description="disk radius (px) closing contour gaps and opening away open edges"
    )


class SobelEntry(_EdgeEntry):
    """``model: sobel``: Sobel gradient magnitude above a threshold chosen on validation."""

    model: Literal["sobel"]
    smooth_sigma: float = Field(ge=0.0, description="Gaussian pre-smoothing, pixels")


class CannyEntry(_EdgeEntry):
    """``model: canny``: Canny edges, the high hysteresis threshold chosen on validation."""

    model: Literal["canny"]
    sigma: float = Field(gt=0.0, description="Canny's Gaussian smoothing, pixels")
    low_ratio: float = Field(
        gt=0.0, le=1.0, description="hysteresis: low threshold = low_ratio x high threshold"
    )


class SamBase(Section):
    """What every SAM entry shares: which SAM, from which weights, at which input size."""

    variant: Literal["vit_b", "vit_l", "vit_h", "tiny"] = Field(
        description="SAM size; tiny is a 274k-parameter copy for CPU runs and tests"
    )
    checkpoint: str | None = Field(
        description="local official checkpoint (.pth); null = random initialisation"
    )
    sha256: str | None = Field(description="expected sha256 of the checkpoint file")
    init_seed: int = Field(description="seed of the random weights when checkpoint is null")
    image_size: int = Field(ge=16, le=1024, description="encoder input: 1024 or e.g. 512")

    @field_validator("image_size")
    @classmethod
    def _patches(cls, value):
        if value % 16:
            raise ValueError(
                f"must be a multiple of SAM's 16-pixel patches (512, 1024), not {value}"
            )
        return value

    @property
    def random_init(self) -> bool:
        return self.checkpoint is None


class AutoMaskConfig(Section):
    """``auto``: SamAutomaticMaskGenerator's settings (the reference study: points_per_side
    100, pred_iou_thresh 0.90, stability_score_thresh 0.92, crop_n_layers 1,
    crop_n_points_downscale_factor 2, min_mask_region_area 100)."""

    points_per_side: int = Field(ge=1)
    pred_iou_thresh: float = Field(ge=0, le=1)
    stability_score_thresh: float = Field(ge=0, le=1)
    crop_n_layers: int = Field(ge=0)
    crop_n_points_downscale_factor: int = Field(ge=1)
    min_mask_region_area: int = Field(ge=0, description="pixels of the working resolution")
    points_per_batch: int = Field(ge=1)


# A key that only one prompt mode reads: set with that mode, absent with the others (so that a
# value that would change nothing is never silently accepted).
_ZERO_SHOT_MODE_KEYS = {
    "k_points": "points",
    "points_curve": "points",
    "box_jitter": "box",
    "auto": "auto",
}


class SamZeroShotEntry(SamBase, Entry):
    """``model: sam_zero_shot``: SAM as it comes, prompted; one entry per prompt mode."""

    kind: ClassVar[Kind] = "zero_shot"
    model: Literal["sam_zero_shot"]
    embedding_cache: str | None = Field(
        description="directory of cached image embeddings; null = none"
    )
    prompt: Literal["point", "points", "box", "auto"] = Field(
        description="point/points/box are oracle prompts from the reference mask"
    )
    seed: int
    k_points: int | None = Field(None, ge=1, description="prompt: points only")
    box_jitter: int | None = Field(None, ge=0, description="prompt: box only")
    auto: AutoMaskConfig | None = Field(None, description="prompt: auto only")
    points_curve: bool | None = Field(
        None,
        description="prompt: points only; also score 1 .. k_points points per object in the "
        "same pass (the Dice-against-clicks curve)",
    )

    @model_validator(mode="after")
    def _mode_keys(self):
        for key, mode in _ZERO_SHOT_MODE_KEYS.items():
            given = getattr(self, key) is not None
            if given and self.prompt != mode:
                raise ValueError(
                    f"{key}: only prompt: {mode} reads it (this entry has prompt: "
                    f"{self.prompt}); remove the key"
                )
            if not given and self.prompt == mode:
                raise ValueError(f"{key}: prompt: {mode} needs it; add the key")
        return self

    @property
    def oracle_prompts(self) -> bool:
        return self.prompt != "auto"


class _SamTrained(SamBase, TrainedEntry):
    """A SAM whose mask decoder is fine-tuned, with its own training keys (null: the train
    section's), as the SAM paper and the reference LoRA study train it."""

    prompt: Literal["none", "box"] = Field(
        description="none: the decoder as a semantic head (SAMed); box: one box per "
        "ground-truth component (oracle prompts, at evaluation too)",
    )
    box_jitter: int | None = Field(
        None, ge=0, description="prompt: box only; training boxes' sides moved by up to N px"
    )
    loss: Loss | None = Field(description="null = train.loss")
    optimizer: Optimizer | None = Field(description="null = train.optimizer")
    weight_decay: float | None = Field(ge=0, description="null = train.weight_decay")
    iou_loss_weight: float = Field(
        ge=0, description="weight of the IoU-prediction MSE term (SAM paper: 1; 0 = off)"
    )

    @model_validator(mode="after")
    def _jitter(self):
        if self.prompt == "box" and self.box_jitter is None:
            raise ValueError("box_jitter: prompt: box needs it; add the key")
        if self.prompt != "box" and self.box_jitter is not None:
            raise ValueError(
                f"box_jitter: only prompt: box reads it (this entry has prompt: "
                f"{self.prompt}); remove the key"
            )
        return self

    @property
    def oracle_prompts(self) -> bool:
        return self.prompt == "box"

    @model_validator(mode="after")
    def _once(self):
        twice = [k for k in ("loss", "optimizer", "weight_decay") if k in (self.train or {})]
        for key in twice:
            if getattr(self, key) is not None:
                raise ValueError(
                    f"train.{key}: also set as {key} in this entry; set it in one place"
                )
        return self

    def train_config(self, train: TrainConfig) -> TrainConfig:
        own = {k: getattr(self, k) for k in ("loss", "optimizer", "weight_decay")}
        own = {k: v for k, v in own.items() if v is not None}
        return merge_train(train, {**own, **(self.train or {})})


class SamDecoderEntry(_SamTrained):
    """``model: sam_decoder``: SAM's mask decoder fine-tuned, its encoders frozen (so image
    embeddings can be cached)."""

    model: Literal["sam_decoder"]
    embedding_cache: str | None = Field(
        description="directory of cached image embeddings (the encoder is frozen); null = none"
    )
    decoder_init: Literal["checkpoint", "scratch"] = Field(
        description="checkpoint: fine-tune the checkpoint's mask decoder; scratch: train one "
        "re-initialised (seeded by init_seed), the encoders still from the checkpoint"
    )

    @property
    def scratch_decoder(self) -> bool:
        return self.decoder_init == "scratch"


class SamLoraEntry(_SamTrained):
    """``model: sam_lora``: LoRA on the image encoder's attention, trained with the decoder
    (the encoder changes at every step, so nothing can be cached)."""

    model: Literal["sam_lora"]
    rank: int = Field(ge=1, description="LoRA rank (ViT-B's projection width is 768)")

    refused_keys: ClassVar[dict[str, str]] = {
        "embedding_cache": "LoRA trains the image encoder, so its embeddings change at every "
        "step and none can be cached; remove the key"
    }

    alpha: float | None = Field(gt=0, description="scaling alpha / rank; null = rank")
    dropout: float = Field(ge=0, lt=1)
    targets: list[Literal["q", "k", "v"]] = Field(min_length=1, description="projections")
    blocks: list[int] | None = Field(description="encoder blocks to adapt; null = all")
    auto_compare: AutoMaskConfig | None = Field(
        description="null = off; else evaluate also runs SAM's automatic mask generator with "
        "these settings on this LoRA-adapted SAM and on its base SAM (the checkpoint as it "
        "comes: no adapters, its own decoder)",
    )


# Every entry of `models:`, one class per registered model.
MODEL_ENTRIES: tuple[type[Entry], ...] = (
    UnetEntry,
    AttentionUnetEntry,
    SegformerEntry,
    OtsuEntry,
    SobelEntry,
    CannyEntry,
    SamZeroShotEntry,
    SamDecoderEntry,
    SamLoraEntry,
)
ModelEntry = Annotated[Union[MODEL_ENTRIES], Field(discriminator="model")]  # noqa: UP007

# Registered model name -> its entry class (the names builders are registered under).
ENTRY_CLASSES: dict[str, type[Entry]] = {
    cls.model_fields["model"].annotation.__args__[0]: cls for cls in MODEL_ENTRIES
}


class EnsembleEntry(Entry):
    """``ensembles.<name>``: a weighted average of trained members' probabilities."""

    kind: ClassVar[Kind] = "ensemble"
    model: Literal["ensemble"] = "ensemble"  # the section says what it is; never written
    members: list[str] = Field(description="entries of models to average (>= 2)")
    weights: list[float] | None = Field(
        description="fixed weights, one per member; null = chosen on the validation split"
    )
    weight_step: float = Field(gt=0, le=0.5, description="grid step of the weight search")

    @field_validator("members")
    @classmethod
    def _members(cls, value):
        if len(value) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {value}")
        if len(set(value)) != len(value):
            raise ValueError(f"members listed twice: {value}")
        return value

    @field_validator("weight_step")
    @classmethod
    def _step(cls, value):
        if abs(1 / value - round(1 / value)) > 1e-9:
            raise ValueError(f"must divide 1 into equal parts (0.1, 0.05, 0.25, ...), got {value}")
        return value

    @model_validator(mode="after")
    def _weights(self):
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(
                    f"weights: {len(self.weights)} given for {len(self.members)} members"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"weights: must be >= 0 and not all 0, got {self.weights}")
        return self


# What a model card's `entry` may be: a models entry or an ensembles one.
AnyEntry = Annotated[Union[(*MODEL_ENTRIES, EnsembleEntry)], Field(discriminator="model")]


def resolve_entries(value: Any) -> Any:
    """``models`` as written -> each entry with its ``model`` key (the entry's name when
    absent), so that the discriminated union can pick its class. Unknown model names and
    misplaced ensembles get a message that names the entry and lists the valid models."""
    if not isinstance(value, dict):
        return value  # pydantic says what it expected
    if not value:
        raise ValueError("list at least one model, e.g. `otsu: {model: otsu, smooth_sigma: 1.0}`")
    valid = ", ".join(sorted(ENTRY_CLASSES))
    out = {}
    for name, block in value.items():
        block = {} if block is None else block
        if not isinstance(block, dict):
            raise ValueError(f"{name}: expected a mapping, got {block!r}")
        kind = block.get("model", name)
        key = f"{name}.model" if "model" in block else name
        if kind == "ensemble":
            raise ValueError(
                f"{key}: ensembles are not trained; list them under `ensembles:` (e.g. "
                "`ensembles: {uformer: {members: [unet, segformer], weights: null, "
                "weight_step: 0.1}}`)"
            )
        if kind not in ENTRY_CLASSES:
            raise ValueError(
                f"{key}: unknown model {kind!r}; valid: {valid} (an entry with another name "
                "says which it is with `model:`, e.g. `sam_box: {model: sam_zero_shot, ...}`)"
            )
        out[name] = {"model": kind, **block}
    return out
