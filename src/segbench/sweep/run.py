"""``run_sweep(params, tiles_dir, out_dir, state_dir) -> summary``: Ray Tune over training.

Every trial calls :func:`segbench.training.train` (through :mod:`segbench.sweep.trainable`) on the
same tiles as ``train@``; ASHA stops trials whose validation score (``val_score``: the mean
per-image criterion models are ranked on, by which training keeps its checkpoint) trails at a
rung; crashed trials are retried from their last epoch; an interrupted sweep (killed, machine
lost) resumes when run again with the same settings, from the progress each trial saved
(:mod:`segbench.sweep.store`: JSON and weights-only checkpoints, verified first; Tune's own
pickled state is never restored).

Outputs (``out_dir``, written only when the sweep has finished)::

    trials.csv   one row per trial: its values (one column per swept key: ``lr``, ``rank``, ...),
                 status (completed | stopped early | failed), its model's trainable and total
                 parameters (``params_trainable``, ``params_total``: counted from its values by
                 :mod:`segbench.sweep.size`, whatever became of the trial), epochs run, final
                 and best validation score (``val_score``, ``best_val_score``: what the sweep
                 chose on), the pooled validation Dice of the last and of the best epoch
                 (``val_dice``, ``best_val_dice``: for information), best epoch, final losses,
                 attempts, seconds, MLflow run id
    best.json    the best trial (by ``best_val_score``, which ``metric`` names and ``value``
                 holds): its values as training keys (``{"train.lr": ..., "model.rank": ...}``),
                 its metrics, the sweep's settings

MLflow: one parent run ``sweep@<model>`` (the sweep's settings, the best values and metrics,
both files as artifacts) with one child run per trial (the trial's training run).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segbench.config import Params
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_json, write_csv, write_json
from segbench.sweep.cluster import check_fits, ray_session
from segbench.sweep.plan import sweep_plan
from segbench.sweep.size import SIZE_FIELDS, trial_sizes
from segbench.sweep.space import column_names, tune_space
from segbench.sweep.store import Store
from segbench.sweep.trainable import run_trial
from segbench.tracking import (
    git_commit,
    log_artifacts,
    log_metrics,
    log_params,
    mlflow_run,
    run_tags,
    tracking_uri,
)

# What "best" means: a trial's best epoch by the per-image criterion, as train@ keeps it
# (EPOCH_METRIC each epoch, which ASHA compares at its rungs); the pooled Dice is only reported.
METRIC = "best_val_score"
EPOCH_METRIC = "val_score"
STOPPED_TAG = "segbench.stopped_early"


def experiment_name(params: Params, data_version: str) -> str:
    """``sweep-<model>-<hash>``: the hash of everything the trials depend on (the sweep plan,
    less where and how many at once, and the data), so an interrupted sweep resumes only under
    the same settings and data."""
    plan = sweep_plan(params)
    for key in ("storage", "max_concurrent"):
        plan["sweep"].pop(key)
    key = {"plan": plan, "data_version": data_version}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return f"sweep-{params.sweep.model}-{digest}"


def run_sweep(
    params: Params,
    tiles_dir: str | Path,
    out_dir: str | Path,
    *,
    state_dir: str | Path,
    train_fn: Callable | None = None,
    num_cpus: int | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run the sweep ``params.sweep`` describes; write ``out_dir``; return a summary.

    ``state_dir`` holds the sweep's saved progress (:mod:`segbench.sweep.store`) until the
    sweep finishes, unless ``sweep.storage`` names shared storage, and Ray Tune's own working
    files. An interrupted sweep resumes from that progress unless ``fresh``. ``num_cpus`` caps
    a local Ray (default: this process's CPUs); it is ignored when ``RAY_ADDRESS`` joins a
    cluster. ``train_fn`` stands in for :func:`segbench.training.train` (tests inject crashes
    with it).
    """
    sweep = params.sweep
    if not sweep.enabled:
        return _write_off(out_dir)
    tiles_dir, out_dir = Path(tiles_dir).resolve(), Path(out_dir)
    data_version = read_json(tiles_dir / "summary.json")["data_version"]
    epochs = sweep.epochs or params.entry(sweep.model).train_config(params.train).epochs
    name = experiment_name(params, data_version)
    storage = sweep.storage or str(Path(state_dir).resolve())
    store = Store(f"{storage.rstrip('/')}/{name}")
    if fresh and store.exists():
        print(f"sweep@{sweep.model}: starting afresh as asked (removing {store.uri})")
        store.delete()
    saved = store.verify()  # before Ray starts: a damaged or planted state stops here
    run_id = store.parent_run()
    if saved:
        print(
            f"sweep@{sweep.model}: resuming the interrupted sweep in {store.uri} "
            f"({saved} trial(s) saved, verified)"
        )
    tune_dir = Path(state_dir).resolve() / "tune"
    columns = column_names(sweep)
    with ray_session(num_cpus=num_cpus) as where:
        totals = check_fits(sweep.resources.cpu, sweep.resources.gpu)
        print(
            f"sweep@{sweep.model}: {_describe(sweep)} on {where} ({totals['cpu']:g} CPU, "
            f"{totals['gpu']:g} GPU); each trial {sweep.resources.cpu:g} CPU, "
            f"{sweep.resources.gpu:g} GPU, {epochs} epochs"
        )
        tags = run_tags(stage="sweep", data_version=data_version, device=_devices(sweep))
        with mlflow_run(run_name=f"sweep@{sweep.model}", run_id=run_id, tags=tags) as parent:
            if run_id is None:
                log_params({"sweep": sweep.model_dump(mode="json")})
                store.set_parent_run(parent.info.run_id)
            child_tags = {
                "mlflow.parentRunId": parent.info.run_id,
                "git_commit": git_commit(Path.cwd()),
                "dvc_stage": "sweep",
            }
            work = tune_dir / name / "work"
            trainable = _trainable(params, tiles_dir, epochs, child_tags, train_fn, store.uri, work)
            # Tune's working files: never read back (a fresh experiment every run).
            shutil.rmtree(tune_dir / name, ignore_errors=True)
            results = _fit(params, trainable, str(tune_dir), name, epochs)
            unfinished = len(results) - results.num_terminated - results.num_errors
            if unfinished:  # Ctrl-C: Tune saved its state and returned early
                print(
                    f"sweep@{sweep.model}: interrupted with {unfinished} of {len(results)} "
                    f"trials unfinished; nothing written to {out_dir}. Run it again with the "
                    f"same settings to resume (state in {store.uri})"
                )
                raise KeyboardInterrupt
            rows = [_row(r, columns, epochs) for r in results]
            _close_stopped_runs(parent.info.run_id, rows)
            if not any(r["status"] != "failed" for r in rows):
                errors = "; ".join(sorted({r["error"] for r in rows if r["error"]}))[:2000]
                raise SegbenchError(
                    f"sweep@{sweep.model}: every trial failed ({len(rows)}); first errors: "
                    f"{errors}. Nothing was written to {out_dir}; fix the cause and run again "
                    "(finished trials are not lost: the sweep resumes)"
                )
            sizes = trial_sizes(params, [r["_config"] for r in rows], tiles_dir)
            for row, size in zip(rows, sizes, strict=True):
                row.update({k: size.get(k, "") for k in SIZE_FIELDS})
            best = _best(rows, columns, sweep, epochs, name)
            with atomic_dir(out_dir) as tmp:
                fields = ["trial", "status", *columns.values(), *SIZE_FIELDS, *_RESULT_FIELDS]
                plain = [{k: v for k, v in r.items() if k != "_config"} for r in rows]
                write_csv(tmp / "trials.csv", plain, fields)
                write_json(tmp / "best.json", best)
                log_artifacts(tmp, "sweep")
            log_params({"best": best["config"]})
            log_metrics(_summary_metrics(rows, best))
    # Finished: the results are in the outputs and MLflow; a later run starts afresh.
    store.delete()
    shutil.rmtree(tune_dir, ignore_errors=True)
    return {"trials": len(rows), "best": best, "rows": rows}


_RESULT_FIELDS = [
    "epochs_run",
    "val_score",
    "best_val_score",
    "val_dice",
    "best_val_dice",
    "best_epoch",
    "val_loss",
    "train_loss",
    "attempts",
    "train_seconds",
    "mlflow_run_id",
    "error",
]


def _describe(sweep) -> str:
    if sweep.search == "grid":
        return f"grid of {sweep.grid_size()} trials"
    return f"{sweep.num_samples} random trials"


def _devices(sweep) -> str:
    return "cuda" if sweep.resources.gpu > 0 else "cpu"


def _trainable(params: Params, tiles_dir: Path, epochs: int, tags, train_fn, store: str, work):
    from ray import tune

    sweep = params.sweep
    env = {"MLFLOW_TRACKING_URI": tracking_uri()}
    if os.environ.get("DVC_ROOT"):
        env["DVC_ROOT"] = os.environ["DVC_ROOT"]
    fn = tune.with_parameters(
        run_trial,
        params=params,
        epochs=epochs,
        tiles_dir=str(tiles_dir),
        cwd=str(Path.cwd()),
        env=env,
        tags=tags,
        threads=max(1, int(sweep.resources.cpu)),
        train_fn=train_fn,
        store=store,
        work_dir=str(work),
    )
    return tune.with_resources(fn, {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})


def _fit(params: Params, trainable, storage: str, name: str, epochs: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    sweep = params.sweep
    # Ctrl-C must stop the stage, not end the sweep early as if it had finished (Tune's own
    # handler returns partial results, which would be written as the sweep's): it raises
    # KeyboardInterrupt here, and the state Tune saves as trials report is resumed next time.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if sweep.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=min(sweep.asha.grace_period, epochs),
            reduction_factor=sweep.asha.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    tuner = tune.Tuner(
        trainable,
        param_space=tune_space(sweep),
        tune_config=tune.TuneConfig(
            metric=EPOCH_METRIC,
            mode="max",
            scheduler=scheduler,
            num_samples=sweep.num_samples,
            # Tune applies max_concurrent_trials to Searchers only; the grid/random generator
            # takes its own limit (else it is ignored with a log line).
            search_alg=BasicVariantGenerator(
                random_state=sweep.seed, max_concurrent=sweep.max_concurrent
            ),
            # A fresh process costs a trial ~6 s of imports (torch, MLflow, smp: see
            # BENCHMARKS.md); a reused one pays them once. Each trial sets its own threads,
            # environment and MLflow run; a trial ASHA stopped mid-report is never reused.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            verbose=1,
        ),
    )
    return tuner.fit()


def _row(result, columns: dict[str, str], epochs: int) -> dict[str, Any]:
    metrics = result.metrics or {}
    run = metrics.get("epoch", 0)
    if result.error is not None:
        status = "failed"
    elif run >= epochs or metrics.get("stop_reason", "").startswith("early stopping"):
        status = "completed"
    else:
        status = "stopped early"
    config = result.config or {}
    row = {
        "trial": metrics.get("trial_id") or (Path(result.path).name if result.path else ""),
        "status": status,
        **{col: config.get(key) for key, col in columns.items()},
        "epochs_run": run,
        "attempts": metrics.get("attempt", ""),
        # Stopped mid-training, a trial never reported train()'s clock: Ray's own, then.
        "train_seconds": metrics.get("train_seconds", metrics.get("time_total_s", "")),
        "error": _one_line(result.error) if result.error is not None else "",
    }
    for key in _RESULT_FIELDS:
        row.setdefault(key, metrics.get(key, ""))
    row["_config"] = config
    return row


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]


def _best(rows, columns, sweep, epochs: int, name: str) -> dict[str, Any]:
    """best.json (see the module's docstring): the trial with the highest ``best_val_score``
    of those that did not fail (the first of equals, in trial order)."""
    ok = [r for r in rows if r["status"] != "failed" and _num(r[METRIC]) is not None]
    if not ok:
        raise SegbenchError(
            f"sweep@{sweep.model}: no trial reported a validation score ({METRIC}): each "
            "scored NaN, or finished in a sweep saved before segbench chose on it; run the "
            "sweep afresh (segbench sweep --fresh)"
        )
    top = max(ok, key=lambda r: _num(r[METRIC]))
    return {
        "model": sweep.model,
        "metric": METRIC,
        "value": _num(top[METRIC]),
        "best_val_dice": _num(top["best_val_dice"]),  # pooled, at the same epoch: information
        "best_epoch": top["best_epoch"],
        "trial": top["trial"],
        "status": top["status"],
        "config": {k: top["_config"].get(k) for k in columns},
        "columns": columns,
        "epochs": epochs,
        "trials": len(rows),
        "experiment": name,
        "mlflow_run_id": top["mlflow_run_id"],
    }


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _summary_metrics(rows, best) -> dict[str, float]:
    return {
        METRIC: best["value"],
        "best_val_dice": best["best_val_dice"] if best["best_val_dice"] is not None else math.nan,
        "trials": len(rows),
        "trials_completed": sum(r["status"] == "completed" for r in rows),
        "trials_stopped_early": sum(r["status"] == "stopped early" for r in rows),
        "trials_failed": sum(r["status"] == "failed" for r in rows),
    }


def _close_stopped_runs(parent_id: str, rows) -> None:
    """Trials ASHA stopped end mid-training: their MLflow runs stay RUNNING (the process was
    killed) or FAILED (the stop interrupted ``train``). Mark them KILLED and say why, so that a
    FAILED run in the sweep means a crash."""
    import mlflow

    client = mlflow.MlflowClient()
    for row in rows:
        run_id = row.get("mlflow_run_id")
        if not run_id or row["status"] != "stopped early":
            continue
        if client.get_run(run_id).info.status in ("RUNNING", "FAILED"):
            client.set_tag(run_id, STOPPED_TAG, f"asha after epoch {row['epochs_run']}")
            client.set_terminated(run_id, status="KILLED")


def _write_off(out_dir) -> dict[str, Any]:
    """``sweep.enabled: false``: empty outputs that say so (the report shows no sweep)."""
    with atomic_dir(out_dir) as tmp:
        write_csv(tmp / "trials.csv", [], ["trial", "status"])
        write_json(tmp / "best.json", {"model": None, "config": {}})
    print("sweep: off (sweep.enabled is false); wrote empty results")
    return {"trials": 0, "best": None, "rows": []}
