"""Probability -> binary mask: the threshold, then the optional removal of small components.

Evaluation, ensemble fitting and ``segbench predict`` all turn probabilities into masks here, so
a mask scored in the report is the mask a user gets.
"""

from __future__ import annotations

import cv2
import numpy as np


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """(H, W) bool mask without its 8-connected foreground components of fewer than
    ``min_area`` pixels (0 keeps everything)."""
    if min_area <= 0 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # label 0 is the background
    return keep[labels]


def binarize(proba: np.ndarray, threshold: float, min_area: int = 0) -> np.ndarray:
    """(H, W) float probability in [0, 1] -> (H, W) bool mask: ``proba >= threshold``, then
    components smaller than ``min_area`` pixels (at the image's own resolution) removed."""
    return remove_small_components(proba >= threshold, min_area)


def to_labels(proba: np.ndarray, threshold: float = 0.5, min_area: int = 0) -> np.ndarray:
    """Probabilities -> (H, W) uint8 class indices, for any number of classes.

    (H, W) foreground probability (two classes): :func:`binarize` at ``threshold``, as {0, 1}.
    (C, H, W) class probabilities: the argmax (no threshold: each pixel takes its most probable
    class); then each foreground class's components smaller than ``min_area`` pixels become
    background.
    """
    if proba.ndim == 2:
        return binarize(proba, threshold, min_area).astype(np.uint8)
    labels = np.argmax(proba, axis=0).astype(np.uint8)
    if min_area > 0:
        for k in range(1, proba.shape[0]):
            own = labels == k
            kept = remove_small_components(own, min_area)
            labels[own & ~kept] = 0
    return labels
