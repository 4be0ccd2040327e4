"""``fit_ensemble(name, params, raw_dir, models_dir, out_dir) -> metrics``: choose mixing weights.

The members are models already trained by ``train@<member>`` (``models_dir/<member>``); nothing is
retrained. Each member predicts every full-size validation image exactly as ``evaluate`` will
predict the test images (same scale, sliding windows, overlap); the weights with the best pooled
validation Dice on a grid over the simplex win (:func:`segbench.models.ensemble.choose_weights`).

Output layout (``out_dir``), a model directory like ``train``'s, so ``evaluate`` and
``segbench predict`` use it unchanged::

    card.json       the model card: the ensembles entry, every member's own card, the chosen
                    weights with the validation Dice of the mix and of each member, the cost
                    (training time counts the members'), the MLflow run
    weights.pt      the ensemble's state dict (every member's weights + the mixing weights)
    search.csv      every weight vector tried and its validation Dice
    history.csv     empty (no epochs: nothing is trained)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segbench.classes import read_channels, read_classes
from segbench.config import Params
from segbench.cost import count_parameters, peak_memory_mb
from segbench.devices import resolve_device
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_csv, read_image, read_mask, write_csv
from segbench.modelcard import HISTORY_FIELDS, EnsembleFit, ModelCard, TrainingSummary
from segbench.models.ensemble import choose_weights, simplex_grid
from segbench.predict import build_from_card, load_predictor
from segbench.tracking import log_artifacts, log_metrics, log_params, mlflow_run, run_tags

# What must agree between members for their probabilities to be averaged pixel by pixel.
_SAME = ("data_version", "prepare", "classes", "in_channels")


def _load_members(names: list[str], models_dir: Path, params: Params, device) -> dict:
    predictors = {}
    for name in names:
        model_dir = models_dir / name
        if not (model_dir / "card.json").is_file():
            raise SegbenchError(
                f"{model_dir}: no trained model (card.json missing); run `dvc repro train@{name}`"
            )
        predictors[name] = load_predictor(
            model_dir,
            overlap=params.evaluate.overlap,
            batch_size=params.evaluate.batch_size,
            blend=params.evaluate.blend,
            device=device,
        )
    first, *rest = names
    for name in rest:
        for key in _SAME:
            if getattr(predictors[name].card, key) != getattr(predictors[first].card, key):
                raise SegbenchError(
                    f"{models_dir / name}: trained on other tiles than {models_dir / first} "
                    f"({key} differs); re-run `dvc repro` so every member sees the same data"
                )
    return predictors


def _validation_probabilities(predictors: dict, raw_dir: Path, label: str):
    """Per validation image, the (K, H, W) stack of member probabilities, and its mask."""
    vals = [r for r in read_csv(raw_dir / "manifest.csv") if r["split"] == "val"]
    if not vals:
        raise SegbenchError(
            f"{label}: the validation split is empty, so there is nothing to choose weights on; "
            "raise data.split.val or give fixed weights"
        )
    channels, n_classes = read_channels(raw_dir), read_classes(raw_dir).num_classes
    probs, masks = [], []
    for rec in tqdm(vals, desc=f"{label}: members on val", unit="img"):
        image = read_image(raw_dir / rec["image"], channels)
        probs.append(np.stack([p.predict_proba(image) for p in predictors.values()]))
        masks.append(read_mask(raw_dir / rec["mask"], n_classes))
    return probs, masks


def fit_ensemble(
    name: str,
    params: Params,
    raw_dir: str | Path,
    models_dir: str | Path,
    out_dir: str | Path,
) -> dict:
    """Choose ``ensembles.<name>``'s weights on the validation split; write and return metrics.

    Returned: ``val_dice`` (pooled over validation pixels) of the ensemble, ``val_dice_<member>``
    of each member alone, ``weight_<member>``, and the cost figures other models report
    (``train_seconds`` counts the members' training too).
    """
    raw_dir, models_dir = Path(raw_dir), Path(models_dir)
    label = f"ensemble@{name}"
    entry = params.ensemble(name)
    members = list(entry.members)
    device = resolve_device("auto")
    start = time.perf_counter()
    predictors = _load_members(members, models_dir, params, device)
    probs, masks = _validation_probabilities(predictors, raw_dir, label)
    grid = simplex_grid(len(members), entry.weight_step)
    if entry.weights is not None:  # fixed by the user: scored, not searched
        fixed = np.asarray(entry.weights, dtype=np.float64) / sum(entry.weights)
        grid = np.vstack([np.eye(len(members)), fixed])
    # With `threshold: tune` the weights are chosen at 0.5, and evaluate then tunes the
    # threshold of the mixed probability on the same validation images.
    threshold = params.evaluate.threshold if params.evaluate.threshold != "tune" else 0.5
    best, scores = choose_weights(probs, masks, grid, threshold)
    if entry.weights is not None:
        best = grid[-1]
    # Each member alone is a vertex of the grid: scored by the very same computation.
    alone = {m: float(scores[_row(grid, np.eye(len(members))[i])]) for i, m in enumerate(members)}
    weights = {m: float(w) for m, w in zip(members, best, strict=True)}
    cards = {m: p.card for m, p in predictors.items()}
    fit = EnsembleFit(
        weights=weights,
        val_dice=float(scores[_row(grid, best)]),
        member_val_dice=alone,
        n_val_images=len(masks),
        weights_tried=len(grid),
        fit_seconds=time.perf_counter() - start,
    )
    card = ModelCard(
        name=name,
        entry=entry,
        prepare=cards[members[0]].prepare,
        in_channels=cards[members[0]].in_channels,
        classes=cards[members[0]].classes,
        class_colors=cards[members[0]].class_colors,
        train=None,
        promoted=None,
        data_version=cards[members[0]].data_version,
        training=TrainingSummary(
            params_total=0,
            params_trainable=0,  # nothing is trained: the weights are chosen, not learned
            seconds=fit.fit_seconds + sum(c.training.seconds for c in cards.values()),
            device=str(device),
            device_count=max(c.training.device_count for c in cards.values()),
            peak_memory_mb=peak_memory_mb(device),
        ),
        members=cards,
        ensemble=fit,
    )
    model = build_from_card(card)
    model.load_state_dict(
        {
            f"members.{m}.{k}": v
            for m, p in predictors.items()
            for k, v in p.model.state_dict().items()
        }
        | {"weights": torch.tensor(list(weights.values()), dtype=torch.float32)}
    )
    training = card.training.model_copy(update=count_parameters(model) | {"params_trainable": 0})
    metrics = {
        "val_dice": fit.val_dice,
        **{f"val_dice_{m}": d for m, d in alone.items()},
        **{f"weight_{m}": w for m, w in weights.items()},
        "n_val_images": fit.n_val_images,
        "weights_tried": fit.weights_tried,
        "fit_seconds": fit.fit_seconds,
        "params_total": training.params_total,
        "params_trainable": 0,
        "train_seconds": training.seconds,
        "device": training.device,
        "device_count": training.device_count,
        "peak_memory_mb": training.peak_memory_mb,
    }
    search = [
        {**{f"weight_{m}": float(w) for m, w in zip(members, row, strict=True)}, "val_dice": s}
        for row, s in zip(grid, scores, strict=True)
    ]
    tags = run_tags(stage=label, data_version=card.data_version, device=str(device))
    with atomic_dir(out_dir) as tmp, mlflow_run(run_name=name, tags=tags) as run:
        log_params(card.model_dump(mode="json", exclude={"members", "training"}))
        log_metrics(metrics)
        torch.save(model.state_dict(), tmp / "weights.pt")
        card.model_copy(update={"training": training, "mlflow_run_id": run.info.run_id}).write(tmp)
        write_csv(tmp / "search.csv", search, list(search[0]))
        write_csv(tmp / "history.csv", [], HISTORY_FIELDS)
        log_artifacts(tmp, "model")
    return metrics


def _row(grid: np.ndarray, weights: np.ndarray) -> int:
    """Index of ``weights`` in ``grid`` (rows are compared with a tolerance)."""
    return int(np.flatnonzero(np.abs(grid - weights).max(axis=1) < 1e-9)[0])
