"""Box prompts for SAM's mask decoder taken from a reference mask, and the IoU its head predicts.

A fine-tuned, box-prompted decoder (``prompt: box`` in :class:`segbench.sam.segmenter.SamSegmenter`)
gets one box per connected component of the tile's reference mask, as SAM's own training does;
these are *oracle* prompts, at evaluation too. Boxes are XYXY with inclusive corners (the
segment_anything convention, see :mod:`segbench.sam.prompts`).
"""

from __future__ import annotations

import numpy as np
import torch

from segbench.sam.prompts import box, components


def reference_prompts(
    reference: np.ndarray, *, max_prompts: int, jitter: int = 0, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The components of an (H, W) bool reference and their boxes, largest component first.

    Returns ``(masks, boxes)``: (P, H, W) bool and (P, 4) float32 XYXY in the reference's pixel
    frame, P = min(#components, ``max_prompts``) (P = 0 for an empty reference). ``jitter``
    moves each box side by a uniform whole number of pixels in [-jitter, jitter], drawn from
    ``rng``.
    """
    height, width = reference.shape
    parts = components(reference)[:max_prompts]
    if not parts:
        return np.zeros((0, height, width), dtype=bool), np.zeros((0, 4), dtype=np.float32)
    boxes = [box(part, jitter=jitter, rng=rng) for part in parts]
    return np.stack(parts), np.stack(boxes)


def to_sam_frame(boxes: torch.Tensor, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """(P, 4) XYXY boxes in an (H, W) tile's pixels -> the encoder input's S x S pixels.

    The encoder sees the tile resized to S x S, so x scales by S / W and y by S / H, as
    segment_anything's ``ResizeLongestSide.apply_boxes`` scales prompts with the image.
    """
    height, width = size
    sx, sy = image_size / width, image_size / height
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each pair of (P, ...) bool masks -> (P,) float; two empty masks have IoU 1
    (nothing to find, nothing found: the prediction is perfect)."""
    pred, target = pred.flatten(1), target.flatten(1)
    inter = (pred & target).sum(1).float()
    union = (pred | target).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
