"""``reports/comparison.csv``: the comparison table's figures unformatted, one row per model
(notes and verdict as words), for spreadsheets and scripts; its columns depend on the primary
metric (Dice with two classes, mIoU and per-class IoU with several)."""

from __future__ import annotations

import math

from segbench.comparison import fmt
from segbench.metrics import METRICS

# comparison.csv: the table's figures unformatted (notes and verdict as words).
CSV_FIELDS = [
    "model",
    "score",  # the ranking criterion (score_metric: dice_all or miou), mean over seeds
    "score_ci_low",
    "score_ci_high",
    "score_metric",
    "val_score",
    "dice",
    "dice_ci_low",
    "dice_ci_high",
    "dice_std",
    "mean_diff",  # paired difference to the reference (this row minus it), per test image
    "diff_ci_low",
    "diff_ci_high",
    "hl_diff",
    "n_pairs",
    "n_usable",
    "verdict",
    "p",
    "p_holm",
    "seed_std",
    "seed_scores",
    *[m for m in METRICS if m != "dice"],
    "n_images",
    "n_empty_reference",
    "empty_fpr",
    "threshold",
    "threshold_tuned",
    "params_total",
    "params_trainable",
    "train_seconds",
    "train_cache_seconds",
    "train_device",
    "device_count",
    "train_peak_memory_mb",
    "images_per_second",
    "device",
    "tta",
    # Objects (two classes; empty cells with several): segbench.evalobjects.
    "obj_f1",
    "obj_f1_ci_low",
    "obj_f1_ci_high",
    "pq",
    "pq_ci_low",
    "pq_ci_high",
    "count_mae",
    "count_mae_ci_low",
    "count_mae_ci_high",
    "count_bias",
    "count_bias_ci_low",
    "count_bias_ci_high",
    "n_pred_objects",
    "n_ref_objects",
    "notes",
    "reference",
    "oracle_prompts",
    "random_init",
    "scratch_decoder",
]


OBJECT_FIELDS = CSV_FIELDS[CSV_FIELDS.index("obj_f1") : CSV_FIELDS.index("notes")]


def csv_fields(metric: str = "dice", class_names: list[str] = ()) -> list[str]:
    """The columns of ``comparison.csv``: :data:`CSV_FIELDS` with two classes; with several,
    mIoU (and its interval) first, no threshold, the test loss, the number of classes, and each
    class's IoU, interval and images (``iou_<class>``, ``iou_<class>_ci_low`` ...)."""
    if metric == "dice":
        return CSV_FIELDS
    lead = ["model", "score", "score_ci_low", "score_ci_high", "score_metric", "val_score"]
    lead += ["miou", "miou_ci_low", "miou_ci_high", "miou_std"]
    rest = [
        f
        for f in CSV_FIELDS
        if f not in lead
        and not f.startswith("threshold")
        and f != "dice_all"
        and f not in OBJECT_FIELDS
    ]
    per_class = [
        f"iou_{name}{part}" for name in class_names for part in ("", "_ci_low", "_ci_high", "_n")
    ]
    return [*lead, *rest, "test_loss", "num_classes", *per_class]


def _class_cells(row: dict) -> dict:
    """``iou_<class>``, ``..._ci_low``, ``..._ci_high``, ``..._n`` of a row of several classes."""
    out = {}
    for k, name in enumerate(row.get("class_names") or ()):
        for part, key in (
            ("", "class_iou"),
            ("_ci_low", "class_iou_ci_low"),
            ("_ci_high", "class_iou_ci_high"),
            ("_n", "class_iou_n"),
        ):
            values = row.get(key) or []
            out[f"iou_{name}{part}"] = values[k] if k < len(values) else None
    return out


def csv_row(row: dict, fields: list[str] = CSV_FIELDS) -> dict:
    """One comparison row as ``comparison.csv`` holds it: ``fields`` only, notes and verdict
    as words, NaN as an empty cell."""
    row = {**row, **_class_cells(row)}
    out = {k: row.get(k) for k in fields}
    out["notes"] = fmt("notes", row)
    out["verdict"] = "reference" if row.get("reference") else row.get("verdict", "")
    if isinstance(out.get("seed_scores"), list):  # one cell: the seeds' mean test scores
        out["seed_scores"] = " ".join(f"{v:.4f}" for v in out["seed_scores"])
    return {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
