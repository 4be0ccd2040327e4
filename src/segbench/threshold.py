"""The probability threshold with the best per-image criterion on validation images.

Tuning on validation (never on test) and recording the result keeps the test figures honest: the
threshold is chosen before the test images are looked at, exactly like the weights. It is chosen
on the criterion models are ranked on (:mod:`segbench.metrics`): the mean over images of Dice
over all images (``dice_all``), so a false positive on an image with nothing to find costs that
image its whole score, and an empty answer there earns it in full.
"""

from __future__ import annotations

import math

import numpy as np

# 0.05, 0.10, ..., 0.95: fine enough for Dice, coarse enough not to fit validation noise.
GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def counts_by_threshold(
    proba: np.ndarray, mask: np.ndarray, grid: tuple[float, ...] = GRID
) -> np.ndarray:
    """(3, T) int64 confusion counts ``tp, fp, fn`` of ``proba >= t`` for each ``t`` of ``grid``.

    ``proba``: (H, W) float probabilities in [0, 1]; ``mask``: (H, W) {0, 1} or bool reference of
    the same shape; ``grid`` ascending. One pass over the pixels: each pixel falls in the bin of
    the grid's edges below it, per class, and the counts at or above each threshold are
    cumulative sums.
    """
    proba = np.asarray(proba)
    # Compared in the probabilities' own float type, as ``proba >= t`` compares them.
    dtype = proba.dtype if proba.dtype.kind == "f" else np.float64
    edges = np.array([-np.inf, *grid], dtype=dtype)
    fg = np.asarray(mask).astype(bool).ravel()
    # Bin k holds [edges[k], edges[k + 1]): "at or above grid[k - 1]" is the sum from bin k on.
    bins = np.searchsorted(edges, proba.ravel().astype(dtype, copy=False), side="right") - 1
    n = len(edges)
    hist = np.bincount(bins + n * fg, minlength=2 * n).reshape(2, n)  # [background, foreground]
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    tp, fp = above[1], above[0]
    return np.stack([tp, fp, hist[1].sum() - tp])


def dice_all_of(counts: np.ndarray) -> np.ndarray:
    """:func:`segbench.metrics.dice_all`, elementwise over ``counts[0], counts[1], counts[2]``
    (tp, fp, fn arrays of any one shape): 2TP/(2TP+FP+FN), and on an empty reference 1.0 with
    nothing predicted, 0.0 with anything predicted. Returns float64 of that shape."""
    tp, fp, fn = (np.asarray(c, dtype=np.float64) for c in counts)
    den = 2 * tp + fp + fn
    dice = np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)
    return np.where(tp + fn == 0, (fp == 0).astype(np.float64), dice)


def pooled_dice_of(counts: np.ndarray) -> np.ndarray:
    """Dice 2TP/(2TP+FP+FN), elementwise over ``counts[0], counts[1], counts[2]`` (tp, fp, fn
    arrays of any one shape, each summed over the images pooled); NaN where nothing is
    predicted or present."""
    tp, fp, fn = (np.asarray(c, dtype=np.float64) for c in counts)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.full_like(den, math.nan), where=den > 0)


def _curves(probas, masks, grid) -> tuple[np.ndarray, np.ndarray]:
    """(T,) mean per-image Dice over all images and (T,) pooled Dice, from one pass per image."""
    per_image = np.stack(
        [counts_by_threshold(p, m, grid) for p, m in zip(probas, masks, strict=True)]
    )  # (N, 3, T)
    return dice_all_of(per_image.transpose(1, 0, 2)).mean(axis=0), pooled_dice_of(per_image.sum(0))


def score_by_threshold(
    probas: list[np.ndarray], masks: list[np.ndarray], grid: tuple[float, ...] = GRID
) -> list[float]:
    """The criterion at each ``t`` of ``grid``: the mean over images of Dice over all images
    (``dice_all``) of ``proba >= t``. ``probas``: (H, W) float probabilities in [0, 1];
    ``masks``: (H, W) {0, 1} references of the same shapes; at least one image."""
    return [float(s) for s in _curves(probas, masks, grid)[0]]


def dice_by_threshold(
    probas: list[np.ndarray], masks: list[np.ndarray], grid: tuple[float, ...] = GRID
) -> list[float]:
    """Dice pooled over every pixel of every image, for ``proba >= t`` at each ``t`` of ``grid``
    (NaN where nothing is predicted or present); shown beside the criterion, not chosen on."""
    return [float(d) for d in _curves(probas, masks, grid)[1]]


def tune_threshold(
    probas: list[np.ndarray], masks: list[np.ndarray], grid: tuple[float, ...] = GRID
) -> tuple[float, list[dict[str, float]]]:
    """The grid threshold with the best mean per-image criterion on validation (ties: the one
    nearest 0.5), and the whole curve as ``[{"threshold": t, "val_score": s, "val_dice": d}]``
    (``val_dice`` pooled over the pixels, for the plot).

    Images with an empty reference count (a false positive there scores 0), so validation
    without any foreground still has a best threshold; only without validation images is there
    nothing to tune on: then 0.5 and an empty curve.
    """
    if not probas:
        return 0.5, []
    scores, pooled = _curves(probas, masks, grid)
    curve = [
        {"threshold": t, "val_score": float(s), "val_dice": float(d)}
        for t, s, d in zip(grid, scores, pooled, strict=True)
    ]
    best = max(curve, key=lambda c: (c["val_score"], -abs(c["threshold"] - 0.5)))
    return best["threshold"], curve
