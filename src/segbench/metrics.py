"""Binary segmentation metrics, per image, and their summary over a set of images.

Definitions (per image, from the confusion counts TP, FP, FN, TN of one (H, W) mask pair):

* Dice = 2TP / (2TP + FP + FN); IoU = TP / (TP + FP + FN) (foreground). Where the reference
  is empty both are undefined: NaN, excluded from means and counted (``n_empty_reference``).
* Dice over all images (``dice_all``): Dice where the reference has foreground; where it is
  empty, 1 when nothing is predicted and 0 when anything is (a false positive on an empty image
  is a complete failure, an empty answer a complete success). Defined on every image, it is
  the per-image criterion models are ranked, tested and tuned on (thresholds, checkpoints,
  ensemble weights): the NaN rule above would let a model that marks every empty image score
  as well as one that leaves them empty.
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

METRICS = ("dice", "dice_all", "iou", "pixel_accuracy", "mpa", "miou", "precision", "recall")


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


def dice_all(tp: int, fp: int, fn: int) -> float:
    """Dice over all images (module doc) from one image's confusion counts: 2TP/(2TP+FP+FN),
    and on an empty reference 1.0 with nothing predicted, 0.0 with anything predicted."""
    if tp + fn == 0:
        return 0.0 if fp else 1.0
    return 2 * tp / (2 * tp + fp + fn)


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The metrics of one (H, W) prediction against its reference (module doc for definitions).

    Both masks are bool or {0, 1}. Returns ``dice``, ``dice_all``, ``iou``, ``pixel_accuracy``,
    ``mpa``, ``miou``, ``precision``, ``recall``, ``fpr`` (floats, NaN where undefined) and the
    confusion counts ``tp``, ``fp``, ``fn``, ``tn`` (ints). Raises :class:`MetricInputError` (a
    ``ValueError``) on masks of different shapes or with values other than 0 and 1.
    """
    c = confusion(pred, target)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    empty_ref = tp + fn == 0
    fg_recall, bg_recall = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    fg_iou, bg_iou = _ratio(tp, tp + fp + fn), _ratio(tn, tn + fn + fp)
    return {
        "dice": math.nan if empty_ref else _ratio(2 * tp, 2 * tp + fp + fn),
        "dice_all": dice_all(tp, fp, fn),
        "iou": math.nan if empty_ref else fg_iou,
        "pixel_accuracy": (tp + tn) / (tp + fp + fn + tn),
        "mpa": _nanmean(bg_recall, fg_recall),
        "miou": _nanmean(bg_iou, fg_iou),
        "precision": _ratio(tp, tp + fp),
        "recall": fg_recall,
        "fpr": _ratio(fp, fp + tn),
        **c,
    }


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, *, ignore_index: int | None = None
) -> np.ndarray:
    """The (C, C) int64 confusion matrix of two (H, W) index masks: row = reference class,
    column = predicted class. Pixels whose reference is ``ignore_index`` are left out. Raises
    :class:`MetricInputError` on masks of different shapes, or on values that are not class
    indices in ``[0, num_classes)``."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise MetricInputError(
            f"prediction {pred.shape} and reference {target.shape} differ in shape; resize the "
            "prediction to the reference's size before scoring it"
        )
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for mask, what in ((pred, "prediction"), (target, "reference")):
        if mask.dtype.kind not in "biu" and mask.dtype != bool:
            raise MetricInputError(f"{what} mask holds {mask.dtype}, not class indices")
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= num_classes):
            bad = np.unique(mask[(mask < 0) | (mask >= num_classes)])[:5]
            raise MetricInputError(
                f"{what} mask holds {bad.tolist()}, not class indices in [0, {num_classes})"
            )
    # One pass over the pixels: each (reference, prediction) pair is one bin.
    flat = target.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def multiclass_metrics(
    pred: np.ndarray, target: np.ndarray, num_classes: int, *, ignore_index: int | None = None
) -> dict:
    """The metrics of one (H, W) index prediction against its reference, over ``num_classes``
    classes (0 = background), from their confusion matrix (:func:`confusion_matrix`).

    Per class k (lists of C floats, NaN where undefined): ``iou`` = TP/(TP+FP+FN) and ``dice`` =
    2TP/(2TP+FP+FN), undefined for a class absent from both masks; ``precision`` = TP/(TP+FP),
    undefined where k is never predicted; ``recall`` = TP/(TP+FN), undefined where k is not in
    the reference. Over classes: ``miou`` = mean IoU over the classes present in the reference or
    the prediction; ``mpa`` = mean recall over the classes present in the reference (the share of
    each class's pixels predicted as it: per-class pixel accuracy); ``pixel_accuracy`` = the
    share of all pixels predicted right. A class absent from both masks says nothing about the
    model on that image, so it is left out of the means rather than counted as 0 or 1. With
    ``num_classes`` 2 these are exactly :func:`binary_metrics`' ``miou``, ``mpa`` and
    ``pixel_accuracy``. ``confusion`` is the matrix itself (rows: reference).
    """
    matrix = confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)
    tp = np.diag(matrix).astype(np.float64)
    in_ref, in_pred = matrix.sum(axis=1), matrix.sum(axis=0)
    fp, fn = in_pred - tp, in_ref - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        precision = np.where(in_pred > 0, tp / in_pred, np.nan)
        recall = np.where(in_ref > 0, tp / in_ref, np.nan)
    total = int(matrix.sum())
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "miou": _nanmean(*iou.tolist()),
        "mpa": _nanmean(*recall.tolist()),
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "confusion": matrix,
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
    """Dice pooled over all pixels of a batch of binary masks (shown beside the per-image
    criterion, which is what chooses)."""
    c = confusion(pred, target)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def pooled_foreground_dice(matrix: np.ndarray) -> float:
    """Dice per foreground class from a pooled (C, C) confusion matrix, averaged over the
    foreground classes present in the reference or the prediction (validation with several
    classes, ensemble weights)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
    dice = [
        2 * tp[k] / (2 * tp[k] + fp[k] + fn[k])
        for k in range(1, len(tp))
        if tp[k] + fp[k] + fn[k] > 0
    ]
    return float(np.mean(dice)) if dice else math.nan


def multiclass_row(
    pred: np.ndarray, target: np.ndarray, num_classes: int, *, ignore_index: int | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """One image's row of ``per_image.csv`` with several classes, and its confusion matrix.

    ``miou``, ``mpa``, ``pixel_accuracy`` as :func:`multiclass_metrics`; ``dice``, ``iou``,
    ``precision`` and ``recall`` are the means over the *foreground* classes where each is
    defined (Dice and IoU: present in reference or prediction);
    ``iou_<k>``, ``dice_<k>``, ``precision_<k>``, ``recall_<k>`` per class k (NaN where
    undefined).
    """
    m = multiclass_metrics(pred, target, num_classes, ignore_index=ignore_index)
    row = {
        "miou": m["miou"],
        "mpa": m["mpa"],
        "pixel_accuracy": m["pixel_accuracy"],
        "dice": _nanmean(*m["dice"][1:]),
        "iou": _nanmean(*m["iou"][1:]),
        "precision": _nanmean(*m["precision"][1:]),
        "recall": _nanmean(*m["recall"][1:]),
    }
    for name in ("iou", "dice", "precision", "recall"):
        for k, value in enumerate(m[name]):
            row[f"{name}_{k}"] = value
    return row, m["confusion"]


MULTICLASS_SUMMARY = tuple(m for m in METRICS if m != "dice_all")  # miou ranks there


def summarize_multiclass(rows: list[dict[str, float]], num_classes: int) -> dict:
    """Means, stds and counts over images of :data:`MULTICLASS_SUMMARY` and of each class's
    IoU, Dice, precision and recall (NaN excluded; lists for the per-class figures)."""

    def stats(values) -> tuple[float, float, int]:
        values = np.array(values, dtype=float)
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if values.size else math.nan
        std = float(values.std(ddof=1)) if values.size > 1 else math.nan
        return mean, std, int(values.size)

    out: dict = {"n_images": len(rows)}
    for name in MULTICLASS_SUMMARY:
        out[name], out[f"{name}_std"], out[f"{name}_n"] = stats([r[name] for r in rows])
    for name in ("iou", "dice", "precision", "recall"):
        out[f"class_{name}"] = [
            stats([r[f"{name}_{k}"] for r in rows])[0] for k in range(num_classes)
        ]
    return out
