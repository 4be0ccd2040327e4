"""``evaluate(model_dir, params, raw_dir, out_dir) -> metrics`` on the full-size test images.

Output layout (``out_dir``)::

    metrics.json     means and stds of the metrics over test images, counts, cost figures,
                     the ``oracle_prompts`` / ``random_init`` notes (the DVC metrics file; the
                     same dict goes to MLflow as ``test_*``)
    per_image.csv    id, dice, iou, pixel_accuracy, precision, recall, tp, fp, fn, tn
    pred/<id>.png    predicted masks, {0, 255}
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from tqdm import tqdm

from segbench.config import Params
from segbench.cost import peak_memory_mb
from segbench.io import (
    atomic_dir,
    read_csv,
    read_image,
    read_json,
    read_mask,
    write_csv,
    write_json,
    write_mask,
)
from segbench.metrics import binary_metrics, summarize
from segbench.models.registry import model_notes
from segbench.predict import load_predictor
from segbench.tracking import mlflow_run, run_tags

PER_IMAGE_FIELDS = [
    "id",
    "dice",
    "iou",
    "pixel_accuracy",
    "precision",
    "recall",
    "tp",
    "fp",
    "fn",
    "tn",
]


def evaluate(
    model_dir: str | Path, params: Params, raw_dir: str | Path, out_dir: str | Path
) -> dict:
    """Predict every test image of ``raw_dir`` with ``model_dir``; write and return metrics."""
    import mlflow

    model_dir, raw_dir = Path(model_dir), Path(raw_dir)
    cfg = params.evaluate
    predictor = load_predictor(model_dir, overlap=cfg.overlap, batch_size=cfg.batch_size)
    name = predictor.config.get("name", predictor.config["model"])  # ensembles have their own
    tests = [r for r in read_csv(raw_dir / "manifest.csv") if r["split"] == "test"]
    rows, seconds = [], 0.0
    predictor.warmup()
    with atomic_dir(out_dir) as tmp:
        (tmp / "pred").mkdir()
        for rec in tqdm(tests, desc=f"evaluate@{name}", unit="img"):
            image, mask = read_image(raw_dir / rec["image"]), read_mask(raw_dir / rec["mask"])
            start = time.perf_counter()
            # The reference is used only by oracle models (SAM prompted from the ground truth).
            pred = predictor.predict_proba(image, mask, image_id=rec["id"]) >= cfg.threshold
            seconds += time.perf_counter() - start
            write_mask(tmp / "pred" / f"{rec['id']}.png", pred)
            rows.append({"id": rec["id"], **binary_metrics(pred, mask)})
        metrics = summarize(rows)
        metrics.update(
            images_per_second=len(rows) / seconds if seconds else math.nan,
            peak_memory_mb=peak_memory_mb(predictor.device),
            device=str(predictor.device),
            # So that no copy of these numbers travels without what qualifies them.
            **model_notes(predictor.config["model"], predictor.config["params"]),
        )
        write_csv(tmp / "per_image.csv", rows, PER_IMAGE_FIELDS)
        write_json(tmp / "metrics.json", _finite(metrics))
        run_id = read_json(model_dir / "mlflow.json")["run_id"]
        data_version = predictor.config.get("data_version", "")
        tags = run_tags(
            stage=f"evaluate@{name}", data_version=data_version, device=str(predictor.device)
        )
        with mlflow_run(run_id=run_id, run_name=name, tags=tags):
            mlflow.log_metrics(
                {
                    f"test_{k}": v
                    for k, v in metrics.items()
                    if isinstance(v, int | float) and not math.isnan(v)
                }
            )
            mlflow.log_artifact(str(tmp / "per_image.csv"), artifact_path="eval")
    return metrics


def _finite(metrics: dict) -> dict:
    """NaN -> None so the DVC metrics file is valid JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
