"""``train(model_name, params, tiles_dir, out_dir) -> metrics``: one function for every caller.

The DVC stage, the Prefect task and the Ray trainable all call :func:`train`.

Output layout (``out_dir``)::

    config.json     resolved config: registered model, entry name, kind, model params, prepare,
                    train, data version
    weights.pt      torch models: what was trained, at the best epoch (by validation Dice): the
                    whole state dict, or for SAM only the decoder and LoRA factors (the frozen
                    base comes from the checkpoint named in config.json)
    last.pt         torch models: the same, at the last epoch
    state.json      classical models: their fitted state (zero-shot models: no weights at all)
    history.csv     per epoch: train_loss, val_loss, val_dice, lr, seconds (torch models)
    metrics.json    best epoch, best validation Dice, stop reason, parameter counts, wall time,
                    device and count, peak memory, and the notes a reader needs
                    (``oracle_prompts``, ``random_init``: see segbench.models.registry)
    mlflow.json     the MLflow run id, so evaluation logs into the same run

While a torch model trains, every completed epoch is checkpointed (model, optimiser, schedule,
history, RNG state) to ``<out_dir's parent>/.<name>.resume/``; ``train.resume: true`` continues
from there after the process was killed, and reaches what an uninterrupted run would have (data
order and augmentation are seeded per epoch). The directory is removed when training finishes.

Several processes: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (NCCL on GPUs, gloo on CPU), each process trains on its shard of the
tiles (DistributedSampler), every process validates on all validation tiles (so all reach the
same decisions), and only rank 0 writes files and logs to MLflow.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from segbench.checkpoint import (
    Progress,
    fingerprint,
    model_state,
    require_checkpoint,
    restore_checkpoint,
    resume_dir_for,
    resumed_run_id,
    save_atomic,
    save_checkpoint,
)
from segbench.config import Params
from segbench.cost import count_parameters, peak_memory_mb
from segbench.data.augment import build_augmenter
from segbench.data.dataset import TileDataset, load_tiles
from segbench.errors import SegbenchError
from segbench.inference import autocast
from segbench.io import atomic_dir, read_json, write_csv, write_json
from segbench.launch import STORE_ENV
from segbench.losses import build_loss
from segbench.metrics import dataset_dice
from segbench.models import build_model, get_spec
from segbench.models.params import train_overrides
from segbench.models.registry import model_notes
from segbench.optim import EpochSchedule, build_optimizer
from segbench.tracking import flatten, mlflow_run, run_tags

HISTORY_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int):
        super().__init__(f"non-finite loss in epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (world 1 when not under torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, dist: Dist = Dist()) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SegbenchError("train.device: cuda requested but no CUDA device is visible; use auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank if dist.world > 1 else 0)


def forward_loss(net, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple:
    """``(logits, loss)`` of one batch: (N, C, H, W) images, (N, 1, H, W) {0, 1} targets.

    A *guided* model (SAM's fine-tuned decoder) is also handed the targets: it draws box
    prompts from them and computes its IoU-prediction term (``aux_loss``), added to the loss.
    """
    inner = getattr(net, "module", net)  # under DDP, attributes live on the wrapped model
    guided = getattr(inner, "guided", False)
    with autocast(x.device):
        logits = net(x, y) if guided else net(x)
    loss = loss_fn(logits.float(), y)
    if guided:
        loss = loss + inner.aux_loss.float()
    return logits.float(), loss


@torch.no_grad()
def validate(model, loader, loss_fn, device) -> tuple[float, float]:
    """Mean loss and pooled Dice (threshold 0.5) of ``model`` over ``loader``."""
    model.eval()
    losses, preds, targets = [], [], []
    for x, y in loader:
        logits, loss = forward_loss(model, x.to(device), y.to(device), loss_fn)
        losses.append(float(loss) * len(x))
        preds.append((logits > 0).cpu().numpy())
        targets.append(y.numpy() > 0.5)
    dice = dataset_dice(np.concatenate(preds), np.concatenate(targets))
    return sum(losses) / len(loader.dataset), dice


def train_one_epoch(
    model, loader, loss_fn, optimizer, device, epoch: int, *, accumulate: int = 1
) -> float:
    """One pass over ``loader``, stepping every ``accumulate`` batches; mean loss per sample.

    Raises :class:`NonFiniteLoss` on a NaN or infinite loss, before the step that would
    spread it into the weights.
    """
    model.train()
    total, seen = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    batches = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)
    for i, (x, y) in enumerate(batches, start=1):
        _, loss = forward_loss(model, x.to(device), y.to(device), loss_fn)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(epoch, i)
        (loss / accumulate).backward()
        if i % accumulate == 0 or i == len(loader):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total, seen = total + float(loss.detach()) * len(x), seen + len(x)
    return total / seen


def _loaders(params: Params, tiles_dir, dist: Dist):
    cfg = params.train
    augmenter = None
    if params.prepare.augment.mode == "online":  # else the tiles on disk are already augmented
        augmenter = build_augmenter(params.prepare.augment, params.prepare.tile_size)
    train_ds = TileDataset.from_dir(tiles_dir, "train", augmenter=augmenter, seed=cfg.seed)
    val_ds = TileDataset.from_dir(tiles_dir, "val")
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(
            train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.seed
        )
        per_rank = math.ceil(len(train_ds) / dist.world)
    else:
        sampler = RandomSampler(train_ds, generator=torch.Generator())
        per_rank = len(train_ds)
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=per_rank % cfg.batch_size == 1,  # a batch of one breaks BatchNorm
    )
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    return train_ds, sampler, loader, val_loader


def _seed_epoch(sampler, seed: int, epoch: int) -> None:
    """The data order of an epoch depends on (seed, epoch) alone: resumable, worker-proof."""
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed * 100_003 + epoch)


def _fit_torch(
    name, params: Params, tiles_dir, device, dist: Dist, on_epoch, log_metrics, ckpt: Path, fp
) -> tuple:
    model_params = params.model_params(name)
    # A model's own loss, optimizer or weight decay (SAM: AdamW, focal + dice) wins over train's.
    cfg = params.train.model_copy(update=train_overrides(model_params))
    torch.manual_seed(cfg.seed)
    train_ds, sampler, loader, val_loader = _loaders(params, tiles_dir, dist)
    model = build_model(params.model_type(name), **model_params.model_dump()).to(device)
    counts = count_parameters(model)
    net = model
    if dist.world > 1:
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(cfg, net.parameters())
    schedule = EpochSchedule(cfg, optimizer)
    loss_fn = build_loss(cfg.loss, **cfg.tversky.model_dump())
    prog = Progress(history=[])
    best_state = None
    if cfg.resume:
        best_state = restore_checkpoint(ckpt, fp, model, optimizer, schedule, prog)
    epochs = tqdm(
        range(prog.epoch + 1, cfg.epochs + 1),
        desc=f"train@{name}",
        unit="epoch",
        initial=prog.epoch,
        total=cfg.epochs,
        disable=not dist.main or None,
    )
    stop_reason = "epochs"
    for epoch in epochs:
        start = time.perf_counter()
        _seed_epoch(sampler, cfg.seed, epoch)
        train_ds.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(
            net, loader, loss_fn, optimizer, device, epoch, accumulate=cfg.accumulate
        )
        val_loss, val_dice = validate(model, val_loader, loss_fn, device)
        schedule.step(val_dice)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        prog.history.append(row)
        prog.epoch = epoch
        score = -math.inf if math.isnan(val_dice) else val_dice
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
        epochs.set_postfix(loss=f"{train_loss:.3f}", val_dice=f"{val_dice:.3f}")
        if cfg.early_stopping and prog.bad_epochs >= cfg.early_stopping:
            stop_reason = f"early stopping: no better val Dice for {prog.bad_epochs} epochs"
            break
    summary = {
        "best_epoch": prog.best_epoch,
        "best_val_dice": prog.best,
        "epochs_run": prog.epoch,
        "stop_reason": stop_reason,
        **counts,
    }
    return {"weights.pt": best_state, "last.pt": model_state(model)}, prog.history, summary


def _fit_classical(name, params: Params, tiles_dir) -> tuple:
    model = build_model(params.model_type(name), **params.model_params(name).model_dump())
    images, masks, _ = load_tiles(tiles_dir, "train")
    scores = model.fit(images, masks)
    summary = {f"fit_dice_{k}": v for k, v in scores.items()}
    summary.update(params_total=0, params_trainable=0)
    return {"state.json": model.state_dict()}, [], summary


def _fit_zero_shot(name, params: Params) -> tuple:
    # Nothing to fit: building the model checks the checkpoint (path, sha256, variant, size)
    # here, so a bad file stops train@, not the evaluation after it.
    model = build_model(params.model_type(name), **params.model_params(name).model_dump())
    return {}, [], count_parameters(model)


def _init_distributed(dist: Dist, device: torch.device) -> None:
    import torch.distributed as td

    if dist.world > 1 and not td.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # segbench.launch hands over a store file (nothing listens beyond loopback); under
        # torchrun, its env:// rendezvous.
        store = os.environ.get(STORE_ENV)
        td.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method=f"file://{store}" if store else "env://",
            rank=dist.rank,
            world_size=dist.world,
        )


def train(
    model_name: str,
    params: Params,
    tiles_dir: str | Path,
    out_dir: str | Path,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict:
    """Train (or fit) ``model_name`` on the tiles and write ``out_dir``; return its metrics.

    ``on_epoch`` is called with each epoch's history row (for Ray Tune reporting). ``run_name``
    and ``tags`` name the MLflow run and add to its tags (a sweep's trials set
    ``mlflow.parentRunId``, which makes them child runs of the sweep's run).
    """
    import mlflow

    mtype = params.model_type(model_name)
    spec = get_spec(mtype)
    tiles_dir, out_dir = Path(tiles_dir), Path(out_dir)
    data_version = read_json(tiles_dir / "summary.json")["data_version"]
    dist = Dist.from_env()
    device = resolve_device(params.train.device, dist)
    _init_distributed(dist, device)
    config = {
        "model": mtype,
        "name": model_name,
        "kind": spec.kind,
        "params": params.model_params(model_name).model_dump(),
        "prepare": params.prepare.model_dump(),
        "train": params.train.model_dump(),
        "data_version": data_version,
    }
    ckpt = resume_dir_for(out_dir)
    if params.train.resume and spec.kind == "torch":
        require_checkpoint(ckpt)  # fail before any run or directory is created
    if dist.main and not params.train.resume:
        shutil.rmtree(ckpt, ignore_errors=True)  # a fresh run never mixes in an old one
    tags = {
        **run_tags(stage=f"train@{model_name}", data_version=data_version, device=str(device)),
        **(tags or {}),
    }
    with ExitStack() as stack:
        tmp = run = None
        log_metrics = lambda *a, **k: None  # noqa: E731 - ranks > 0 log nothing
        if dist.main:
            tmp = stack.enter_context(atomic_dir(out_dir))
            run_id = resumed_run_id(ckpt) if params.train.resume else None
            run = stack.enter_context(
                mlflow_run(run_name=run_name or model_name, run_id=run_id, tags=tags)
            )
            if run_id is None:
                mlflow.log_params(flatten(config))
            ckpt.mkdir(parents=True, exist_ok=True)
            write_json(ckpt / "mlflow.json", {"run_id": run.info.run_id})
            log_metrics = mlflow.log_metrics
        start = time.perf_counter()
        try:
            if spec.kind == "torch":
                files, history, summary = _fit_torch(
                    model_name,
                    params,
                    tiles_dir,
                    device,
                    dist,
                    on_epoch,
                    log_metrics,
                    ckpt,
                    fingerprint(config),
                )
            elif spec.kind == "zero_shot":
                files, history, summary = _fit_zero_shot(model_name, params)
            else:
                files, history, summary = _fit_classical(model_name, params, tiles_dir)
        except NonFiniteLoss as exc:
            raise SegbenchError(
                f"train@{model_name}: the loss became NaN or infinite in epoch {exc.epoch} "
                f"(batch {exc.batch}); lower train.lr, try train.loss=dice_bce, or check the "
                f"data. The last good epoch is kept in {ckpt} (train.resume=true continues "
                "from it)"
            ) from None
        summary.update(
            train_seconds=time.perf_counter() - start,
            device=str(device),
            device_count=dist.world,
            peak_memory_mb=peak_memory_mb(device),
            **model_notes(mtype, config["params"]),
        )
        if not dist.main:
            return summary
        for fname, payload in files.items():
            if fname.endswith(".pt"):
                torch.save(payload, tmp / fname)
            else:
                write_json(tmp / fname, payload)
        write_json(tmp / "config.json", config)
        write_csv(tmp / "history.csv", history, HISTORY_FIELDS)
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "mlflow.json", {"run_id": run.info.run_id})
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        mlflow.log_artifacts(str(tmp), artifact_path="model")
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: nothing left to resume
    return summary
