"""Segment Anything: ``build_sam(variant, image_size=..., checkpoint=...)`` (:mod:`.build`),
checkpoints read weights-only (:mod:`.checkpoint`)."""

from segbench.sam.build import (
    SAM_VARIANTS,
    SamVariant,
    adapt_to_image_size,
    build_sam,
    checkpoint_variant,
)
from segbench.sam.checkpoint import load_checkpoint

__all__ = [
    "SAM_VARIANTS",
    "SamVariant",
    "adapt_to_image_size",
    "build_sam",
    "checkpoint_variant",
    "load_checkpoint",
]
