"""The probability threshold with the best pooled Dice on validation images.

Tuning on validation (never on test) and recording the result keeps the test figures honest: the
threshold is chosen before the test images are looked at, exactly like the weights.
"""

from __future__ import annotations

import math

import numpy as np

# 0.05, 0.10, ..., 0.95: fine enough for Dice, coarse enough not to fit validation noise.
GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def dice_by_threshold(
    probas: list[np.ndarray], masks: list[np.ndarray], grid: tuple[float, ...] = GRID
) -> list[float]:
    """Dice pooled over every pixel of every image, for ``proba >= t`` at each ``t`` of ``grid``.

    ``probas``: (H, W) float probabilities in [0, 1]; ``masks``: (H, W) {0, 1} references of the
    same shapes. One pass per image: each class's probabilities are histogrammed on the grid's
    edges, and the counts at or above each threshold are cumulative sums.
    """
    edges = np.array([-np.inf, *grid, np.inf])
    fg_hist = np.zeros(len(grid) + 1)
    bg_hist = np.zeros(len(grid) + 1)
    for proba, mask in zip(probas, masks, strict=True):
        fg = mask.astype(bool)
        fg_hist += np.histogram(proba[fg], bins=edges)[0]
        bg_hist += np.histogram(proba[~fg], bins=edges)[0]
    # Bin k (k >= 1) holds [grid[k-1], grid[k]): "at or above grid[k-1]" is the sum from bin k on.
    tp = np.cumsum(fg_hist[::-1])[::-1][1:]
    fp = np.cumsum(bg_hist[::-1])[::-1][1:]
    fn = fg_hist.sum() - tp
    den = 2 * tp + fp + fn
    return [float(2 * t / d) if d else math.nan for t, d in zip(tp, den, strict=True)]


def tune_threshold(
    probas: list[np.ndarray], masks: list[np.ndarray], grid: tuple[float, ...] = GRID
) -> tuple[float, list[dict[str, float]]]:
    """The grid threshold with the best pooled validation Dice (ties: the one nearest 0.5),
    and the whole curve as ``[{"threshold": t, "val_dice": d}, ...]``."""
    scores = dice_by_threshold(probas, masks, grid)
    curve = [{"threshold": t, "val_dice": d} for t, d in zip(grid, scores, strict=True)]
    defined = [c for c in curve if not math.isnan(c["val_dice"])]
    if not defined or not any(m.any() for m in masks):
        return 0.5, curve  # no foreground anywhere in validation: nothing to tune on
    best = max(defined, key=lambda c: (c["val_dice"], -abs(c["threshold"] - 0.5)))
    return best["threshold"], curve
