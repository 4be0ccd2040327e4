"""``train(name, params, tiles_dir, out_dir) -> metrics``: one function for every caller.

The DVC stage, the Prefect task and the Ray trainable all call :func:`train`.

Output layout (``out_dir``)::

    card.json       the model card (segbench.modelcard): entry, preparation, the training
                    configuration used, data version, cost and outcome, MLflow run id
    weights.pt      torch models: what was trained, at the best epoch (by validation score): the
                    whole state dict, or for SAM only the decoder and LoRA factors (the frozen
                    base comes from the checkpoint the card names)
    last.pt         torch models: the same, at the last epoch
    state.json      classical models: their fitted state (zero-shot models: no weights at all)
    history.csv     per epoch: train_loss, val_loss, val_dice (pooled), val_score (the mean
                    per-image criterion, :func:`segbench.training.loop.validate`), lr, seconds

The card's ``training.seconds`` is the whole fit; ``training.cache_seconds`` the part of it spent
filling SAM's embedding cache (also the MLflow metric ``cache_seconds``), so the time of the
training itself can be told from a one-off that a warm cache would skip.

While a torch model trains, every completed epoch is checkpointed (model, optimiser, schedule,
history, RNG state) to ``<out_dir's parent>/.<name>.resume/``. When the process was killed, the
next :func:`train` of the same model continues from there by itself if the checkpoint's
fingerprint matches (settings, data version, training code: :func:`segbench.checkpoint.resumable`)
and reaches what an uninterrupted run would have (data order and augmentation are seeded per
epoch); otherwise it starts afresh and says why. ``resume=False`` always starts afresh. The
directory is removed when training finishes.

Several processes: under ``torchrun`` or :func:`segbench.training.distributed.launch_local`
(``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel (NCCL on GPUs, Gloo on CPU),
each process trains on its shard of the tiles, every process validates on all validation tiles
(so all reach the same decisions), and only rank 0 writes files and logs to MLflow.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from segbench.cardloss import loss_for
from segbench.checkpoint import (
    Progress,
    fingerprint,
    model_state,
    restore_checkpoint,
    resumable,
    resume_dir_for,
    resumed_run_id,
    save_atomic,
    save_checkpoint,
)
from segbench.classes import BINARY, ClassSpec, in_channels, read_channels, read_classes
from segbench.codedeps import module_digest
from segbench.config import Params, not_applicable
from segbench.cost import cache_fill_seconds, count_parameters, peak_memory_mb
from segbench.data.dataset import load_tiles
from segbench.data.normalize import to_unit
from segbench.devices import resolve_device
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_json, write_csv, write_json
from segbench.modelcard import HISTORY_FIELDS, ModelCard, TrainingSummary
from segbench.models import build_model
from segbench.optim import EpochSchedule, build_optimizer
from segbench.tracking import end_abandoned_run, log_artifacts, log_params, mlflow_run, run_tags
from segbench.tracking import log_metrics as tracking_log_metrics
from segbench.training.distributed import Dist, init_distributed
from segbench.training.loop import (
    NonFiniteLoss,
    loaders,
    seed_epoch,
    train_one_epoch,
    validate,
)


def _fit_torch(
    card: ModelCard, tiles_dir, device, dist: Dist, on_epoch, log_metrics, ckpt: Path, fp, state
):
    cfg = card.train
    torch.manual_seed(cfg.seed)
    train_ds, sampler, loader, val_loader = loaders(
        cfg, card.prepare.augment, card.prepare.tile_size, tiles_dir, dist, fold=card.fold
    )
    model = _build(card).to(device)
    counts = count_parameters(model)
    net = model
    if dist.world > 1:
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # An smp encoder shallower than 5 levels keeps its deepest stages but never runs them:
        # DDP must be told that some parameters may get no gradient (found by the loop's
        # two-process test with encoder_depth 3).
        net = torch.nn.parallel.DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    optimizer = build_optimizer(cfg, net.parameters())
    schedule = EpochSchedule(cfg, optimizer)
    loss_fn = loss_for(card)
    prog = Progress(history=[])
    best_state = None
    if state is not None:
        best_state = restore_checkpoint(ckpt, state, model, optimizer, schedule, prog)
    epochs = tqdm(
        range(prog.epoch + 1, cfg.epochs + 1),
        desc=f"train@{card.name}",
        unit="epoch",
        initial=prog.epoch,
        total=cfg.epochs,
        disable=not dist.main or None,
    )
    stop_reason = "epochs"
    for epoch in epochs:
        start = time.perf_counter()
        seed_epoch(sampler, cfg.seed, epoch)
        train_ds.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(
            net, loader, loss_fn, optimizer, device, epoch, accumulate=cfg.accumulate
        )
        val = validate(model, val_loader, loss_fn, device)
        # The checkpoint, early stopping and a plateau schedule follow the per-image criterion
        # models are ranked on (val_score), not the pooled Dice kept beside it.
        schedule.step(val.score)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val.loss,
            "val_dice": val.dice,
            "val_score": val.score,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        prog.history.append(row)
        prog.epoch = epoch
        score = -math.inf if math.isnan(val.score) else val.score
        if score > prog.best:
            prog.best, prog.best_epoch, prog.bad_epochs = score, epoch, 0
            best_state = model_state(model)
            if dist.main:
                save_atomic(best_state, ckpt / "best.pt")
        else:
            prog.bad_epochs += 1
        if dist.main:
            save_checkpoint(ckpt, fp, model, optimizer, schedule, prog)
            log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            if on_epoch is not None:
                on_epoch(row)
        epochs.set_postfix(loss=f"{train_loss:.3f}", val_score=f"{val.score:.3f}")
        if cfg.early_stopping and prog.bad_epochs >= cfg.early_stopping:
            stop_reason = f"early stopping: no better val score for {prog.bad_epochs} epochs"
            break
    best_row = next((r for r in prog.history if r["epoch"] == prog.best_epoch), {})
    outcome = {
        "best_epoch": prog.best_epoch,
        "best_val_score": prog.best,
        "best_val_dice": best_row.get("val_dice", math.nan),
        "epochs_run": prog.epoch,
        "stop_reason": stop_reason,
        # Part of the training time that filled SAM's embedding cache (a decoder-only model's
        # first-epoch encoder passes): a one-off, reported apart from the training proper.
        "cache_seconds": cache_fill_seconds(model),
        **counts,
    }
    return {"weights.pt": best_state, "last.pt": model_state(model)}, prog.history, outcome


def _build(card: ModelCard):
    return build_model(
        card.entry, name=card.name, in_channels=card.in_channels, num_classes=card.num_classes
    )


def _fit_classical(card: ModelCard, tiles_dir):
    # Otsu fits on the training tiles; an edge baseline chooses its threshold on the validation
    # ones (its fit_split), scaled to [0, 1] by each source image's range (unit_input), as
    # predict will scale whole images.
    model = _build(card)
    images, masks, ranges = load_tiles(tiles_dir, getattr(model, "fit_split", "train"))
    if getattr(model, "unit_input", False):
        images = np.stack([to_unit(i, lo, hi) for i, (lo, hi) in zip(images, ranges, strict=True)])
    scores = model.fit(images, masks)
    outcome = {"fit_scores": scores, "params_total": 0, "params_trainable": 0}
    return {"state.json": model.state_dict()}, [], outcome


def _fit_zero_shot(card: ModelCard):
    # Nothing to fit: building the model checks the checkpoint (path, sha256, variant, size)
    # here, so a bad file stops train@, not the evaluation after it.
    model = _build(card)
    return {}, [], count_parameters(model)


def model_card(
    name: str,
    params: Params,
    data_version: str,
    *,
    promoted: dict[str, Any] | None = None,
    spec: ClassSpec = BINARY,
    channels: str = "gray",
) -> ModelCard:
    """The card of ``models.<name>`` before training (its ``training`` figures still empty),
    for data of ``spec``'s classes and ``channels``."""
    entry = params.entry(name)
    return ModelCard(
        name=name,
        entry=entry,
        prepare=params.prepare,
        in_channels=in_channels(channels),
        classes=list(spec.names),
        class_colors=[tuple(int(v) for v in c) for c in spec.display_colors()],
        train=entry.train_config(params.train) if entry.kind == "torch" else None,
        promoted=promoted,
        data_version=data_version,
        training=TrainingSummary(
            params_total=0,
            params_trainable=0,
            seconds=0,
            device="",
            device_count=1,
            peak_memory_mb=0,
        ),
    )


def train(
    name: str,
    params: Params,
    tiles_dir: str | Path,
    out_dir: str | Path,
    *,
    promoted: dict[str, Any] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    log_weights: bool = True,
    resume: bool = True,
    fold: int = 0,
) -> dict:
    """Train (or fit) ``models.<name>`` on the tiles and write ``out_dir``; return its metrics.

    ``promoted`` records the sweep values ``params`` already carries (for the card).
    ``log_weights`` False logs the model card and history to MLflow but not the weights (a sweep
    trial: its best configuration is trained again by ``train@``).
    ``on_epoch`` is called with each epoch's history row (for Ray Tune reporting). ``run_name``
    and ``tags`` name the MLflow run and add to its tags (a sweep's trials set
    ``mlflow.parentRunId``, which makes them child runs of the sweep's run).
    ``resume`` False starts from the first epoch even where a matching checkpoint of a killed
    run exists (by default it is continued). ``fold``: the cross-validation fold to validate on
    (``data.split.folds``; trained on the other folds' tiles); 0 is the plain train/val split.
    Classical models always fit on fold 0's split.
    """
    tiles_dir, out_dir = Path(tiles_dir), Path(out_dir)
    data_version = read_json(tiles_dir / "summary.json")["data_version"]
    spec, channels = read_classes(tiles_dir), read_channels(tiles_dir)
    skipped = not_applicable(params).get(name)
    if skipped:
        raise SegbenchError(f"models.{name}: {skipped}")
    card = model_card(name, params, data_version, promoted=promoted, spec=spec, channels=channels)
    card = card.model_copy(update={"fold": fold})
    dist = Dist.from_env()
    device = resolve_device((card.train or params.train).device, index=dist.local_rank)
    init_distributed(dist, device)
    ckpt = resume_dir_for(out_dir)
    fp = fingerprint(card.config(), module_digest(__name__))
    state = _resume_state(name, ckpt, fp, resume, dist) if card.kind == "torch" else None
    if dist.main and state is None:
        _end_abandoned(ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)  # a fresh run never mixes in an old one
    tags = {
        **run_tags(stage=f"train@{name}", data_version=data_version, device=str(device)),
        **(tags or {}),
    }
    with ExitStack() as stack:
        tmp = run = None
        log_metrics = lambda *a, **k: None  # noqa: E731 - ranks > 0 log nothing
        if dist.main:
            tmp = stack.enter_context(atomic_dir(out_dir))
            run_id = resumed_run_id(ckpt) if state is not None else None
            run = stack.enter_context(
                mlflow_run(run_name=run_name or name, run_id=run_id, tags=tags)
            )
            if run_id is None:
                log_params(card.config())
            ckpt.mkdir(parents=True, exist_ok=True)
            write_json(ckpt / "mlflow.json", {"run_id": run.info.run_id})
            log_metrics = tracking_log_metrics
        start = time.perf_counter()
        try:
            if card.kind == "torch":
                files, history, outcome = _fit_torch(
                    card, tiles_dir, device, dist, on_epoch, log_metrics, ckpt, fp, state
                )
            elif card.kind == "zero_shot":
                files, history, outcome = _fit_zero_shot(card)
            else:
                files, history, outcome = _fit_classical(card, tiles_dir)
        except NonFiniteLoss as exc:
            raise SegbenchError(
                f"train@{name}: the loss became NaN or infinite in epoch {exc.epoch} "
                f"(batch {exc.batch}); lower train.lr, try train.loss=dice_bce, or check the "
                f"data. The last good epoch is kept in {ckpt}: training the same model with the "
                "same settings again continues from it"
            ) from None
        summary = TrainingSummary(
            seconds=time.perf_counter() - start,
            device=str(device),
            device_count=dist.world,
            peak_memory_mb=peak_memory_mb(device),
            **outcome,
        )
        metrics = {**summary.model_dump(exclude={"fit_scores"}), **card.notes()}
        score = "fit_dice" if card.num_classes == 2 else "fit_miou"  # what the fit scored
        metrics |= {f"{score}_{k}": v for k, v in summary.fit_scores.items()}
        metrics["train_seconds"] = metrics.pop("seconds")
        if not dist.main:
            return metrics
        card = card.model_copy(update={"training": summary, "mlflow_run_id": run.info.run_id})
        for fname, payload in files.items():
            if fname.endswith(".pt"):
                torch.save(payload, tmp / fname)
            else:
                write_json(tmp / fname, payload)
        card.write(tmp)
        write_csv(tmp / "history.csv", history, HISTORY_FIELDS)
        tracking_log_metrics(metrics)
        for path in sorted(tmp.iterdir()):
            if log_weights or path.suffix != ".pt":
                log_artifacts(path, "model")
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: nothing left to resume
    return metrics


def _resume_state(name: str, ckpt: Path, fp: dict, resume: bool, dist: Dist) -> dict | None:
    """The checkpoint state to continue from, or None to start afresh; says which, and why.
    Every DDP process decides on the same file before rank 0 may delete it."""
    state, why = resumable(ckpt, fp)
    if state is not None and not resume:
        state, why = (
            None,
            f"starting from the first epoch as asked (the checkpoint in {ckpt} is discarded)",
        )
    if why and dist.main:
        print(f"train@{name}: {why}", flush=True)
    if dist.world > 1:
        torch.distributed.barrier()
    return state


def _end_abandoned(ckpt: Path) -> None:
    """The MLflow run of a killed training that is not continued stays RUNNING forever unless
    it is ended here (its id is in the checkpoint folder about to be removed)."""
    run_id = resumed_run_id(ckpt)
    if run_id is not None:
        end_abandoned_run(run_id, "killed; a later training started afresh")
