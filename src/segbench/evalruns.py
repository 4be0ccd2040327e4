"""The runs behind one row: a model's validation pass, its further seeds and folds, and the
per-image score averaged over them (``evaluate`` calls these; the report ranks and tests on
what they return).

The **score** is the per-image criterion models are ranked, tested and tuned on
(:mod:`segbench.metrics`): Dice over all images with two classes, mIoU with several. The
**validation pass** predicts every validation image as the test images are predicted, tunes the
threshold there (trained networks) and gives the mean validation score the report chooses its
reference on. A model trained with ``train.repeats`` > 1 or ``data.split.folds`` has further
runs under ``<model dir>/repeats/``: each gets its own validation pass (on its own held-out fold)
and its per-image test scores; ``seeds.csv`` keeps them, and ``per_image.csv``'s ``score`` is
their mean.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segbench.classes import IGNORE, read_channels
from segbench.config import Params
from segbench.io import read_image, read_mask
from segbench.metrics import confusion, dice_all, multiclass_row
from segbench.modelcard import REPEATS_DIR
from segbench.postprocess import to_labels
from segbench.predict import Predictor, load_predictor
from segbench.stats import bootstrap_ci
from segbench.threshold import tune_threshold

THRESHOLD_FIELDS = ["threshold", "val_score", "val_dice"]
SEEDS_FILE = "seeds.csv"


def criterion(pred: np.ndarray, mask: np.ndarray, n_classes: int) -> float:
    """The per-image score models are ranked, tested and tuned on (:mod:`segbench.metrics`):
    Dice over all images with two classes, mIoU with several (ignored pixels left out)."""
    if n_classes == 2:
        c = confusion(pred, mask)
        return dice_all(c["tp"], c["fp"], c["fn"])
    return multiclass_row(pred, mask, n_classes, ignore_index=IGNORE)[0]["miou"]


def validation_pass(predictor: Predictor, params: Params, raw_dir: Path, vals: list[dict]) -> dict:
    """The validation pass: every validation image predicted once, as the test images are.

    Returns ``threshold`` (fixed; tuned here on the per-image criterion for trained networks;
    the ensemble's, searched with its weights), ``curve`` (the tuning curve, empty if not
    tuned), ``tuned``, and ``score``: the mean per-image criterion on the validation images at
    that threshold (NaN without validation images). The report chooses its reference row on
    ``score``, before any test figure is looked at.
    """
    cfg = params.evaluate
    n_classes = predictor.num_classes
    fixed = {"threshold": 0.5, "curve": [], "tuned": False}
    if n_classes == 2 and cfg.threshold != "tune":
        fixed["threshold"] = float(cfg.threshold)
    if not vals:
        return fixed | {"score": math.nan, "n_images": 0}
    channels = read_channels(raw_dir)
    probas, masks = [], []
    for rec in tqdm(vals, desc=f"evaluate@{predictor.name} on val", unit="img"):
        mask = read_mask(raw_dir / rec["mask"], n_classes)
        image = read_image(raw_dir / rec["image"], channels)
        probas.append(predictor.predict_proba(image, mask, image_id=rec["id"]))
        masks.append(mask)
    out = fixed
    fit = predictor.card.ensemble
    if n_classes == 2 and cfg.threshold == "tune":
        if fit is not None and fit.threshold is not None:  # chosen with the weights
            out = {"threshold": fit.threshold, "curve": [], "tuned": True}
        elif predictor.kind not in ("classical", "zero_shot"):  # theirs are masks already
            threshold, curve = tune_threshold(probas, masks)
            out = {"threshold": threshold, "curve": curve, "tuned": True}
    scores = [
        criterion(to_labels(p, out["threshold"], cfg.min_area), m, n_classes)
        for p, m in zip(probas, masks, strict=True)
    ]
    return out | {"score": float(np.mean(scores)), "n_images": len(scores)}


def repeat_dirs(model_dir: Path) -> list[Path]:
    """The model directories of a model's further runs (``train.repeats`` > 1, or
    ``data.split.folds``), in training order."""
    root = Path(model_dir) / REPEATS_DIR
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: int(d.name))


def held_out(manifest: list[dict], fold: int) -> list[dict]:
    """The validation images of cross-validation fold ``fold``: the train/val images of that
    fold (``data.split.folds``), or the plain val split for fold 0 without folds."""
    if any(r.get("fold", "") != "" for r in manifest):
        return [r for r in manifest if r.get("fold", "") != "" and int(r["fold"]) == fold]
    return [r for r in manifest if r["split"] == "val"]


def seed_run(model_dir: Path, params: Params, raw_dir: Path, tests, manifest) -> dict:
    """A further run of the model (another seed, or another fold): its own validation pass
    on its held-out images (threshold, score) and its per-image criterion on every test image
    (in ``tests``' order)."""
    cfg = params.evaluate
    predictor = load_predictor(
        model_dir, overlap=cfg.overlap, batch_size=cfg.batch_size, blend=cfg.blend
    )
    val = validation_pass(predictor, params, raw_dir, held_out(manifest, predictor.card.fold))
    channels, n = read_channels(raw_dir), predictor.num_classes
    scores = []
    for rec in tqdm(tests, desc=f"evaluate@{predictor.name} seed {model_dir.name}", unit="img"):
        mask = read_mask(raw_dir / rec["mask"], n)
        proba = predictor.predict_proba(
            read_image(raw_dir / rec["image"], channels), mask, image_id=rec["id"]
        )
        scores.append(criterion(to_labels(proba, val["threshold"], cfg.min_area), mask, n))
    card = predictor.card
    return {"seed": card.train.seed, "fold": card.fold, "val": val, "scores": scores}


def _first_seed(predictor: Predictor) -> int | None:
    return predictor.card.train.seed if predictor.card.train is not None else None


def run_scores(rows: list[dict], val: dict, seeds: list[dict], predictor: Predictor, cfg) -> dict:
    """The ranking figures of metrics.json, and each row's ``score``: the per-image criterion
    averaged over the seeds (the first seed's is the row's own). ``score`` (mean, std, 95%
    interval over test images), ``val_score`` (mean over seeds), and with several seeds the
    seed list, each seed's mean test and validation score and their spread."""
    key = "dice_all" if predictor.num_classes == 2 else "miou"
    for i, row in enumerate(rows):
        row["score"] = float(np.mean([row[key], *(s["scores"][i] for s in seeds)]))
    values = [r["score"] for r in rows]
    low, high = bootstrap_ci(values, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
    val_scores = [val["score"], *(s["val"]["score"] for s in seeds)]
    out = {
        "score": float(np.mean(values)) if values else math.nan,
        "score_std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
        "score_ci_low": low,
        "score_ci_high": high,
        "score_metric": key,
        "val_score": float(np.mean(val_scores)),
        "n_val_images": val["n_images"],
    }
    if seeds:
        test_means = [float(np.mean([r[key] for r in rows]))]
        test_means += [float(np.mean(s["scores"])) for s in seeds]
        if any(s["fold"] for s in seeds):
            out["folds"] = [predictor.card.fold, *(s["fold"] for s in seeds)]
        out |= {
            "seeds": [_first_seed(predictor), *(s["seed"] for s in seeds)],
            "seed_scores": test_means,
            "seed_val_scores": val_scores,
            "seed_std": float(np.std(test_means, ddof=1)),
        }
    return out


def seed_fields(predictor: Predictor, seeds: list[dict]) -> list[str]:
    """``seeds.csv``'s columns: ``seed_<s>``, or ``fold_<f>_seed_<s>`` with folds."""
    first = _first_seed(predictor)
    runs = [(predictor.card.fold, first if first is not None else 0)]
    runs += [(s["fold"], s["seed"]) for s in seeds]
    folds = any(f for f, _ in runs)
    return ["id", *(f"fold_{f}_seed_{s}" if folds else f"seed_{s}" for f, s in runs)]


def seed_rows(rows: list[dict], predictor: Predictor, seeds: list[dict]) -> list[dict]:
    """``seeds.csv``: per test image, the criterion of each seed's model (one column when the
    model was trained once); ``per_image.csv``'s ``score`` is their mean."""
    key = "dice_all" if predictor.num_classes == 2 else "miou"
    fields = seed_fields(predictor, seeds)
    return [
        dict(zip(fields, [row["id"], row[key], *(s["scores"][i] for s in seeds)], strict=True))
        for i, row in enumerate(rows)
    ]
