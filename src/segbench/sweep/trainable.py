"""One Ray Tune trial: :func:`segbench.training.train` with the trial's values, reporting each
epoch.

Each epoch's metrics go to Tune with the training's own resume checkpoint (the directory
``train`` keeps beside its output: model, optimiser, schedule, history, RNG). When a trial crashes,
Tune starts it again (``sweep.max_failures``) from the last checkpoint: it is copied back where
``train`` looks for it and training continues with ``train.resume`` (same epochs, same MLflow run).

The last epoch is reported only after ``train`` has returned: ASHA stops a trial as soon as it
reaches its horizon, and a stop while ``train`` still writes its outputs and ends its MLflow run
would leave both unfinished.
"""

from __future__ import annotations

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

# Starts of a trial from its checkpoints: 1, then 2 after a retry or a resumed sweep (a start
# before the first checkpoint is a fresh start and counts as 1 again).
ATTEMPTS_FILE = "attempts.txt"


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
) -> None:
    """The trainable Ray Tune calls with a trial's ``config`` (``{"train.lr": 0.001, ...}``).

    ``params`` are the validated ``params.yaml`` (the trial's values are applied to them with
    :func:`segbench.sweep.space.trial_params`); ``cwd`` the driver's working directory,
    where relative paths in params (a SAM checkpoint) start, used when this node has it;
    ``env`` the MLflow settings of the driver (a remote node has none of its own); ``tags`` the
    sweep's MLflow tags (parent run, commit);
    ``threads`` the torch threads (the trial's CPUs: trials side by side must not oversubscribe).
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
    trial_dir = Path(ctx.get_trial_dir())
    out_dir = trial_dir / "model"
    resume_dir = resume_dir_for(out_dir)
    model = params.sweep.model
    params = trial_params(params, config, epochs)
    attempt = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry (or a resumed sweep): continue from the last epoch
        shutil.rmtree(resume_dir, ignore_errors=True)
        with checkpoint.as_directory() as path:
            shutil.copytree(path, resume_dir)
        attempt = int((resume_dir / ATTEMPTS_FILE).read_text()) + 1
        params = params.with_overrides({"train.resume": True}, source="sweep trial (retry)")
    best, best_epoch = -math.inf, 0

    def on_epoch(row: dict) -> None:
        nonlocal best, best_epoch
        if _finite(row["val_dice"]) > best:
            best, best_epoch = _finite(row["val_dice"]), int(row["epoch"])
        if row["epoch"] >= params.train.epochs:
            return  # reported below, once train() has finished writing
        # The count travels in the checkpoint: a restored trial may get a new directory.
        (resume_dir / ATTEMPTS_FILE).write_text(str(attempt))
        tune.report(
            # best_epoch with every epoch: a trial ASHA stops never reaches the final report.
            {**_metrics(row, best, attempt, resume_dir), "best_epoch": best_epoch},
            checkpoint=tune.Checkpoint.from_directory(str(resume_dir)),
        )

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
