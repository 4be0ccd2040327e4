"""Object-level evaluation of a two-class model: what particle and nuclei users count.

:class:`ObjectTally` is fed each test image's predicted mask beside its reference, as
``evaluate`` scores it. The reference's objects are the data's instance labels where fetch
found them (``instances/<id>.tif``, manifest column ``instances``), else its connected
components, split the same way as the prediction's (``evaluate.objects.split``). Predicted and
reference objects are matched at IoU > ``evaluate.objects.iou`` (:func:`segbench.objects.
match_objects`): per image, object F1, panoptic quality and the count error.

Outputs: the per-image columns (``OBJECT_METRIC_FIELDS``, appended to ``per_image.csv``), one
row per object (``objects.csv``: image, source, object, area and equivalent diameter in pixels
at full size, for the report's size histograms), and the means with 95% bootstrap intervals
for ``metrics.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segbench.io import write_csv
from segbench.objects import (
    OBJECT_METRIC_FIELDS,
    label_objects,
    match_objects,
    object_table,
    read_instances,
)
from segbench.stats import bootstrap_ci

OBJECTS_FILE = "objects.csv"
OBJECT_ROW_FIELDS = ["image", "source", "object", "area", "diameter"]
# metrics.json: means over the images where each is defined (with std, count, interval where
# the report shows one).
_WITH_INTERVAL = ("obj_f1", "pq")
_MEANS = ("obj_precision", "obj_recall", "sq", "rq")


class ObjectTally:
    """Per-image object metrics and object sizes of one model on the test images.

    ``split``, ``min_distance`` and ``iou`` are ``evaluate.objects``'s keys; ``raw_dir`` holds
    the manifest's ``instances`` files.
    """

    def __init__(self, raw_dir: Path, *, split: str, min_distance: int, iou: float):
        self.raw_dir, self.split, self.min_distance, self.iou = raw_dir, split, min_distance, iou
        self.rows: list[dict] = []  # one per object
        self.metric_rows: list[dict] = []  # one per image
        self.instances_used = False

    def reference(self, rec: dict, mask: np.ndarray) -> np.ndarray:
        """(H, W) int32 reference objects of the manifest record ``rec`` with the (H, W)
        {0, 1} ``mask``: its instance labels if the data has them, else components."""
        if rec.get("instances"):
            self.instances_used = True
            return read_instances(self.raw_dir / rec["instances"])
        return label_objects(mask, split=self.split, min_distance=self.min_distance)

    def add(self, rec: dict, pred: np.ndarray, mask: np.ndarray) -> dict:
        """Score one image's (H, W) {0, 1} prediction against its reference; return its
        ``OBJECT_METRIC_FIELDS`` (NaN where undefined)."""
        ref = self.reference(rec, mask)
        found = label_objects(pred, split=self.split, min_distance=self.min_distance)
        row = match_objects(found, ref, iou=self.iou)
        for source, labels in (("reference", ref), ("prediction", found)):
            self.rows += [
                {
                    "image": rec["id"],
                    "source": source,
                    "object": obj["id"],
                    "area": obj["area"],
                    "diameter": obj["diameter"],
                }
                for obj in object_table(labels)
            ]
        self.metric_rows.append(row)
        return row

    def write(self, out_dir: Path) -> Path:
        """``out_dir/objects.csv``, one row per object (header only when none was added)."""
        path = out_dir / OBJECTS_FILE
        write_csv(path, self.rows, OBJECT_ROW_FIELDS)
        return path

    def summary(self, *, n_resamples: int, seed: int) -> dict:
        """metrics.json's object figures (see :class:`segbench.evalmetrics.EvalMetrics`)."""
        rows = self.metric_rows
        out: dict = {
            "objects_reference": "instances" if self.instances_used else "components",
            "objects_split": self.split,
            "objects_iou": self.iou,
            "objects_min_distance": self.min_distance,
            "n_ref_objects": int(sum(r["n_ref_objects"] for r in rows)),
            "n_pred_objects": int(sum(r["n_pred_objects"] for r in rows)),
        }
        for name in (*_WITH_INTERVAL, *_MEANS):
            values = _defined([r[name] for r in rows])
            out[name] = float(values.mean()) if values.size else math.nan
            if name in _WITH_INTERVAL:
                out[f"{name}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
                out[f"{name}_n"] = int(values.size)
                out |= _interval(name, values, n_resamples, seed)
        diffs = np.array([r["count_diff"] for r in rows], dtype=float)
        for name, values in (("count_mae", np.abs(diffs)), ("count_bias", diffs)):
            out[name] = float(values.mean()) if values.size else math.nan
            out |= _interval(name, values, n_resamples, seed)
        return out


def _defined(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


def _interval(name: str, values: np.ndarray, n_resamples: int, seed: int) -> dict:
    low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    return {f"{name}_ci_low": low, f"{name}_ci_high": high}


__all__ = ["OBJECTS_FILE", "OBJECT_METRIC_FIELDS", "OBJECT_ROW_FIELDS", "ObjectTally"]
