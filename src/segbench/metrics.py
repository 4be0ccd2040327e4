"""Binary segmentation metrics, per image, and their summary over a set of images.

Definitions (per image, from the confusion counts TP, FP, FN, TN of one (H, W) mask pair):

* Dice = 2TP / (2TP + FP + FN); IoU = TP / (TP + FP + FN) (foreground). Where the reference
  is empty both are undefined: NaN, excluded from means and counted (``n_empty_reference``).
* pixel accuracy = (TP + TN) / all pixels.
* precision = TP / (TP + FP) (NaN where nothing is predicted); recall = TP / (TP + FN) (NaN
  where the reference is empty).
* mPA = mean over {background, foreground} of per-class recall (the share of the reference's
  pixels of that class predicted as that class), over the classes present in the reference.
* mIoU = mean over {background, foreground} of per-class IoU, over the classes present in the
  reference or the prediction (a class absent from both has no IoU). Unlike ``iou``, mIoU is
  defined on an empty reference, where a false positive makes its foreground IoU 0.
* fpr = FP / (FP + TN): the share of the reference's background predicted as foreground. Its
  mean over the empty-reference images is reported on its own (``empty_fpr``), with the number
  of those images on which anything at all was predicted (``empty_with_fp``).
"""

from __future__ import annotations

import math

import numpy as np

from segbench.errors import SegbenchError

METRICS = ("dice", "iou", "pixel_accuracy", "mpa", "miou", "precision", "recall")


class MetricInputError(SegbenchError, ValueError):
    """Masks that cannot be compared: different shapes, or values other than {0, 1}."""


def _as_bool(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "biuf" or not ((mask == 0) | (mask == 1)).all():
        found = np.unique(mask)[:5] if mask.dtype.kind in "biuf" else mask.dtype
        raise MetricInputError(
            f"{what} mask is not binary: expected bool or values in {{0, 1}}, found "
            f"{found}; threshold probabilities first, and divide {{0, 255}} masks by 255"
        )
    return mask.astype(bool)


def confusion(pred: np.ndarray, target: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN of two (H, W) binary masks (bool or {0, 1}, any numeric dtype)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise MetricInputError(
            f"prediction {pred.shape} and reference {target.shape} differ in shape; resize the "
            "prediction to the reference's size before scoring it"
        )
    p, t = _as_bool(pred, "prediction"), _as_bool(target, "reference")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size - tp - fp - fn)}


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _nanmean(*values: float) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The metrics of one (H, W) prediction against its reference (module doc for definitions).

    Both masks are bool or {0, 1}. Returns ``dice``, ``iou``, ``pixel_accuracy``, ``mpa``,
    ``miou``, ``precision``, ``recall``, ``fpr`` (floats, NaN where undefined) and the confusion
    counts ``tp``, ``fp``, ``fn``, ``tn`` (ints). Raises :class:`MetricInputError` (a
    ``ValueError``) on masks of different shapes or with values other than 0 and 1.
    """
    c = confusion(pred, target)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    empty_ref = tp + fn == 0
    fg_recall, bg_recall = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    fg_iou, bg_iou = _ratio(tp, tp + fp + fn), _ratio(tn, tn + fn + fp)
    return {
        "dice": math.nan if empty_ref else _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": math.nan if empty_ref else fg_iou,
        "pixel_accuracy": (tp + tn) / (tp + fp + fn + tn),
        "mpa": _nanmean(bg_recall, fg_recall),
        "miou": _nanmean(bg_iou, fg_iou),
        "precision": _ratio(tp, tp + fp),
        "recall": fg_recall,
        "fpr": _ratio(fp, fp + tn),
        **c,
    }


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and std (NaN excluded) of each metric over images, plus counts.

    Returns ``{"dice": mean, "dice_std": std, "dice_n": defined values, ..., "n_images": n,
    "n_empty_reference": k, "empty_fpr": mean fpr over those k, "empty_with_fp": how many of
    them have any predicted pixel, "n_empty_prediction": images with nothing predicted}``.
    """
    out: dict[str, float] = {"n_images": len(rows)}
    for name in METRICS:
        values = np.array([r[name] for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if values.size else math.nan
        out[f"{name}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
        out[f"{name}_n"] = int(values.size)
    empty = [r for r in rows if r["tp"] + r["fn"] == 0]
    out["n_empty_reference"] = len(empty)
    out["empty_fpr"] = float(np.mean([r["fpr"] for r in empty])) if empty else math.nan
    out["empty_with_fp"] = sum(1 for r in empty if r["fp"] > 0)
    out["n_empty_prediction"] = sum(1 for r in rows if r["tp"] + r["fp"] == 0)
    return out


def dataset_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice pooled over all pixels of a batch of binary masks (validation during training,
    ensemble weights, threshold tuning)."""
    c = confusion(pred, target)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
