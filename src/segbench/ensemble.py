"""``fit_ensemble(name, params, raw_dir, models_dir, out_dir) -> metrics``: choose mixing weights
and the threshold, together.

The members are models already trained by ``train@<member>`` (``models_dir/<member>``); nothing is
retrained. Each member predicts every full-size validation image exactly as ``evaluate`` will
predict the test images (same scale, sliding windows, overlap); every weight vector of a grid
over the simplex is scored at every threshold of :data:`segbench.threshold.GRID` on the
criterion models are ranked on (mean per-image Dice over all images; mean per-image mIoU with
several classes, where the argmax decides and there is no threshold), and the best pair wins
(:func:`segbench.models.ensemble.search_weights`). ``evaluate`` then uses that threshold
(``card.ensemble.threshold``) instead of tuning its own on the mixed probability.

Where the best pair gives one member all the weight, the ensemble *is* that member
(``card.ensemble.collapsed_to``). The cost counts only the members with non-zero weight: the
model never runs the others.

Output layout (``out_dir``), a model directory like ``train``'s, so ``evaluate`` and
``segbench predict`` use it unchanged::

    card.json       the model card: the ensembles entry, every member's own card, the chosen
                    weights and threshold with the validation criterion (and pooled Dice) of
                    the mix and of each member alone, the cost (training time counts the
                    members with non-zero weight), the MLflow run
    weights.pt      the ensemble's state dict (every member's weights + the mixing weights)
    search.csv      every weight vector and threshold tried: its criterion and pooled Dice
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
from segbench.models.ensemble import WeightSearch, search_weights, simplex_grid
from segbench.predict import build_from_card, load_predictor
from segbench.threshold import GRID
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
    """Choose ``ensembles.<name>``'s weights and threshold on the validation split; write and
    return metrics.

    Returned: ``val_score`` (the criterion models are ranked on: mean per-image Dice over all
    images, or mIoU with several classes) of the ensemble and ``val_score_<member>`` of each
    member alone at its own best threshold; ``val_dice`` and ``val_dice_<member>`` (pooled over
    validation pixels, at the same thresholds); ``threshold`` (None with several classes);
    ``collapsed_to`` (the member given all the weight, or None); ``weight_<member>``; and the
    cost figures other models report, for the members with non-zero weight only
    (``train_seconds`` adds their training time to the search's, ``params_total`` their
    parameters: a member at weight 0 is never run).
    """
    raw_dir, models_dir = Path(raw_dir), Path(models_dir)
    label = f"ensemble@{name}"
    entry = params.ensemble(name)
    members = list(entry.members)
    device = resolve_device("auto")
    start = time.perf_counter()
    predictors = _load_members(members, models_dir, params, device)
    probs, masks = _validation_probabilities(predictors, raw_dir, label)
    search, row, column = _search(entry, params, probs, masks)
    fit = _fit_record(members, search, row, column, len(masks), time.perf_counter() - start)
    cards = {m: p.card for m, p in predictors.items()}
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
        training=_cost(fit, predictors, device),
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
        | {"weights": torch.tensor([fit.weights[m] for m in members], dtype=torch.float32)}
    )
    metrics = _metrics(fit, card.training)
    tags = run_tags(stage=label, data_version=card.data_version, device=str(device))
    with atomic_dir(out_dir) as tmp, mlflow_run(run_name=name, tags=tags) as run:
        log_params(card.model_dump(mode="json", exclude={"members", "training"}))
        log_metrics(metrics)
        torch.save(model.state_dict(), tmp / "weights.pt")
        card.model_copy(update={"mlflow_run_id": run.info.run_id}).write(tmp)
        rows = _search_rows(members, search)
        write_csv(tmp / "search.csv", rows, list(rows[0]))
        write_csv(tmp / "history.csv", [], HISTORY_FIELDS)
        log_artifacts(tmp, "model")
    return metrics


def _metrics(fit: EnsembleFit, training: TrainingSummary) -> dict:
    """The metrics :func:`fit_ensemble` returns and logs (its docstring)."""
    return {
        "val_score": fit.val_score,
        **{f"val_score_{m}": s for m, s in fit.member_val_score.items()},
        "val_dice": fit.val_dice,
        **{f"val_dice_{m}": d for m, d in fit.member_val_dice.items()},
        "threshold": fit.threshold,
        "collapsed_to": fit.collapsed_to,
        **{f"weight_{m}": w for m, w in fit.weights.items()},
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


def _cost(fit: EnsembleFit, predictors: dict, device) -> TrainingSummary:
    """What the ensemble cost, counting only the members with non-zero weight (the model skips
    the others): their training time plus the search's, their parameters, their most devices.

    ``predictors``: member name -> an object with ``card`` (its :class:`ModelCard`) and
    ``model`` (its ``nn.Module``).
    """
    used = [m for m, w in fit.weights.items() if w > 0]
    return TrainingSummary(
        params_total=sum(count_parameters(predictors[m].model)["params_total"] for m in used),
        params_trainable=0,  # nothing is trained: the weights are chosen, not learned
        seconds=fit.fit_seconds + sum(predictors[m].card.training.seconds for m in used),
        device=str(device),
        device_count=max(predictors[m].card.training.device_count for m in used),
        peak_memory_mb=peak_memory_mb(device),
    )


def _search(entry, params: Params, probs, masks) -> tuple[WeightSearch, int, int]:
    """The joint search and its choice ``(search, row, column)``.

    Searched: every weight vector of the simplex grid, or (``weights`` given) each member alone
    and the given mix, whose weights are then kept and only the threshold is chosen. Thresholds:
    :data:`segbench.threshold.GRID` with ``evaluate.threshold: tune``, else the fixed one
    evaluate will use (the weights are then chosen at it).
    """
    members = list(entry.members)
    grid = simplex_grid(len(members), entry.weight_step)
    if entry.weights is not None:  # fixed by the user: scored, not searched
        fixed = np.asarray(entry.weights, dtype=np.float64) / sum(entry.weights)
        grid = np.vstack([np.eye(len(members)), fixed])
    fixed_t = params.evaluate.threshold
    thresholds = GRID if fixed_t == "tune" else (float(fixed_t),)
    search = search_weights(probs, masks, grid, thresholds)
    row, column = search.best([len(grid) - 1] if entry.weights is not None else None)
    return search, row, column


def _fit_record(
    members: list[str], search: WeightSearch, row: int, column: int, n_val: int, seconds: float
) -> EnsembleFit:
    """The card's record of the search: the chosen weights and threshold, the criterion and
    pooled Dice of the mix there, and of each member alone at its own best threshold (its
    vertex of the grid: scored by the very same computation)."""
    alone = {}
    for i, m in enumerate(members):
        r = _row(search.grid, np.eye(len(members))[i])
        alone[m] = search.best([r])
    weights = {m: float(w) for m, w in zip(members, search.grid[row], strict=True)}
    used = [m for m, w in weights.items() if w > 0]
    return EnsembleFit(
        weights=weights,
        val_dice=float(search.pooled[row, column]),
        member_val_dice={m: float(search.pooled[rc]) for m, rc in alone.items()},
        n_val_images=n_val,
        weights_tried=len(search.grid),
        fit_seconds=seconds,
        threshold=search.threshold(column),
        val_score=float(search.scores[row, column]),
        member_val_score={m: float(search.scores[rc]) for m, rc in alone.items()},
        collapsed_to=used[0] if len(used) == 1 else None,
    )


def _search_rows(members: list[str], search: WeightSearch) -> list[dict]:
    """``search.csv``: one row per weight vector and threshold tried (threshold empty with
    several classes), with its criterion and pooled Dice."""
    thresholds = search.thresholds or (None,)
    return [
        {
            **{f"weight_{m}": float(w) for m, w in zip(members, weights, strict=True)},
            "threshold": "" if t is None else t,
            "val_score": float(search.scores[g, c]),
            "val_dice": float(search.pooled[g, c]),
        }
        for g, weights in enumerate(search.grid)
        for c, t in enumerate(thresholds)
    ]


def _row(grid: np.ndarray, weights: np.ndarray) -> int:
    """Index of ``weights`` in ``grid`` (rows are compared with a tolerance)."""
    return int(np.flatnonzero(np.abs(grid - weights).max(axis=1) < 1e-9)[0])
