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
                tune.report(row)
        tune.report(saved.final)
        return
    if saved is not None and saved.files:
        store.restore(saved, key, resume_dir)
        attempt, reported = saved.attempt + 1, list(saved.epochs)
        for row in reported:
            tune.report(row)
    else:  # a first start never continues anything left in its directory
        shutil.rmtree(resume_dir, ignore_errors=True)
    save = functools.partial(store.save, key, config, attempt=attempt, epochs=reported)
    best = max((_finite(r["val_dice"]) for r in reported), default=-math.inf)
    best_epoch = next((r["epoch"] for r in reported if _finite(r["val_dice"]) == best), 0)

    def on_epoch(row: dict) -> None:
        nonlocal best, best_epoch
        if _finite(row["val_dice"]) > best:
            best, best_epoch = _finite(row["val_dice"]), int(row["epoch"])
        # best_epoch with every epoch: a trial ASHA stops never reaches the final report.
        metrics = {**_metrics(row, best, attempt, resume_dir), "best_epoch": best_epoch}
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
    last = history[-1] if history else {"epoch": 0, "val_dice": math.nan}
    final = _metrics(last, summary.get("best_val_dice", best), attempt, ModelCard.read(out_dir))
    final.update(
        best_epoch=summary.get("best_epoch", best_epoch),
        train_seconds=summary.get("train_seconds", math.nan),
        stop_reason=summary.get("stop_reason", ""),
    )
    shutil.rmtree(out_dir.parent, ignore_errors=True)  # the weights: train@ trains the best again
    save(resume_dir=None, mlflow_run_id=final["mlflow_run_id"] or None, final=final)
    tune.report(final)


def _metrics(row: dict, best: float, attempt: int, run: Path | ModelCard) -> dict[str, Any]:
    """Tune's metrics of one epoch; ``run`` is where the MLflow run id is (the resume
    directory's ``mlflow.json`` while training, the model card after)."""
    if isinstance(run, ModelCard):
        run_id = run.mlflow_run_id or ""
    else:
        run_id = read_json(run / "mlflow.json")["run_id"] if (run / "mlflow.json").is_file() else ""
    return {
        "epoch": int(row["epoch"]),
        "val_dice": float(row["val_dice"]),
        "val_loss": float(row.get("val_loss", math.nan)),
        "train_loss": float(row.get("train_loss", math.nan)),
        "best_val_dice": float(best),
        "attempt": attempt,
        "mlflow_run_id": run_id,
    }


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _history(out_dir: Path) -> list[dict[str, float]]:
    from segbench.io import read_csv

    path = out_dir / "history.csv"
    if not path.is_file():
        return []
    return [{k: float(v) for k, v in row.items()} for row in read_csv(path)]
