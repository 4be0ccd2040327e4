"""The params block of every registered model: one pydantic class per model, validated at load.

Cheap to import (no torch): :mod:`segbench.config` validates ``params.yaml``'s ``models`` section
with these before anything heavy is loaded. Unknown keys are errors (``extra="forbid"``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelParams(BaseModel):
    """Base of every model's params block: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UnetParams(ModelParams):
    """``models.unet``: a segmentation_models_pytorch U-Net."""

    encoder_name: str = Field("resnet18", description="any segmentation_models_pytorch encoder")
    encoder_weights: str | None = Field(
        None, description="local path to an encoder state dict (.pth); null = random init"
    )
    encoder_depth: int = Field(5, ge=3, le=5)
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    in_channels: int = Field(1, ge=1, le=4)


class AttentionUnetParams(ModelParams):
    """``models.attention_unet``: U-Net with additive attention gates on its skips (Oktay 2018)."""

    encoder_name: str = Field("resnet18", description="any segmentation_models_pytorch encoder")
    encoder_weights: str | None = Field(
        None, description="local path to an encoder state dict (.pth); null = random init"
    )
    decoder_channels: tuple[int, ...] = Field(
        (256, 128, 64, 32, 16), min_length=5, max_length=5, description="coarsest stage first"
    )
    in_channels: int = Field(1, ge=1, le=4)


class SegformerParams(ModelParams):
    """``models.segformer``: a segmentation_models_pytorch SegFormer (MiT encoder, MLP decoder)."""

    encoder_name: str = Field("mit_b0", description="mit_b0 ... mit_b5, or another smp encoder")
    encoder_weights: str | None = Field(
        None, description="local path to an encoder state dict (.pth); null = random init"
    )
    decoder_segmentation_channels: int = Field(256, ge=1)
    in_channels: int = Field(1, ge=1, le=4)


class SamBaseParams(ModelParams):
    """What every SAM entry shares: which SAM, from which weights, at which input size."""

    variant: Literal["vit_b", "vit_l", "vit_h", "tiny"] = Field(
        "tiny", description="SAM size; tiny is a 274k-parameter copy for CPU runs and tests"
    )
    checkpoint: str | None = Field(
        None, description="local official checkpoint (.pth); null = random initialisation"
    )
    sha256: str | None = Field(None, description="expected sha256 of the checkpoint file")
    init_seed: int = Field(0, description="seed of the random weights when checkpoint is null")
    image_size: int = Field(1024, ge=16, le=1024, description="encoder input: 1024 or 512")
    embedding_cache: str | None = Field(
        ".cache/sam_embeddings",
        description="directory of cached image embeddings (frozen encoder only); null = none",
    )

    @field_validator("image_size")
    @classmethod
    def _patches(cls, value):
        if value % 16:
            raise ValueError(
                f"must be a multiple of SAM's 16-pixel patches (512, 1024), not {value}"
            )
        return value


class AutoMaskParams(ModelParams):
    """``auto``: SamAutomaticMaskGenerator settings; defaults are the reference study's."""

    points_per_side: int = Field(100, ge=1)
    pred_iou_thresh: float = Field(0.90, ge=0, le=1)
    stability_score_thresh: float = Field(0.92, ge=0, le=1)
    crop_n_layers: int = Field(1, ge=0)
    crop_n_points_downscale_factor: int = Field(2, ge=1)
    min_mask_region_area: int = Field(100, ge=0, description="pixels of the working resolution")
    points_per_batch: int = Field(64, ge=1)


class SamZeroShotParams(SamBaseParams):
    """``model: sam_zero_shot``: SAM as it comes, prompted; one entry per prompt mode."""

    prompt: Literal["point", "points", "box", "auto"] = Field(
        "box", description="point/points/box are oracle prompts from the reference mask"
    )
    k_points: int = Field(3, ge=1, description="points per component (prompt: points)")
    box_jitter: int = Field(0, ge=0, description="box sides moved by up to this many pixels")
    seed: int = 0
    auto: AutoMaskParams = AutoMaskParams()


class SamParams(SamBaseParams):
    """``models.sam_decoder``: SAM's mask decoder fine-tuned, encoder and prompt encoder frozen."""

    image_size: int = Field(512, ge=16, le=1024, description="encoder input: 1024 or 512")
    in_channels: int = Field(1, ge=1, le=3, description="1 (grey, repeated to RGB) or 3")
    prompt: Literal["none", "box"] = Field(
        "none",
        description="none: the decoder as a semantic head (SAMed); box: one box per "
        "ground-truth component (oracle prompts, at evaluation too)",
    )
    box_jitter: int = Field(0, ge=0, description="training boxes' sides moved by up to N px")
    # Training keys a SAM entry sets for itself (null: the train section's), as the SAM paper
    # and the reference LoRA study train it: AdamW with weight decay.
    loss: Literal["focal_dice", "dice_bce"] | None = Field(
        "focal_dice", description="SAM paper's 20:1 focal:dice, or dice + CE; null = train.loss"
    )
    optimizer: Literal["adam", "adamw", "sgd"] | None = Field("adamw", description="null = train's")
    weight_decay: float | None = Field(0.01, ge=0, description="null = train.weight_decay")
    iou_loss_weight: float = Field(
        1.0, ge=0, description="weight of the IoU-prediction MSE term (SAM paper: 1; 0 = off)"
    )


class SamLoraParams(SamParams):
    """``models.sam_lora``: LoRA on the image encoder's attention, trained with the decoder."""

    rank: int = Field(4, ge=1, description="LoRA rank (ViT-B's projection width is 768)")
    alpha: float | None = Field(None, gt=0, description="scaling alpha / rank; null = rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[Literal["q", "k", "v"]] = Field(
        default_factory=lambda: ["q", "v"], min_length=1, description="projections to adapt"
    )
    blocks: list[int] | None = Field(None, description="encoder blocks to adapt; null = all")
    embedding_cache: str | None = Field(None, description="must stay null: see below")

    @field_validator("embedding_cache")
    @classmethod
    def _no_cache(cls, value):
        if value is not None:
            raise ValueError(
                "LoRA trains the image encoder, so its embeddings change at every step and "
                "none can be cached; remove the key"
            )
        return value


class OtsuParams(ModelParams):
    """``models.otsu``: per-image Otsu threshold, polarity chosen on the training split."""

    smooth_sigma: float = Field(1.0, ge=0.0, description="Gaussian pre-smoothing, pixels")


# Keys of a model's params block that override the train section for that model alone.
TRAIN_OVERRIDES = ("loss", "optimizer", "weight_decay")


def train_overrides(params: ModelParams) -> dict[str, Any]:
    """The train-section keys ``params`` sets for its model (those not null)."""
    return {k: getattr(params, k) for k in TRAIN_OVERRIDES if getattr(params, k, None) is not None}
