"""``train(model_name, params, tiles_dir, out_dir) -> metrics``: one function for every caller.

The DVC stage, the Prefect task and (later) the Ray trainable all call :func:`train`.

Output layout (``out_dir``)::

    config.json     resolved config: model name, kind, model params, prepare, train, data version
    weights.pt      torch models: state dict of the best epoch (by validation Dice)
    state.json      classical models: their fitted state
    history.csv     per epoch: train_loss, val_loss, val_dice, seconds (torch models)
    metrics.json    best epoch, best validation Dice, parameter counts, wall time, device, memory
    mlflow.json     the MLflow run id, so evaluation logs into the same run
"""

from __future__ import annotations

import copy
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from segbench.config import Params
from segbench.data.augment import build_augmenter
from segbench.data.dataset import TileDataset, load_tiles
from segbench.errors import SegbenchError
from segbench.inference import autocast
from segbench.io import atomic_dir, read_json, write_csv, write_json
from segbench.losses import build_loss
from segbench.metrics import dataset_dice
from segbench.models import build_model, get_spec
from segbench.tracking import flatten, mlflow_run, run_tags

HISTORY_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SegbenchError("train.device: cuda requested but no CUDA device is visible; use auto")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


@torch.no_grad()
def validate(model, loader, loss_fn, device) -> tuple[float, float]:
    """Mean loss and pooled Dice (threshold 0.5) of ``model`` over ``loader``."""
    model.eval()
    losses, preds, targets = [], [], []
    for x, y in loader:
        with autocast(device):
            logits = model(x.to(device)).float()
        losses.append(float(loss_fn(logits, y.to(device))) * len(x))
        preds.append((logits > 0).cpu().numpy())
        targets.append(y.numpy() > 0.5)
    dice = dataset_dice(np.concatenate(preds), np.concatenate(targets))
    return sum(losses) / len(loader.dataset), dice


def build_scheduler(name: str, optimizer, *, epochs: int):
    """``cosine``: anneal the learning rate to ~0 over the run, stepped once per epoch; ``none``."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def train_one_epoch(model, loader, loss_fn, optimizer, device, epoch: int) -> float:
    """One pass over ``loader``; returns the mean training loss per sample."""
    model.train()
    total, seen = 0.0, 0
    for x, y in tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None):
        with autocast(device):
            logits = model(x.to(device))
        loss = loss_fn(logits.float(), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, seen = total + float(loss.detach()) * len(x), seen + len(x)
    return total / seen


def _fit_torch(name, params: Params, tiles_dir, device, on_epoch, log_metrics) -> tuple:
    cfg = params.train
    torch.manual_seed(cfg.seed)
    augmenter = None
    if params.prepare.augment.mode == "online":  # else the tiles on disk are already augmented
        augmenter = build_augmenter(params.prepare.augment, params.prepare.tile_size)
    train_ds = TileDataset.from_dir(tiles_dir, "train", augmenter=augmenter, seed=cfg.seed)
    val_ds = TileDataset.from_dir(tiles_dir, "val")
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
        drop_last=len(train_ds) % cfg.batch_size == 1,  # a batch of one breaks BatchNorm
    )
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    model = build_model(name, **params.model_params(name).model_dump()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = build_loss(cfg.loss)
    scheduler = build_scheduler(cfg.scheduler, optimizer, epochs=cfg.epochs)
    history, best, best_state = [], (-math.inf, 0), None
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"train@{name}", unit="epoch")
    for epoch in epochs:
        start = time.perf_counter()
        train_ds.set_epoch(epoch)
        train_loss = train_one_epoch(model, loader, loss_fn, optimizer, device, epoch)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        val_loss, val_dice = validate(model, val_loader, loss_fn, device)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=f"{val_dice:.3f}")
        score = -math.inf if math.isnan(val_dice) else val_dice
        if score > best[0]:
            best, best_state = (score, epoch), copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(row)
    summary = {"best_epoch": best[1], "best_val_dice": best[0], **count_parameters(model)}
    return {"weights.pt": best_state}, history, summary


def _fit_classical(name, params: Params, tiles_dir) -> tuple:
    model = build_model(name, **params.model_params(name).model_dump())
    images, masks, _ = load_tiles(tiles_dir, "train")
    scores = model.fit(images, masks)
    summary = {f"fit_dice_{k}": v for k, v in scores.items()}
    summary.update(params_total=0, params_trainable=0)
    return {"state.json": model.state_dict()}, [], summary


def train(
    model_name: str,
    params: Params,
    tiles_dir: str | Path,
    out_dir: str | Path,
    *,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or fit) ``model_name`` on the tiles and write ``out_dir``; return its metrics.

    ``on_epoch`` is called with each epoch's history row (for Ray Tune reporting).
    """
    import mlflow

    spec = get_spec(model_name)
    tiles_dir = Path(tiles_dir)
    data_version = read_json(tiles_dir / "summary.json")["data_version"]
    device = resolve_device(params.train.device)
    config = {
        "model": model_name,
        "kind": spec.kind,
        "params": params.model_params(model_name).model_dump(),
        "prepare": params.prepare.model_dump(),
        "train": params.train.model_dump(),
        "data_version": data_version,
    }
    tags = run_tags(stage=f"train@{model_name}", data_version=data_version, device=str(device))
    with atomic_dir(out_dir) as tmp, mlflow_run(run_name=model_name, tags=tags) as run:
        mlflow.log_params(flatten(config))
        start = time.perf_counter()
        if spec.kind == "torch":
            files, history, summary = _fit_torch(
                model_name, params, tiles_dir, device, on_epoch, mlflow.log_metrics
            )
        else:
            files, history, summary = _fit_classical(model_name, params, tiles_dir)
        summary.update(
            train_seconds=time.perf_counter() - start,
            device=str(device),
            device_count=torch.cuda.device_count() if device.type == "cuda" else 1,
            peak_memory_mb=peak_memory_mb(device),
        )
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
    return summary
