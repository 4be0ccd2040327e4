"""What ``evaluate`` measures beyond the comparison's row, when an entry asks for it.

Two studies measured things that are not one mask per image:

* **Dice against the number of clicks** (``points_curve: true`` on a zero-shot SAM entry with
  ``prompt: points``): for every test image, 1, 2, ..., ``k_points`` oracle points per object,
  from one image embedding, in the same pass that scores the entry's own k-point masks. The
  last point of the curve *is* the entry's row (same masks).
* **SAM against its LoRA-adapted self** (``auto_compare: {...}`` on a ``sam_lora`` entry): the
  automatic mask generator with the given settings, on the same test images, once with the
  adapted SAM (LoRA merged into the encoder, the fine-tuned decoder) and once with the base
  SAM it was adapted from (the same checkpoint, or the same seeded random weights), so that
  the report can show the two side by side with a paired test.

Both write into ``<eval dir>/extra/`` (one DVC output), whose ``index.json`` says what is there:

    index.json                    {"points_curve": bool, "auto_compare": bool}
    points_curve.csv              k, n_images, dice, dice_ci_low, dice_ci_high, iou (mean
                                  over test images with foreground; 95% bootstrap interval)
    points_curve_per_image.csv    id, dice_1 ... dice_K
    auto_compare.csv              id, dice_base, dice_adapted, iou_base, iou_adapted,
                                  pred_fraction_base, pred_fraction_adapted, ref_fraction
    auto_compare.json             settings, both means with intervals, and the paired
                                  difference (adapted - base): its interval and Wilcoxon p
    auto/base/<id>.png            the masks, {0, 255}, for the report's side-by-side gallery
    auto/adapted/<id>.png
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segbench.config.models import AutoMaskConfig, SamLoraEntry
from segbench.evalmetrics import EXTRA_DIR, EXTRA_INDEX
from segbench.io import (
    read_csv,
    read_image,
    read_json,
    read_mask,
    write_csv,
    write_json,
    write_mask,
)
from segbench.metrics import binary_metrics
from segbench.postprocess import to_labels
from segbench.stats import bootstrap_ci, wilcoxon_paired

EXTRA, INDEX = EXTRA_DIR, EXTRA_INDEX


class PointsCurve:
    """Per-image Dice at 1 .. k points per object, accumulated image by image."""

    def __init__(self, k_points: int):
        self.k = k_points
        self.rows: list[dict] = []

    def add(self, image_id: str, preds: list[np.ndarray], reference: np.ndarray) -> None:
        """``preds``: the (H, W) {0, 1} masks with 1 .. k points, ``reference`` (H, W)."""
        scores = [binary_metrics(p, reference) for p in preds]
        row = {"id": image_id}
        row |= {f"dice_{j}": s["dice"] for j, s in enumerate(scores, 1)}
        row |= {f"iou_{j}": s["iou"] for j, s in enumerate(scores, 1)}
        self.rows.append(row)

    def summary(self, *, n_resamples: int, seed: int) -> list[dict]:
        """One row per k: the mean Dice (images whose reference has foreground: Dice is
        undefined, NaN, on the others) with its 95% bootstrap interval, and the mean IoU."""
        out = []
        for j in range(1, self.k + 1):
            dice = np.array([r[f"dice_{j}"] for r in self.rows], dtype=float)
            iou = np.array([r[f"iou_{j}"] for r in self.rows], dtype=float)
            defined = dice[~np.isnan(dice)]
            low, high = bootstrap_ci(defined, n_resamples=n_resamples, seed=seed)
            out.append(
                {
                    "k": j,
                    "n_images": int(defined.size),
                    "dice": float(defined.mean()) if defined.size else math.nan,
                    "dice_ci_low": low,
                    "dice_ci_high": high,
                    "iou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else math.nan,
                }
            )
        return out

    def write(self, extra_dir: Path, *, n_resamples: int, seed: int) -> list[dict]:
        summary = self.summary(n_resamples=n_resamples, seed=seed)
        write_csv(extra_dir / "points_curve.csv", summary, list(summary[0]))
        fields = ["id", *(f"dice_{j}" for j in range(1, self.k + 1))]
        write_csv(
            extra_dir / "points_curve_per_image.csv",
            [{k: r[k] for k in fields} for r in self.rows],
            fields,
        )
        return summary


def auto_compare(
    predictor,
    entry: SamLoraEntry,
    *,
    tests: list[dict],
    raw_dir: Path,
    channels: str,
    extra_dir: Path,
    min_area: int,
    n_resamples: int,
    seed: int,
) -> dict:
    """The automatic mask generator of ``entry.auto_compare`` on the base SAM and on the
    adapted one of ``predictor`` (the evaluated ``sam_lora`` model: its segment_anything
    ``Sam``, LoRA merged), over the test images ``tests`` (manifest rows of ``raw_dir``);
    writes the files the module docstring lists under ``extra_dir`` and returns the summary
    (auto_compare.json's content)."""
    from segbench.sam.build import build_sam

    settings: AutoMaskConfig = entry.auto_compare
    base = build_sam(
        entry.variant,
        image_size=entry.image_size,
        checkpoint=entry.checkpoint,
        sha256=entry.sha256,
        init_seed=entry.init_seed,
    )
    sams = {"base": base.to(predictor.device).eval(), "adapted": predictor.model.sam.eval()}
    for kind in sams:
        (extra_dir / "auto" / kind).mkdir(parents=True)
    rows = []
    for rec in tqdm(tests, desc=f"auto masks@{predictor.name} (base, adapted)", unit="img"):
        image = read_image(raw_dir / rec["image"], channels)
        mask = read_mask(raw_dir / rec["mask"], 2)
        row = {"id": rec["id"]}
        for kind, sam in sams.items():
            pred = automatic_mask(sam, image, settings, predictor)
            pred = to_labels(pred, 0.5, min_area)
            write_mask(extra_dir / "auto" / kind / f"{rec['id']}.png", pred)
            score = binary_metrics(pred, mask)
            row |= {
                f"dice_{kind}": score["dice"],
                f"iou_{kind}": score["iou"],
                f"pred_fraction_{kind}": float(pred.mean()),
            }
        row["ref_fraction"] = float(mask.mean())
        rows.append(row)
    fields = [
        "id",
        "dice_base",
        "dice_adapted",
        "iou_base",
        "iou_adapted",
        "pred_fraction_base",
        "pred_fraction_adapted",
        "ref_fraction",
    ]
    write_csv(extra_dir / "auto_compare.csv", rows, fields)
    summary = summarize_auto(rows, n_resamples=n_resamples, seed=seed)
    summary |= {
        "settings": settings.model_dump(),
        "variant": entry.variant,
        "checkpoint": entry.checkpoint,
        "random_init": entry.checkpoint is None,
    }
    write_json(extra_dir / "auto_compare.json", summary)
    return summary


def summarize_auto(rows: list[dict], *, n_resamples: int, seed: int) -> dict:
    """Means with 95% bootstrap intervals for base and adapted, and their paired difference
    (adapted - base, images where both Dice are defined): interval and Wilcoxon p."""
    out: dict = {"n_images": len(rows)}
    for kind in ("base", "adapted"):
        dice = np.array([r[f"dice_{kind}"] for r in rows], dtype=float)
        low, high = bootstrap_ci(dice, n_resamples=n_resamples, seed=seed)
        out[kind] = {
            "dice": float(np.nanmean(dice)) if np.any(~np.isnan(dice)) else math.nan,
            "dice_ci_low": low,
            "dice_ci_high": high,
            "iou": float(np.nanmean([r[f"iou_{kind}"] for r in rows])) if rows else math.nan,
        }
    adapted = [r["dice_adapted"] for r in rows]
    base = [r["dice_base"] for r in rows]
    test = wilcoxon_paired(adapted, base)
    diffs = np.array(adapted, dtype=float) - np.array(base, dtype=float)
    low, high = bootstrap_ci(diffs, n_resamples=n_resamples, seed=seed)
    out["difference"] = test | {"ci_low": low, "ci_high": high}
    return out


@torch.inference_mode()
def automatic_mask(sam, image: np.ndarray, settings: AutoMaskConfig, predictor) -> np.ndarray:
    """SAM's automatic masks, merged, for one full-size (H, W[, 3]) image, shown to SAM as the
    zero-shot entries see it (:meth:`~segbench.predict.Predictor.unit_image` of the evaluated
    model's ``predictor``); an (H, W) float32 0/1 mask at full size."""
    from segbench.sam.zero_shot import ZeroShot, to_sam_rgb

    unit, full = predictor.unit_image(image)
    zero_shot = ZeroShot(sam, auto=settings)
    zero_shot.set_image(to_sam_rgb(unit))
    return predictor.to_full(zero_shot.predict("auto"), full)


def read_extra(eval_dir: str | Path) -> dict:
    """What ``eval_dir/extra`` holds, for the report: ``{"points_curve": [summary rows] |
    None, "auto_compare": {summary, "rows": per-image rows, "dir": Path} | None}``. A
    directory without ``extra/`` (an evaluation written before it existed) holds nothing."""
    extra = Path(eval_dir) / EXTRA
    out: dict = {"points_curve": None, "auto_compare": None}
    if not (extra / INDEX).is_file():
        return out
    index = read_json(extra / INDEX)
    if index.get("points_curve"):
        out["points_curve"] = [
            {k: (int(v) if k in ("k", "n_images") else _float(v)) for k, v in row.items()}
            for row in read_csv(extra / "points_curve.csv")
        ]
    if index.get("auto_compare"):
        rows = [
            {k: (v if k == "id" else _float(v)) for k, v in row.items()}
            for row in read_csv(extra / "auto_compare.csv")
        ]
        out["auto_compare"] = read_json(extra / "auto_compare.json") | {
            "rows": rows,
            "dir": extra / "auto",
        }
    return out


def _float(value: str) -> float:
    return math.nan if value in ("", "nan", "None") else float(value)
