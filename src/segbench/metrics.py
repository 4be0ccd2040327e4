"""Binary segmentation metrics, per image, and their summary over a set of images.

Conventions: Dice = 2TP / (2TP + FP + FN); IoU = TP / (TP + FP + FN); pixel accuracy =
(TP + TN) / all; precision = TP / (TP + FP); recall = TP / (TP + FN). Where the reference mask is
empty, Dice, IoU and recall are undefined: they are NaN, excluded from means, and counted.
Where nothing is predicted, precision is NaN.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("dice", "iou", "pixel_accuracy", "precision", "recall")


def confusion(pred: np.ndarray, target: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN of two (H, W) binary masks (any dtype; non-zero is foreground)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and reference {target.shape} differ in shape")
    p, t = pred.astype(bool), target.astype(bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size - tp - fp - fn)}


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The metrics of :data:`METRICS` plus the confusion counts, for one image."""
    c = confusion(pred, target)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    empty_ref = tp + fn == 0
    return {
        "dice": math.nan if empty_ref else _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": math.nan if empty_ref else _ratio(tp, tp + fp + fn),
        "pixel_accuracy": (tp + tn) / (tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        **c,
    }


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and std (NaN excluded) of each metric over images, plus counts.

    Returns ``{"dice": mean, "dice_std": std, ..., "n_images": n, "n_empty_reference": k}``.
    """
    out: dict[str, float] = {"n_images": len(rows)}
    for name in METRICS:
        values = np.array([r[name] for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if values.size else math.nan
        out[f"{name}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    out["n_empty_reference"] = sum(1 for r in rows if r["tp"] + r["fn"] == 0)
    return out


def dataset_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice pooled over all pixels of a batch (used for validation during training)."""
    c = confusion(pred, target)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
