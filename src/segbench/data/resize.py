"""Resizing between full resolution and the working resolution (``prepare.scale``)."""

from __future__ import annotations

import cv2
import numpy as np


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H, W) after scaling by ``scale``, rounded, at least 1 pixel."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W[, 3]) image to ``shape`` = (H', W'); area averaging when shrinking."""
    if image.shape[:2] == tuple(shape):
        return image
    shrinking = shape[0] < image.shape[0]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (shape[1], shape[0]), interpolation=interp)


def resize_mask(mask: np.ndarray, shape: tuple[int, int], num_classes: int = 2) -> np.ndarray:
    """Resize an (H, W) mask of class indices.

    Two classes ({0, 1}): a pixel is foreground if most of its area was. Several: each new
    pixel takes the label (class, or ignore) that covers most of its area, from an area-resized
    indicator per label present (ties to the lower label).
    """
    if mask.shape[:2] == tuple(shape):
        return mask
    if num_classes == 2:
        area = resize_image(mask.astype(np.float32), shape)
        return (area >= 0.5).astype(np.uint8)
    labels = np.unique(mask)
    if len(labels) == 1:
        return np.full(shape, labels[0], dtype=np.uint8)
    best = np.full(shape, -1.0, dtype=np.float32)
    out = np.zeros(shape, dtype=np.uint8)
    for label in labels:
        area = resize_image((mask == label).astype(np.float32), shape)
        better = area > best
        out[better], best[better] = label, area[better]
    return out
