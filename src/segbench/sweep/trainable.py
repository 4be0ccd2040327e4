"""One Ray Tune trial: :func:`segbench.training.train` with the trial's values, reporting each
epoch.

Each epoch, the trial saves its progress to the sweep's store (:mod:`segbench.sweep.store`: the
metrics reported so far and training's own resume checkpoint, the directory ``train`` keeps
beside its output: model, optimiser, schedule, history, RNG), then reports the epoch to Tune.
When a trial starts again (a crash retried, ``sweep.max_failures``, or an interrupted sweep run
again), it replays the epochs it reported (so ASHA sees them) and copies its checkpoint back where
``train`` looks for it: training continues from it (same epochs, same MLflow run). A trial that
had finished only replays its reports.

The last epoch is reported only after ``train`` has returned: ASHA stops a trial as soon as it
reaches its horizon, and a stop while ``train`` still writes its outputs and ends its MLflow run
would leave both unfinished.

What the sweep decides on is ``val_score`` (each epoch: ASHA's rungs) and ``best_val_score`` (its
best so far, and the trial's in the end), the per-image criterion training keeps its checkpoint
by (:func:`segbench.training.loop.validate`); ``val_dice`` (pooled over the pixels) and
``best_val_dice`` (at the best epoch by ``val_score``) are reported beside them, for information.
Rows saved before ``val_score`` existed are replayed with NaN there (ASHA skips a NaN), and such
epochs never count as a trial's best.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segbench.checkpoint import resume_dir_for
from segbench.config import Params
from segbench.io import read_json
from segbench.modelcard import ModelCard
from segbench.sweep.space import trial_params
from segbench.sweep.store import Store, trial_key


def run_trial(
    config: dict[str, Any],
    *,
    params: Params,
    epochs: int | None,
    tiles_dir: str,
    cwd: str,
    env: dict[str, str],
    tags: dict[str, str],
    threads: int,
    train_fn: Callable | None = None,
    store: str,
    work_dir: str,
) -> None:
    """The trainable Ray Tune calls with a trial's ``config`` (``{"train.lr": 0.001, ...}``).

    ``params`` are the validated ``params.yaml`` (the trial's values are applied to them with
    :func:`segbench.sweep.space.trial_params`); ``cwd`` the driver's working directory,
    where relative paths in params (a SAM checkpoint) start, used when this node has it;
    ``env`` the MLflow settings of the driver (a remote node has none of its own); ``tags`` the
    sweep's MLflow tags (parent run, commit);
    ``threads`` the torch threads (the trial's CPUs: trials side by side must not oversubscribe);
    ``store`` the sweep's saved progress (:class:`segbench.sweep.store.Store`'s URI);
    ``work_dir`` where the trial trains (its model and checkpoints, removed when it ends; the
    driver removes the folder when the sweep ends, with what stopped trials left: Ray's own
    trial folders are never cleaned, and a sweep would leave GBs of weights in /tmp/ray).
    ``train_fn`` replaces :func:`segbench.training.train` (tests inject failures with it).
    """
    import torch
    from ray import tune

    from segbench.training import train

    os.environ.update(env)
    if Path(cwd).is_dir():  # Tune starts trials in their own directory
        os.chdir(cwd)
    torch.set_num_threads(threads)
    ctx = tune.get_context()
    out_dir = Path(work_dir) / ctx.get_trial_id() / "model"
    resume_dir = resume_dir_for(out_dir)
    model = params.sweep.model
    params = trial_params(params, config, epochs)
    store, key = Store(store), trial_key(ctx.get_trial_id(), config)
    saved = store.read_trial(key)
    horizon = params.entry(model).train_config(params.train).epochs
    # Starts of a trial from a checkpoint: 1, then 2 after a retry or a resumed sweep (a start
    # before the first checkpoint is a fresh start and counts as 1 again).
    attempt, reported = 1, []
    if saved is not None and saved.final is not None:  # it had finished: replay, nothing more
        for row in saved.epochs:
            if row["epoch"] < horizon:
                tune.report(_with_score(row))
        tune.report(_with_score(saved.final))
        return
    if saved is not None and saved.files:
        store.restore(saved, key, resume_dir)
        attempt, reported = saved.attempt + 1, [_with_score(r) for r in saved.epochs]
        for row in reported:
            tune.report(row)
    else:  # a first start never continues anything left in its directory
        shutil.rmtree(resume_dir, ignore_errors=True)
    save = functools.partial(store.save, key, config, attempt=attempt, epochs=reported)
    best = _Best()
    for row in reported:
        best.update(row)

    def on_epoch(row: dict) -> None:
        best.update(row)
        # best_epoch with every epoch: a trial ASHA stops never reaches the final report.
        metrics = _metrics(row, best, attempt, resume_dir)
        reported.append(metrics)
        save(resume_dir=resume_dir, mlflow_run_id=metrics["mlflow_run_id"] or None)
        if row["epoch"] >= horizon:
            return  # reported below, once train() has finished writing
        tune.report(metrics)

    summary = (train_fn or train)(
        model,
        params,
        tiles_dir,
        out_dir,
        on_epoch=on_epoch,
        run_name=f"{model} trial {ctx.get_trial_id()}",
        tags={**tags, "sweep_trial": ctx.get_trial_id()},
        # A trial's weights (60-200 MB for a U-Net) would fill MLflow's store: train@ trains
        # the best configuration again, with its weights.
        log_weights=False,
    )
    history = _history(out_dir)
    last = history[-1] if history else {"epoch": 0}
    # train()'s own best (its checkpoint's epoch), which a resumed training also knows of the
    # epochs before the restart.
    best = _Best(
        score=summary.get("best_val_score", best.score),
        dice=summary.get("best_val_dice", best.dice),
        epoch=summary.get("best_epoch", best.epoch),
    )
    final = _metrics(last, best, attempt, ModelCard.read(out_dir))
    final.update(
        train_seconds=summary.get("train_seconds", math.nan),
        stop_reason=summary.get("stop_reason", ""),
    )
    shutil.rmtree(out_dir.parent, ignore_errors=True)  # the weights: train@ trains the best again
    save(resume_dir=None, mlflow_run_id=final["mlflow_run_id"] or None, final=final)
    tune.report(final)


class _Best:
    """A trial's best epoch so far by ``val_score`` (the first of equals, as ``train`` keeps
    it): its score (-inf while no epoch has one), pooled Dice and epoch (0: none yet)."""

    def __init__(self, *, score: float | None = -math.inf, dice: float | None = None, epoch=0):
        self.score = _finite(score)
        self.dice = math.nan if dice is None else float(dice)
        self.epoch = int(epoch or 0)

    def update(self, row: dict[str, Any]) -> None:
        """Take epoch ``row`` (a history row or a reported one) if its score is higher."""
        score = _finite(row.get("val_score"))
        if score > self.score:
            self.score, self.epoch = score, int(row["epoch"])
            self.dice = float(row.get("val_dice", math.nan))


def _metrics(row: dict, best: _Best, attempt: int, run: Path | ModelCard) -> dict[str, Any]:
    """Tune's metrics of one epoch ``row`` (a history row); ``run`` is where the MLflow run id
    is (the resume directory's ``mlflow.json`` while training, the model card after)."""
    if isinstance(run, ModelCard):
        run_id = run.mlflow_run_id or ""
    else:
        run_id = read_json(run / "mlflow.json")["run_id"] if (run / "mlflow.json").is_file() else ""
    return {
        "epoch": int(row["epoch"]),
        "val_score": float(row.get("val_score", math.nan)),
        "val_dice": float(row.get("val_dice", math.nan)),
        "val_loss": float(row.get("val_loss", math.nan)),
        "train_loss": float(row.get("train_loss", math.nan)),
        "best_val_score": best.score,
        "best_val_dice": best.dice,
        "best_epoch": best.epoch,
        "attempt": attempt,
        "mlflow_run_id": run_id,
    }


def _with_score(row: dict[str, Any]) -> dict[str, Any]:
    """A reported row saved before the sweep chose on ``val_score``, with NaN for the score
    and its best (Tune refuses a result without the metric it schedules on)."""
    return {"val_score": math.nan, "best_val_score": math.nan, **row}


def _finite(value: float | None) -> float:
    """``value`` for comparing scores: -inf where it is missing or NaN."""
    return -math.inf if value is None or math.isnan(value) else float(value)


def _history(out_dir: Path) -> list[dict[str, float]]:
    from segbench.io import read_csv

    path = out_dir / "history.csv"
    if not path.is_file():
        return []
    # An empty cell (a column the epoch had no value for, such as val_score in the epochs of a
    # checkpoint written before it existed) is left out: missing, not a crash.
    return [{k: float(v) for k, v in row.items() if v != ""} for row in read_csv(path)]
