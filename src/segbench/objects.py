"""Objects of a binary task: label them, measure them, and match predicted to reference ones.

Pixel metrics say how much foreground is right; users counting particles, cells or lesions also
ask how many objects were found, how many were missed or invented, and how well the found ones
are outlined. Definitions, for one image:

* **objects**: the 8-connected components of a {0, 1} mask (``split="none"``), or those
  components cut apart where they touch (``split="watershed"``: a watershed of the negated
  Euclidean distance transform, seeded at its peaks at least ``min_distance`` px apart); or a
  stored instance label image (``data/raw/instances/<id>.tif``, written by fetch), where each
  non-zero value is one object.
* **matching**: a predicted and a reference object match when their IoU exceeds ``iou``
  (>= 0.5, where each object can match at most one other). TP = matched pairs, FP = unmatched
  predictions, FN = unmatched references; precision = TP / n_pred, recall = TP / n_ref,
  F1 = 2TP / (n_pred + n_ref).
* **panoptic quality** (Kirillov et al., 2019): PQ = (sum of matched IoUs) / (TP + FP/2 +
  FN/2) = SQ x RQ, with SQ = mean matched IoU and RQ = TP / (TP + FP/2 + FN/2).
* ``count_diff`` = n_pred - n_ref: positive when objects are invented or split, negative when
  missed or merged.

Undefined values are NaN, like Dice on an empty reference: with no object on either side,
precision, recall, F1, PQ, SQ and RQ; with one side empty, F1 = PQ = RQ = 0 while SQ (no
match) and the ratio over the empty side (precision with no prediction, recall with no
reference) are NaN. Everything is vectorised over a contingency table of label pairs, so a
1024x768 image with a few hundred objects is matched in milliseconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from segbench.errors import SegbenchError

SPLITS = ("none", "watershed")
OBJECT_TABLE_FIELDS = [
    "id",
    "area",
    "diameter",
    "centroid_y",
    "centroid_x",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
]
OBJECT_METRIC_FIELDS = [
    "n_ref_objects",
    "n_pred_objects",
    "obj_tp",
    "obj_fp",
    "obj_fn",
    "obj_precision",
    "obj_recall",
    "obj_f1",
    "pq",
    "sq",
    "rq",
    "count_diff",
]
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: diagonal neighbours touch
_UINT16_MAX = np.iinfo(np.uint16).max


# --- labelling -----------------------------------------------------------------------------


def label_objects(mask: np.ndarray, *, split: str = "none", min_distance: int = 5) -> np.ndarray:
    """(H, W) binary mask (bool or {0, 1}) -> (H, W) int32 labels: 0 background, 1..N objects.

    ``split="none"``: 8-connected components. ``"watershed"``: touching objects cut apart by a
    watershed of the negated distance transform, seeded at its local maxima at least
    ``min_distance`` px apart; every component keeps at least one seed, so nothing is lost,
    and no object ever spans two components.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    fg = np.asarray(mask)
    if fg.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {fg.shape}")
    fg = fg.astype(bool, copy=False)
    components, n = ndi.label(fg, structure=_EIGHT)
    if split == "none" or n == 0:
        return components.astype(np.int32, copy=False)
    return _watershed(fg, components, n, min_distance)


def _watershed(fg: np.ndarray, components: np.ndarray, n: int, min_distance: int) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    if min_distance < 1:
        raise ValueError(f"min_distance must be >= 1 px, got {min_distance}")
    distance = ndi.distance_transform_edt(fg)
    # Over the whole frame at once (per component is slower); the distance is 0 off the mask,
    # so every peak lies on it.
    peaks = peak_local_max(distance, min_distance=min_distance, exclude_border=False)
    markers = np.zeros(fg.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # A component whose peak was suppressed by a bigger neighbour's still needs a seed.
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[components[tuple(peaks.T)]] = True
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    if len(unseeded):
        where = ndi.maximum_position(distance, components, unseeded)
        rows, cols = np.array(where, dtype=np.intp).reshape(-1, 2).T
        markers[rows, cols] = len(peaks) + np.arange(1, len(unseeded) + 1, dtype=np.int32)
    # connectivity 2 floods across diagonals, as the 8-connected components are joined.
    labels = watershed(-distance, markers, mask=fg, connectivity=2)
    return labels.astype(np.int32, copy=False)


def relabel(labels: np.ndarray) -> np.ndarray:
    """(H, W) non-negative integer labels -> (H, W) int32 labels 1..N in the order of their
    values (0 stays background); N is the number of distinct non-zero values."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if labels.size == 0:
        return labels.astype(np.int32)
    top = int(labels.max())
    if int(labels.min()) < 0:
        raise ValueError("labels must be non-negative")
    if top <= max(labels.size, _UINT16_MAX):  # a look-up table: one pass, no sort
        present = np.bincount(labels.ravel(), minlength=top + 1) > 0
        present[0] = False
        lut = np.zeros(top + 1, dtype=np.int32)
        lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
        return lut[labels]
    values, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape).astype(np.int32)
    return out if values[0] == 0 else out + 1


# --- measuring -----------------------------------------------------------------------------


def object_table(labels: np.ndarray) -> list[dict]:
    """One row per object of (H, W) integer ``labels`` (0 = background), by increasing id,
    with the keys of :data:`OBJECT_TABLE_FIELDS`: ``id`` (its label), ``area`` (px),
    ``diameter`` (equivalent-circle diameter sqrt(4 area / pi), px), ``centroid_y``,
    ``centroid_x`` (px, row and column of the pixel centres' mean) and the half-open bounding
    box [``bbox_y0``, ``bbox_y1``) x [``bbox_x0``, ``bbox_x1``)."""
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected (H, W) labels, got shape {labels.shape}")
    if not labels.any():
        return []
    props = regionprops_table(labels, properties=("label", "area", "centroid", "bbox"))
    return [
        {
            "id": int(props["label"][i]),
            "area": int(props["area"][i]),
            "diameter": math.sqrt(4.0 * float(props["area"][i]) / math.pi),
            "centroid_y": float(props["centroid-0"][i]),
            "centroid_x": float(props["centroid-1"][i]),
            "bbox_y0": int(props["bbox-0"][i]),
            "bbox_x0": int(props["bbox-1"][i]),
            "bbox_y1": int(props["bbox-2"][i]),
            "bbox_x1": int(props["bbox-3"][i]),
        }
        for i in range(len(props["label"]))
    ]


# --- matching ------------------------------------------------------------------------------


def match_objects(pred_labels: np.ndarray, ref_labels: np.ndarray, *, iou: float = 0.5) -> dict:
    """Object metrics of one image: the keys of :data:`OBJECT_METRIC_FIELDS`.

    ``pred_labels``, ``ref_labels``: (H, W) non-negative integer labels of one shape (0 =
    background; values need not be consecutive). Pairs match when their IoU > ``iou``, which
    must lie in [0.5, 1) so that a match is unique. Counts (``n_*``, ``obj_tp/fp/fn``,
    ``count_diff``) are ints; the ratios are floats, NaN where undefined (see the module).
    """
    if not 0.5 <= iou < 1.0:
        raise ValueError(f"iou must be in [0.5, 1) so that matches are unique, got {iou}")
    pred, ref = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(
            f"labels must be two (H, W) arrays of one shape, got {pred.shape}, {ref.shape}"
        )
    pred, pred_area = _compact(pred)
    ref, ref_area = _compact(ref)
    n_pred, n_ref = len(pred_area) - 1, len(ref_area) - 1
    p, r, overlap = _contingency(pred, ref, n_pred, n_ref)
    ious = overlap / (pred_area[p] + ref_area[r] - overlap)
    matched = ious[ious > iou]
    return _scores(n_pred, n_ref, len(matched), float(matched.sum()))


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat labels made consecutive (0, 1..n) and their (n + 1,) pixel counts (index 0 =
    background); labels already consecutive are counted, not rewritten."""
    flat = np.ravel(labels)
    if flat.dtype.kind not in "biu":
        raise ValueError(f"labels must be integers, got {flat.dtype}")
    if flat.size and int(flat.max()) > max(flat.size, _UINT16_MAX):
        flat = relabel(flat)
    elif flat.dtype == bool:
        flat = flat.view(np.uint8)
    elif flat.size and flat.dtype.kind == "i" and int(flat.min()) < 0:
        raise ValueError("labels must be non-negative")
    area = np.bincount(flat, minlength=1)
    present = area > 0
    present[0] = True
    if present.all():
        return flat, area
    lut = (np.cumsum(present) - 1).astype(np.int32)
    return lut[flat], area[present]


def _contingency(pred: np.ndarray, ref: np.ndarray, n_pred: int, n_ref: int) -> tuple:
    """The non-zero cells of the contingency table of two flat label arrays (1..n each, 0
    background): (pred label, ref label, pixels in common), each (K,) int64."""
    both = (pred > 0) & (ref > 0)
    codes = pred[both].astype(np.int64) * (n_ref + 1) + ref[both]
    cells = (n_pred + 1) * (n_ref + 1)
    if cells <= max(codes.size, 1 << 20):  # a dense table: counting needs no sort
        counts = np.bincount(codes, minlength=cells)
        pairs = np.flatnonzero(counts)
        overlap = counts[pairs]
    else:
        pairs, overlap = np.unique(codes, return_counts=True)
    p, r = np.divmod(pairs, n_ref + 1)
    return p, r, overlap


def _scores(n_pred: int, n_ref: int, tp: int, iou_sum: float) -> dict:
    fp, fn = n_pred - tp, n_ref - tp
    nan = float("nan")
    both_empty = n_pred == 0 and n_ref == 0
    denom = tp + 0.5 * fp + 0.5 * fn
    return {
        "n_ref_objects": n_ref,
        "n_pred_objects": n_pred,
        "obj_tp": tp,
        "obj_fp": fp,
        "obj_fn": fn,
        "obj_precision": tp / n_pred if n_pred else nan,
        "obj_recall": tp / n_ref if n_ref else nan,
        "obj_f1": nan if both_empty else 2.0 * tp / (n_pred + n_ref),
        "pq": nan if both_empty else iou_sum / denom,
        "sq": iou_sum / tp if tp else nan,
        "rq": nan if both_empty else tp / denom,
        "count_diff": n_pred - n_ref,
    }


# --- instance label images -----------------------------------------------------------------


def write_instances(path: str | Path, labels: np.ndarray) -> None:
    """Write (H, W) non-negative integer ``labels`` (0 background, one value per object) as a
    zlib-compressed TIFF: uint16 when the largest label fits, else uint32."""
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise ValueError(f"expected (H, W) integer labels, got {labels.dtype} {labels.shape}")
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0:
        raise ValueError("labels must be non-negative")
    if top > np.iinfo(np.int32).max:
        raise ValueError(f"label {top} does not fit the int32 that read_instances returns")
    dtype = np.uint16 if top <= _UINT16_MAX else np.uint32
    # no shape metadata: a plain 2-D TIFF, byte-identical for identical labels
    tifffile.imwrite(path, labels.astype(dtype, copy=False), compression="zlib", metadata=None)


def read_instances(path: str | Path) -> np.ndarray:
    """The (H, W) int32 labels of a file written by :func:`write_instances`; a missing or
    unreadable file is a :class:`SegbenchError` naming it."""
    import tifffile

    try:
        labels = tifffile.imread(path)
    except FileNotFoundError:
        raise SegbenchError(f"{path}: instance labels not found; re-run the fetch stage") from None
    except Exception as exc:  # tifffile raises many types for damaged files
        raise SegbenchError(
            f"{path}: not a readable instance label TIFF ({exc}); re-run the fetch stage"
        ) from None
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise SegbenchError(
            f"{path}: expected (H, W) integer labels, got {labels.dtype} {labels.shape}; "
            "re-run the fetch stage"
        )
    return labels.astype(np.int32, copy=False)
