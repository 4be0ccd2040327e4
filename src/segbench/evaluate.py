"""``evaluate(model_dir, params, raw_dir, out_dir) -> metrics`` on the full-size test images.

Each test image is predicted at full size (sliding windows at the working resolution, blended
as ``evaluate.blend`` says; with ``evaluate.tta``, averaged over flipped or rotated views of
the image), turned into a mask and scored. Two classes: the threshold (fixed,
or tuned on the validation images first) and the optional removal of small components, scored
with :func:`segbench.metrics.binary_metrics`. Several classes: each pixel's most probable class
(argmax; nothing to tune), small components of a class turned background, scored per class
with :func:`segbench.metrics.multiclass_row` (ignored pixels count for nothing). Trained
networks also get their *test loss*: their training loss on the test images
(:mod:`segbench.cardloss`).

Output layout (``out_dir``)::

    metrics.json     means, stds and 95% bootstrap intervals over test images, counts, the
                     threshold used, cost figures (training's and inference's), the
                     ``oracle_prompts`` / ``random_init`` notes (the DVC metrics file; the same
                     dict goes to MLflow as ``test_*``), written through its schema,
                     :class:`segbench.evalmetrics.EvalMetrics`
    per_image.csv    id, the metrics, the confusion counts, foreground fractions (DVC plots);
                     several classes: miou, mpa, pixel_accuracy, dice, iou, precision, recall
                     (foreground means), then iou_k, dice_k, precision_k, recall_k per class
    confusion.csv    the confusion matrix pooled over the test images: one row per reference
                     class, one column per predicted class, pixel counts
    threshold.csv    at each candidate threshold, the mean per-image validation score it was
                     chosen on and the pooled validation Dice (``threshold: tune``; the header
                     alone otherwise)
    seeds.csv        per test image, the score of each of the model's runs (seeds, folds:
                     :mod:`segbench.evalruns`); per_image.csv's ``score`` is their mean
    objects.csv      two classes: every reference and predicted object of the test images
                     (image, source, object, area, diameter; :mod:`segbench.evalobjects`,
                     whose per-image object F1, PQ and count error join per_image.csv);
                     the header alone with several classes
    pred/<id>.png    predicted masks: {0, 255}, or class indices
    extra/           what an entry asks for beyond its row (:mod:`segbench.evalextra`): the
                     Dice-against-clicks curve, SAM against its LoRA-adapted self; its
                     index.json says which
    card.json        the evaluated model's card, and
    history.csv      its training history, copied: the directory describes its row of the
                     report on its own
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segbench.cardloss import image_loss, loss_for
from segbench.classes import IGNORE, read_channels, read_classes
from segbench.config import Params
from segbench.cost import peak_memory_mb
from segbench.datahash import split_hash
from segbench.errors import SegbenchError
from segbench.evalextra import EXTRA, PointsCurve, auto_compare
from segbench.evalmetrics import EvalMetrics, write_extra_index
from segbench.evalobjects import OBJECT_METRIC_FIELDS, OBJECT_ROW_FIELDS, OBJECTS_FILE, ObjectTally
from segbench.evalruns import (
    SEEDS_FILE,
    THRESHOLD_FIELDS,
    repeat_dirs,
    run_scores,
    seed_fields,
    seed_rows,
    seed_run,
    validation_pass,
)
from segbench.io import (
    atomic_dir,
    read_csv,
    read_image,
    read_json,
    read_mask,
    write_csv,
    write_mask,
)
from segbench.metrics import (
    METRICS,
    binary_metrics,
    multiclass_row,
    summarize,
    summarize_multiclass,
)
from segbench.modelcard import CARD_FILE
from segbench.postprocess import to_labels
from segbench.predict import Predictor, load_predictor
from segbench.stats import SMALL_TEST_SET, bootstrap_ci
from segbench.timing import phase
from segbench.tracking import log_artifacts, log_metrics, mlflow_run, run_tags

PER_IMAGE_FIELDS = [
    "id",
    "score",  # the ranking criterion (dice_all), averaged over the model's seeds
    *METRICS,
    "fpr",
    "tp",
    "fp",
    "fn",
    "tn",
    "ref_fraction",
    "pred_fraction",
]
MULTICLASS_FIELDS = ["miou", "mpa", "pixel_accuracy", "dice", "iou", "precision", "recall"]


def per_image_fields(num_classes: int) -> list[str]:
    """The columns of ``per_image.csv`` for ``num_classes`` classes."""
    if num_classes == 2:
        return [*PER_IMAGE_FIELDS, *OBJECT_METRIC_FIELDS]
    per_class = [
        f"{m}_{k}" for m in ("iou", "dice", "precision", "recall") for k in range(num_classes)
    ]
    return ["id", "score", *MULTICLASS_FIELDS, *per_class, "ref_fraction", "pred_fraction"]


def evaluate(
    model_dir: str | Path, params: Params, raw_dir: str | Path, out_dir: str | Path
) -> dict:
    """Predict every test image of ``raw_dir`` with ``model_dir``; write and return metrics."""
    model_dir, raw_dir = Path(model_dir), Path(raw_dir)
    cfg = params.evaluate
    predictor = load_predictor(
        model_dir, overlap=cfg.overlap, batch_size=cfg.batch_size, blend=cfg.blend, tta=cfg.tta
    )
    manifest = read_csv(raw_dir / "manifest.csv")
    tests = [r for r in manifest if r["split"] == "test"]
    vals = [r for r in manifest if r["split"] == "val"]
    spec, channels = read_classes(raw_dir), read_channels(raw_dir)
    card = predictor.card
    if card.classes != list(spec.names):
        raise SegbenchError(
            f"{model_dir}: trained for the classes {', '.join(card.classes)}, but {raw_dir} "
            f"holds {', '.join(spec.names)}; re-run its train stage on this data"
        )
    n_classes = spec.num_classes
    loss_fn = loss_for(card) if card.train is not None else None
    predictor.warmup()
    seed_dirs = repeat_dirs(model_dir)
    with atomic_dir(out_dir) as tmp:
        val = validation_pass(predictor, params, raw_dir, vals)
        threshold, curve = val["threshold"], val["curve"]
        # Always written (header only when nothing was tuned): a fixed set of DVC outputs.
        write_csv(tmp / "threshold.csv", curve, THRESHOLD_FIELDS)
        (tmp / "pred").mkdir()
        rows, seconds, losses = [], 0.0, []
        clicks = (
            PointsCurve(card.entry.k_points) if getattr(card.entry, "points_curve", False) else None
        )
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        objects = ObjectTally(raw_dir, **cfg.objects.model_dump()) if n_classes == 2 else None
        for rec in tqdm(tests, desc=f"evaluate@{predictor.name}", unit="img"):
            image = read_image(raw_dir / rec["image"], channels)
            mask = read_mask(raw_dir / rec["mask"], n_classes)
            # Timed with SAM's embedding cache bypassed (the encoder runs on every image, as on
            # a user's new image) and after the warm-up above: whether another entry filled
            # the shared cache first must not change a row's speed.
            with predictor.cache_off():
                start = time.perf_counter()
                # The reference is used only by oracle models (SAM prompted from the truth).
                proba = predictor.predict_proba(image, mask, image_id=rec["id"])
                pred = to_labels(proba, threshold, cfg.min_area)
                seconds += time.perf_counter() - start
            if clicks is not None:  # untimed; the image's embedding is reused
                masks = predictor.predict_points_curve(image, mask, image_id=rec["id"])
                clicks.add(rec["id"], [to_labels(m, threshold, cfg.min_area) for m in masks], mask)
            write_mask(tmp / "pred" / f"{rec['id']}.png", pred, n_classes)
            if loss_fn is not None:
                losses.append(image_loss(loss_fn, proba, mask))
            row, counts = _score(pred, mask, n_classes)
            if objects is not None:
                row |= objects.add(rec, pred, mask)
            confusion += counts
            rows.append({"id": rec["id"], **row})
        metrics = summarize(rows) if n_classes == 2 else _summarize_multiclass(rows, spec)
        seeds = [seed_run(d, params, raw_dir, tests, manifest) for d in seed_dirs]
        metrics |= run_scores(rows, val, seeds, predictor, cfg)
        for name in ("dice", "iou") if n_classes == 2 else ("dice", "iou", "miou"):
            low, high = bootstrap_ci(
                [r[name] for r in rows], n_resamples=cfg.bootstrap_resamples, seed=cfg.seed
            )
            metrics |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
        if n_classes > 2:
            metrics |= _class_intervals(rows, n_classes, cfg)
            write_csv(tmp / OBJECTS_FILE, [], OBJECT_ROW_FIELDS)  # a fixed set of DVC outputs
        else:
            objects.write(tmp)
            metrics |= objects.summary(n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
        write_csv(
            tmp / "confusion.csv",
            [
                {"reference": name, **dict(zip(spec.names, map(int, confusion[k]), strict=True))}
                for k, name in enumerate(spec.names)
            ],
            ["reference", *spec.names],
        )
        training = predictor.card.training
        metrics.update(
            threshold=threshold,
            threshold_tuned=val["tuned"],
            min_area=cfg.min_area,
            blend=cfg.blend,
            tta=cfg.tta,
            small_test_set=len(rows) < SMALL_TEST_SET,
            # Training's cost beside inference's, so that one file holds a row's figures.
            params_total=training.params_total,
            params_trainable=training.params_trainable,
            train_seconds=training.seconds,
            train_cache_seconds=training.cache_seconds,
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
        if predictor.card.ensemble is not None:
            metrics["ensemble_collapsed_to"] = predictor.card.ensemble.collapsed_to
        if losses:
            metrics["test_loss"] = float(np.mean(losses))
        if card.train is not None:
            metrics["train_epochs"] = card.train.epochs
            metrics["train_batch_size"] = card.train.batch_size * card.train.accumulate
        write_csv(tmp / "per_image.csv", rows, per_image_fields(n_classes))
        write_csv(
            tmp / SEEDS_FILE, seed_rows(rows, predictor, seeds), seed_fields(predictor, seeds)
        )
        _extras(predictor, params, raw_dir, tests, clicks, tmp / EXTRA)
        # Through the schema the report reads it with: a key evaluate adds or renames without
        # it fails here, not in the report. NaN is written as null.
        EvalMetrics.model_validate(metrics).write(tmp)
        for name in (CARD_FILE, "history.csv"):
            shutil.copyfile(model_dir / name, tmp / name)
        example = read_image(raw_dir / tests[0]["image"], channels) if tests else None
        _log_to_mlflow(model_dir, predictor, metrics, tmp, raw_dir, example)
    if metrics["small_test_set"]:
        print(
            f"warning: evaluate@{predictor.name}: only {len(rows)} test images; differences "
            f"between models are hard to tell apart below {SMALL_TEST_SET} (see the report)",
            file=sys.stderr,
        )
    return metrics


def _extras(predictor: Predictor, params: Params, raw_dir: Path, tests, clicks, extra: Path):
    """``extra/``: the points curve accumulated in the main pass, and the base-vs-adapted
    automatic masks of a ``sam_lora`` entry with ``auto_compare`` (:mod:`segbench.evalextra`)."""
    cfg, entry = params.evaluate, predictor.card.entry
    extra.mkdir()
    if clicks is not None:
        clicks.write(extra, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
    compare = getattr(entry, "auto_compare", None) is not None
    if compare:
        auto_compare(
            predictor,
            entry,
            tests=tests,
            raw_dir=raw_dir,
            channels=read_channels(raw_dir),
            extra_dir=extra,
            min_area=cfg.min_area,
            n_resamples=cfg.bootstrap_resamples,
            seed=cfg.seed,
        )
    write_extra_index(extra.parent, points_curve=clicks is not None, auto_compare=compare)


def _score(pred: np.ndarray, mask: np.ndarray, n_classes: int) -> tuple[dict, np.ndarray]:
    """One image's ``per_image.csv`` row and its (C, C) confusion matrix."""
    if n_classes == 2:
        row = binary_metrics(pred, mask)
        counts = np.array([[row["tn"], row["fp"]], [row["fn"], row["tp"]]], dtype=np.int64)
        row.update(ref_fraction=float(mask.mean()), pred_fraction=float(pred.mean()))
        return row, counts
    row, counts = multiclass_row(pred, mask, n_classes, ignore_index=IGNORE)
    labelled = mask != IGNORE
    n = max(1, int(labelled.sum()))
    row.update(
        ref_fraction=float(((mask > 0) & labelled).sum() / n),
        pred_fraction=float(((pred > 0) & labelled).sum() / n),
    )
    return row, counts


def _summarize_multiclass(rows: list[dict], spec) -> dict:
    """metrics.json's figures with several classes: the same keys as two classes (foreground
    means for Dice, IoU, precision, recall; mIoU and mPA over classes), the empty-reference
    counts (images with no foreground class), and the per-class lists."""
    n = spec.num_classes
    out = summarize_multiclass(rows, n)
    empty = [r for r in rows if r["ref_fraction"] == 0]
    out["n_empty_reference"] = len(empty)
    out["empty_fpr"] = float(np.mean([r["pred_fraction"] for r in empty])) if empty else math.nan
    out["empty_with_fp"] = sum(1 for r in empty if r["pred_fraction"] > 0)
    out["n_empty_prediction"] = sum(1 for r in rows if r["pred_fraction"] == 0)
    out["num_classes"] = n
    out["class_names"] = list(spec.names)
    out["class_images"] = [
        sum(1 for r in rows if not math.isnan(r[f"recall_{k}"])) for k in range(n)
    ]
    return out


def _class_intervals(rows: list[dict], n_classes: int, cfg) -> dict:
    """95% bootstrap intervals of each class's IoU over the test images where it is defined."""
    lows, highs = [], []
    for k in range(n_classes):
        values = [r[f"iou_{k}"] for r in rows if not math.isnan(r[f"iou_{k}"])]
        low, high = bootstrap_ci(values, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
        lows.append(low)
        highs.append(high)
    return {"class_iou_ci_low": lows, "class_iou_ci_high": highs}


def _log_to_mlflow(
    model_dir: Path,
    predictor: Predictor,
    metrics: dict,
    tmp: Path,
    raw_dir: Path,
    example: np.ndarray | None,
) -> str | None:
    """Test metrics into the model's own training run (``evaluate@m`` joins ``train@m``),
    and the model as an MLflow pyfunc with the settings it was just evaluated with
    (:mod:`segbench.pyfunc`, which tags the run with its URI); return that URI (None: not
    servable, or no test image to take an input example from). The URI is not in
    metrics.json: it differs on every run, and DVC's outputs must not."""
    from segbench.pyfunc import log_pyfunc, servable  # mlflow.pyfunc: imported when needed

    run_id = predictor.card.mlflow_run_id
    summary = read_json(raw_dir / "summary.json")
    tags = run_tags(
        stage=f"evaluate@{predictor.name}",
        data_version=predictor.card.data_version,
        device=str(predictor.device),
        # The images and masks these test figures come from (train/val are in data_version).
        test_data_hash=summary.get("test_data_hash") or split_hash(raw_dir, "test"),
    )
    with mlflow_run(run_id=run_id, run_name=predictor.name, tags=tags):
        log_metrics(
            {
                f"test_{k}": v
                for k, v in metrics.items()
                if isinstance(v, int | float) and not math.isnan(v)
            }
        )
        # The per-image scores behind the report's intervals and p-values.
        for name in ("per_image.csv", "threshold.csv", SEEDS_FILE):
            log_artifacts(tmp / name, "eval")
        if example is None or servable(predictor.card) is not None:
            return None
        settings = {
            "threshold": metrics["threshold"],
            "min_area": metrics["min_area"],
            "overlap": predictor.overlap,
            "blend": predictor.blend,
            "batch_size": predictor.batch_size,
            "tta": predictor.tta,
        }
        with phase("mlflow"), tempfile.TemporaryDirectory() as work:
            return log_pyfunc(model_dir, predictor.card, example, settings, Path(work))
