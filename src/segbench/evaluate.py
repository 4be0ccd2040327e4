"""``evaluate(model_dir, params, raw_dir, out_dir) -> metrics`` on the full-size test images.

Each test image is predicted at full size (sliding windows at the working resolution, blended
as ``evaluate.blend`` says), turned into a mask by the threshold (fixed, or tuned on the
validation images first) and the optional removal of small components, and scored with
:func:`segbench.metrics.binary_metrics`.

Output layout (``out_dir``)::

    metrics.json     means, stds and 95% bootstrap intervals over test images, counts, the
                     threshold used, cost figures (training's and inference's), the
                     ``oracle_prompts`` / ``random_init`` notes (the DVC metrics file; the same
                     dict goes to MLflow as ``test_*``), written through its schema,
                     :class:`segbench.evalmetrics.EvalMetrics`
    per_image.csv    id, the metrics, the confusion counts, foreground fractions (DVC plots)
    threshold.csv    pooled validation Dice at each candidate threshold (``threshold: tune``;
                     the header alone otherwise)
    pred/<id>.png    predicted masks, {0, 255}
    card.json        the evaluated model's card, and
    history.csv      its training history, copied: the directory describes its row of the
                     report on its own
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from segbench.config import Params
from segbench.cost import peak_memory_mb
from segbench.evalmetrics import EvalMetrics
from segbench.io import (
    atomic_dir,
    read_csv,
    read_image,
    read_mask,
    write_csv,
    write_mask,
)
from segbench.metrics import METRICS, binary_metrics, summarize
from segbench.modelcard import CARD_FILE
from segbench.postprocess import binarize
from segbench.predict import Predictor, load_predictor
from segbench.stats import SMALL_TEST_SET, bootstrap_ci
from segbench.threshold import tune_threshold
from segbench.tracking import log_artifacts, log_metrics, mlflow_run, run_tags

PER_IMAGE_FIELDS = [
    "id",
    *METRICS,
    "fpr",
    "tp",
    "fp",
    "fn",
    "tn",
    "ref_fraction",
    "pred_fraction",
]


def evaluate(
    model_dir: str | Path, params: Params, raw_dir: str | Path, out_dir: str | Path
) -> dict:
    """Predict every test image of ``raw_dir`` with ``model_dir``; write and return metrics."""
    model_dir, raw_dir = Path(model_dir), Path(raw_dir)
    cfg = params.evaluate
    predictor = load_predictor(
        model_dir, overlap=cfg.overlap, batch_size=cfg.batch_size, blend=cfg.blend
    )
    manifest = read_csv(raw_dir / "manifest.csv")
    tests = [r for r in manifest if r["split"] == "test"]
    vals = [r for r in manifest if r["split"] == "val"]
    predictor.warmup()
    with atomic_dir(out_dir) as tmp:
        threshold, curve = _threshold(predictor, params, raw_dir, vals)
        # Always written (header only when nothing was tuned): a fixed set of DVC outputs.
        write_csv(tmp / "threshold.csv", curve, ["threshold", "val_dice"])
        (tmp / "pred").mkdir()
        rows, seconds = [], 0.0
        for rec in tqdm(tests, desc=f"evaluate@{predictor.name}", unit="img"):
            image, mask = read_image(raw_dir / rec["image"]), read_mask(raw_dir / rec["mask"])
            start = time.perf_counter()
            # The reference is used only by oracle models (SAM prompted from the ground truth).
            proba = predictor.predict_proba(image, mask, image_id=rec["id"])
            pred = binarize(proba, threshold, cfg.min_area)
            seconds += time.perf_counter() - start
            write_mask(tmp / "pred" / f"{rec['id']}.png", pred)
            rows.append({"id": rec["id"], **binary_metrics(pred, mask)})
            rows[-1].update(ref_fraction=float(mask.mean()), pred_fraction=float(pred.mean()))
        metrics = summarize(rows)
        for name in ("dice", "iou"):
            low, high = bootstrap_ci(
                [r[name] for r in rows], n_resamples=cfg.bootstrap_resamples, seed=cfg.seed
            )
            metrics |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
        training = predictor.card.training
        metrics.update(
            threshold=threshold,
            threshold_tuned=bool(curve),
            min_area=cfg.min_area,
            blend=cfg.blend,
            small_test_set=len(rows) < SMALL_TEST_SET,
            # Training's cost beside inference's, so that one file holds a row's figures.
            params_total=training.params_total,
            params_trainable=training.params_trainable,
            train_seconds=training.seconds,
            device_count=training.device_count,
            train_device=training.device,
            train_peak_memory_mb=training.peak_memory_mb,
            images_per_second=len(rows) / seconds if seconds else math.nan,
            peak_memory_mb=peak_memory_mb(predictor.device),
            device=str(predictor.device),
            # So that no copy of these numbers travels without what qualifies them.
            **predictor.card.notes(),
        )
        if curve:
            metrics["val_dice_at_threshold"] = next(
                c["val_dice"] for c in curve if c["threshold"] == threshold
            )
        write_csv(tmp / "per_image.csv", rows, PER_IMAGE_FIELDS)
        # Through the schema the report reads it with: a key evaluate adds or renames without
        # it fails here, not in the report. NaN is written as null.
        EvalMetrics.model_validate(metrics).write(tmp)
        for name in (CARD_FILE, "history.csv"):
            shutil.copyfile(model_dir / name, tmp / name)
        _log_to_mlflow(model_dir, predictor, metrics, tmp)
    if metrics["small_test_set"]:
        print(
            f"warning: evaluate@{predictor.name}: only {len(rows)} test images; differences "
            f"between models are hard to tell apart below {SMALL_TEST_SET} (see the report)",
            file=sys.stderr,
        )
    return metrics


def _threshold(
    predictor: Predictor, params: Params, raw_dir: Path, vals: list[dict]
) -> tuple[float, list[dict]]:
    """The threshold to use, and the validation curve it was chosen on (empty if fixed).

    Models whose output is already a mask (Otsu, zero-shot SAM) have nothing to tune.
    """
    cfg = params.evaluate
    if cfg.threshold != "tune":
        return float(cfg.threshold), []
    if predictor.kind in ("classical", "zero_shot") or not vals:
        return 0.5, []
    probas, masks = [], []
    for rec in tqdm(vals, desc=f"threshold@{predictor.name} on val", unit="img"):
        mask = read_mask(raw_dir / rec["mask"])
        image = read_image(raw_dir / rec["image"])
        probas.append(predictor.predict_proba(image, mask, image_id=rec["id"]))
        masks.append(mask)
    return tune_threshold(probas, masks)


def _log_to_mlflow(model_dir: Path, predictor: Predictor, metrics: dict, tmp: Path) -> None:
    """Test metrics into the model's own training run (``evaluate@m`` joins ``train@m``)."""
    run_id = predictor.card.mlflow_run_id
    tags = run_tags(
        stage=f"evaluate@{predictor.name}",
        data_version=predictor.card.data_version,
        device=str(predictor.device),
    )
    with mlflow_run(run_id=run_id, run_name=predictor.name, tags=tags):
        log_metrics(
            {
                f"test_{k}": v
                for k, v in metrics.items()
                if isinstance(v, int | float) and not math.isnan(v)
            }
        )
        for name in ("per_image.csv", "threshold.csv"):
            log_artifacts(tmp / name, "eval")
