"""The model registry: one registered name -> the builder of its network from a typed entry.

Names and entry classes are defined once, in :mod:`segbench.config.models` (the ``model`` key
of a ``models`` entry); here each name gets its builder. Importing this module is cheap: every
builder imports its model's libraries (smp, segment_anything) only when called.

What a builder returns depends on the entry's ``kind``: ``torch`` -> an ``nn.Module`` mapping
``(N, C, H, W)`` float images (C = ``in_channels``; H and W multiples of 32) to ``(N, 1, H, W)``
logits; ``classical`` -> an object with ``fit``/``predict``/``state_dict``/``load_state_dict``
(optional class attributes: ``fit_split``, the tiles ``fit`` is given, ``"train"`` when absent;
``unit_input``, True where ``fit`` and ``predict`` take unit images, float32 in [0, 1] over the
source image's intensity range, rather than stored intensities);
``zero_shot`` -> an object with ``predict(unit_image, reference)``
(:class:`segbench.sam.prompted.PromptedSam`). Ensembles are built by :func:`build_ensemble`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from segbench.config.models import (
    AttentionUnetEntry,
    CannyEntry,
    ModelEntry,
    OtsuEntry,
    SamBase,
    SamDecoderEntry,
    SamLoraEntry,
    SamZeroShotEntry,
    SegformerEntry,
    SobelEntry,
    UnetEntry,
)
from segbench.errors import SegbenchError

Builder = Callable[..., Any]  # (entry, *, name: str, in_channels: int, num_classes: int) -> model


def _build_unet(entry: UnetEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.models.smp_models import build_unet

    return build_unet(
        encoder_name=entry.encoder_name,
        encoder_weights=entry.encoder_weights,
        encoder_depth=entry.encoder_depth,
        decoder_channels=entry.decoder_channels,
        in_channels=in_channels,
        outputs=output_channels(num_classes),
        key=f"models.{name}",
    )


def _build_attention_unet(
    entry: AttentionUnetEntry, *, name: str, in_channels: int, num_classes: int
):
    from segbench.models.attention_unet import build_attention_unet

    return build_attention_unet(
        encoder_name=entry.encoder_name,
        encoder_weights=entry.encoder_weights,
        decoder_channels=entry.decoder_channels,
        in_channels=in_channels,
        outputs=output_channels(num_classes),
        key=f"models.{name}",
    )


def _build_segformer(entry: SegformerEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.models.smp_models import build_segformer

    return build_segformer(
        encoder_name=entry.encoder_name,
        encoder_weights=entry.encoder_weights,
        decoder_segmentation_channels=entry.decoder_segmentation_channels,
        in_channels=in_channels,
        outputs=output_channels(num_classes),
        key=f"models.{name}",
    )


def _sam(entry: SamBase):
    """The Segment Anything model of a SAM entry's shared keys."""
    from segbench.sam.build import build_sam

    return build_sam(
        entry.variant,
        image_size=entry.image_size,
        checkpoint=entry.checkpoint,
        sha256=entry.sha256,
        init_seed=entry.init_seed,
    )


def _build_sam_decoder(
    entry: SamDecoderEntry | SamLoraEntry, *, name: str, in_channels: int, num_classes: int
):
    from segbench.sam.segmenter import SamSegmenter

    model = SamSegmenter(
        _sam(entry).train(),
        prompt=entry.prompt,
        box_jitter=entry.box_jitter or 0,
        iou_loss_weight=entry.iou_loss_weight,
        num_classes=num_classes,
    )
    if getattr(entry, "decoder_init", "checkpoint") == "scratch":
        from segbench.sam.build import reinitialise

        reinitialise(model.sam.mask_decoder, seed=entry.init_seed)
    if getattr(entry, "embedding_cache", None):
        model.use_cache(entry.embedding_cache)
    return model


def _build_sam_lora(entry: SamLoraEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.sam.lora import apply_lora

    model = _build_sam_decoder(entry, name=name, in_channels=in_channels, num_classes=num_classes)
    apply_lora(
        model.sam,
        rank=entry.rank,
        alpha=entry.alpha,
        dropout=entry.dropout,
        targets=entry.targets,
        blocks=entry.blocks,
    )
    return model


def _build_sam_zero_shot(entry: SamZeroShotEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.sam.prompted import PromptedSam

    return PromptedSam(_sam(entry), entry)


def _build_otsu(entry: OtsuEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.models.otsu import OtsuThreshold

    return OtsuThreshold(smooth_sigma=entry.smooth_sigma, num_classes=num_classes)


def _build_sobel(entry: SobelEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.models.edges import SobelEdges

    return SobelEdges(
        smooth_sigma=entry.smooth_sigma, close_radius=entry.close_radius, num_classes=num_classes
    )


def _build_canny(entry: CannyEntry, *, name: str, in_channels: int, num_classes: int):
    from segbench.models.edges import CannyEdges

    return CannyEdges(
        sigma=entry.sigma,
        low_ratio=entry.low_ratio,
        close_radius=entry.close_radius,
        num_classes=num_classes,
    )


MODELS: dict[str, Builder] = {
    "unet": _build_unet,
    "attention_unet": _build_attention_unet,
    "segformer": _build_segformer,
    "sam_decoder": _build_sam_decoder,
    "sam_lora": _build_sam_lora,
    "sam_zero_shot": _build_sam_zero_shot,
    "otsu": _build_otsu,
    "sobel": _build_sobel,
    "canny": _build_canny,
}


def output_channels(num_classes: int) -> int:
    """A network's output channels: one sigmoid logit for two classes (binary keeps today's
    models bit for bit), else one softmax logit per class."""
    return 1 if num_classes == 2 else num_classes


def build_model(
    entry: ModelEntry, *, name: str | None = None, in_channels: int = 1, num_classes: int = 2
):
    """Build the model of a typed ``models`` entry; ``name`` (the entry's) is named in errors.

    Torch models map (N, ``in_channels``, H, W) to (N, :func:`output_channels`, H, W) logits.
    """
    try:
        builder = MODELS[entry.model]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise SegbenchError(f"unknown model {entry.model!r}; valid models: {valid}") from None
    return builder(
        entry, name=name or entry.model, in_channels=in_channels, num_classes=num_classes
    )


def build_ensemble(
    members: Mapping[str, tuple[ModelEntry, int]],
    weights: Sequence[float] | None = None,
    *,
    num_classes: int = 2,
):
    """The :class:`~segbench.models.ensemble.Ensemble` of ``{name: (entry, in_channels)}``
    with mixing ``weights`` (equal when None); members are built untrained."""
    from segbench.models.ensemble import Ensemble

    modules = {
        name: build_model(entry, name=name, in_channels=channels, num_classes=num_classes)
        for name, (entry, channels) in members.items()
    }
    return Ensemble(modules, list(weights) if weights is not None else [1.0] * len(modules))
