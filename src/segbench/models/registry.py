"""The model registry: one name -> how to validate its params, build it, and whether it trains.

Importing this module is cheap (no torch): ``segbench.config`` uses it to validate the ``models``
section of ``params.yaml`` before anything heavy is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segbench.errors import SegbenchError, describe_validation_error


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


class EnsembleParams(ModelParams):
    """``ensembles.<name>``: a weighted average of trained members' probabilities.

    ``members`` is a list of model names (as in ``params.yaml``) or, once resolved against the
    ``models`` section, a mapping of name -> that model's params (as saved in ``config.json``).
    """

    members: list[str] | dict[str, dict[str, Any]] = Field(
        default_factory=lambda: ["unet", "segformer"],
        description="trained models to average (>= 2)",
    )
    weights: list[float] | None = Field(
        None, description="fixed weights, one per member; null = chosen on the validation split"
    )
    weight_step: float = Field(
        0.1, gt=0, le=0.5, description="grid step of the weight search on the simplex"
    )

    @field_validator("members")
    @classmethod
    def _members(cls, value):
        names = list(value)
        if len(names) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"members listed twice: {names}")
        # Names are entries of `models` (checked against it by segbench.config); once resolved,
        # each block says which registered model it is (its `model` key, else its name).
        if isinstance(value, dict):
            for name, block in value.items():
                kind = (block or {}).get("model", name)
                spec = MODELS.get(kind)
                if spec is None:
                    valid = ", ".join(n for n, s in MODELS.items() if s.kind == "torch")
                    raise ValueError(f"unknown model {kind!r}; valid members: {valid}")
                if spec.kind != "torch":
                    raise ValueError(
                        f"{name} is a {spec.kind} model: its 0/1 masks carry no probability "
                        "to average; ensemble trained networks"
                    )
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


# Keys of a model's params block that override the train section for that model alone.
TRAIN_OVERRIDES = ("loss", "optimizer", "weight_decay")


def train_overrides(params: ModelParams) -> dict[str, Any]:
    """The train-section keys ``params`` sets for its model (those not null)."""
    return {k: getattr(params, k) for k in TRAIN_OVERRIDES if getattr(params, k, None) is not None}


@dataclass(frozen=True)
class ModelSpec:
    """How one registered model is validated and built.

    ``kind`` is ``"torch"`` for models trained by gradient descent (``build`` returns an
    ``nn.Module`` mapping ``(N, C, H, W)`` float images, C = ``in_channels`` (1 for our data),
    H and W multiples of 32, to ``(N, 1, H, W)`` logits);
    ``"classical"`` for models fitted in closed form (``build`` returns an object with
    ``fit``/``predict``/``state_dict``/``load_state_dict``); ``"ensemble"`` for
    combinations of trained torch models (``build`` returns an ``nn.Module`` like a torch model's;
    it is fitted by :mod:`segbench.ensemble`, not by the training loop); ``"zero_shot"`` for
    models used as they come (``build`` returns an object with ``predict(rgb, reference)``, see
    :class:`segbench.sam.prompted.PromptedSam`; nothing is trained or saved but the config).
    """

    name: str
    params: type[ModelParams]
    kind: Literal["torch", "classical", "zero_shot", "ensemble"]
    build: Callable[..., Any]


def _build_unet(**kw):
    from segbench.models.smp_models import build_unet

    return build_unet(**kw)


def _build_attention_unet(**kw):
    from segbench.models.attention_unet import build_attention_unet

    return build_attention_unet(**kw)


def _build_segformer(**kw):
    from segbench.models.smp_models import build_segformer

    return build_segformer(**kw)


def _build_sam_decoder(
    *,
    variant,
    checkpoint,
    sha256,
    init_seed,
    image_size,
    in_channels,
    embedding_cache,
    prompt,
    box_jitter,
    loss,
    optimizer,
    weight_decay,
    iou_loss_weight,
):
    from segbench.sam.build import build_sam
    from segbench.sam.segmenter import SamSegmenter

    sam = build_sam(
        variant, image_size=image_size, checkpoint=checkpoint, sha256=sha256, init_seed=init_seed
    )
    model = SamSegmenter(
        sam.train(), prompt=prompt, box_jitter=box_jitter, iou_loss_weight=iou_loss_weight
    )
    if embedding_cache:
        model.use_cache(embedding_cache)
    return model


def _build_sam_zero_shot(
    *,
    variant,
    checkpoint,
    sha256,
    init_seed,
    image_size,
    embedding_cache,
    prompt,
    k_points,
    box_jitter,
    seed,
    auto,
):
    from segbench.sam.build import build_sam
    from segbench.sam.prompted import PromptedSam

    sam = build_sam(
        variant, image_size=image_size, checkpoint=checkpoint, sha256=sha256, init_seed=init_seed
    )
    return PromptedSam(
        sam,
        prompt=prompt,
        k_points=k_points,
        box_jitter=box_jitter,
        seed=seed,
        auto=auto,
        embedding_cache=embedding_cache,
    )


def _build_sam_lora(*, rank, alpha, dropout, targets, blocks, **sam_params):
    from segbench.sam.lora import apply_lora

    model = _build_sam_decoder(**sam_params)
    apply_lora(model.sam, rank=rank, alpha=alpha, dropout=dropout, targets=targets, blocks=blocks)
    return model


def _build_otsu(**kw):
    from segbench.models.otsu import OtsuThreshold

    return OtsuThreshold(**kw)


def _build_ensemble(*, members, weights, weight_step):
    from segbench.models.ensemble import Ensemble

    if not isinstance(members, dict):  # bare names: each member with its default params
        members = {name: {} for name in members}
    modules = {}
    for name, block in members.items():
        block = dict(block)
        modules[name] = build_model(block.pop("model", name), **block)
    return Ensemble(modules, weights or [1.0] * len(modules))


MODELS: dict[str, ModelSpec] = {
    "unet": ModelSpec("unet", UnetParams, "torch", _build_unet),
    "attention_unet": ModelSpec(
        "attention_unet", AttentionUnetParams, "torch", _build_attention_unet
    ),
    "segformer": ModelSpec("segformer", SegformerParams, "torch", _build_segformer),
    "sam_decoder": ModelSpec("sam_decoder", SamParams, "torch", _build_sam_decoder),
    "sam_lora": ModelSpec("sam_lora", SamLoraParams, "torch", _build_sam_lora),
    "sam_zero_shot": ModelSpec(
        "sam_zero_shot", SamZeroShotParams, "zero_shot", _build_sam_zero_shot
    ),
    "otsu": ModelSpec("otsu", OtsuParams, "classical", _build_otsu),
    "ensemble": ModelSpec("ensemble", EnsembleParams, "ensemble", _build_ensemble),
}


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise SegbenchError(f"unknown model {name!r}; valid models: {valid}") from None


def build_model(name: str, **params: Any):
    """Build a registered model from its (validated) params."""
    spec = get_spec(name)
    try:
        checked = spec.params(**params)
    except ValidationError as exc:
        raise SegbenchError(describe_validation_error(exc, prefix=f"models.{name}")) from None
    return spec.build(**checked.model_dump())


_ORACLE_PROMPTS = {"point", "points", "box"}


def model_notes(model: str, params: dict[str, Any]) -> dict[str, bool]:
    """What a reader must know about a model's numbers, from its registered name and params:

    ``oracle_prompts``: its prompts are drawn from the reference masks (a perfect user), so its
    test scores are not those of the model on its own; ``random_init``: a SAM without a
    checkpoint, whose numbers say nothing about Segment Anything.
    """
    is_sam = model.startswith("sam_")
    return {
        "oracle_prompts": is_sam and params.get("prompt") in _ORACLE_PROMPTS,
        "random_init": is_sam and not params.get("checkpoint"),
    }
