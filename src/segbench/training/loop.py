"""One epoch of training, one pass of validation, and the data loaders they read.

Data order and online augmentation depend on (seed, epoch) alone, so a resumed run sees exactly
the batches an uninterrupted one would, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from segbench.classes import IGNORE, read_channels
from segbench.config import AugmentConfig, TrainConfig
from segbench.data.augment import build_augmenter
from segbench.data.dataset import TileDataset
from segbench.inference import autocast
from segbench.metrics import confusion as confusion_counts
from segbench.metrics import dice_all, multiclass_metrics, pooled_foreground_dice
from segbench.training.distributed import Dist


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int):
        super().__init__(f"non-finite loss in epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


def forward_loss(net, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple:
    """``(logits, loss)`` of one batch: (N, C, H, W) images, (N, 1, H, W) {0, 1} float targets
    (two classes) or (N, H, W) int64 class indices (several).

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


class Validation(NamedTuple):
    """One validation pass: ``loss``, the mean loss per tile; ``dice``, Dice pooled over the
    tiles' pixels (``history.csv``'s ``val_dice``); ``score``, the mean over tiles of the
    per-image criterion models are ranked on (:mod:`segbench.metrics`; ``val_score``): what
    chooses the checkpoint, stops early and steers the plateau schedule."""

    loss: float
    dice: float
    score: float


@torch.no_grad()
def validate(model, loader, loss_fn, device) -> Validation:
    """Mean loss, pooled Dice and mean per-tile criterion of ``model`` over ``loader``.

    Two classes: foreground at probability 0.5; the criterion is Dice over all images per tile
    (a tile with nothing to find scores 1 if nothing is predicted there, else 0). Several
    classes: the argmax; pooled Dice per foreground class, pooled over the tiles, averaged over
    the foreground classes present (in reference or prediction); the criterion is each tile's
    mIoU, averaged over the tiles with a pixel not ignored. Ignored pixels (255) count for none.
    """
    model.eval()
    losses, scores = [], []
    confusion = None
    for x, y in loader:
        logits, loss = forward_loss(model, x.to(device), y.to(device), loss_fn)
        losses.append(float(loss) * len(x))
        if logits.shape[1] == 1:
            pred, ref = (logits > 0).cpu().numpy(), y.numpy() > 0.5
            counts = [confusion_counts(p, r) for p, r in zip(pred, ref, strict=True)]
            scores += [dice_all(c["tp"], c["fp"], c["fn"]) for c in counts]
            total = np.array([[c["tp"], c["fp"], c["fn"]] for c in counts]).sum(axis=0)
            confusion = total if confusion is None else confusion + total
            continue
        for p, r in zip(logits.argmax(1).cpu().numpy(), y.numpy(), strict=True):
            m = multiclass_metrics(p, r, logits.shape[1], ignore_index=IGNORE)
            scores.append(m["miou"])
            confusion = m["confusion"] if confusion is None else confusion + m["confusion"]
    mean_loss = sum(losses) / len(loader.dataset)
    return Validation(mean_loss, _pooled_dice(confusion), _mean_defined(scores))


def _pooled_dice(confusion) -> float:
    """Pooled Dice from summed binary ``[tp, fp, fn]`` or a (C, C) confusion matrix."""
    if confusion is None:
        return math.nan
    if confusion.ndim == 2:
        return pooled_foreground_dice(confusion)
    tp, fp, fn = (int(v) for v in confusion)
    return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan


def _mean_defined(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


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


def loaders(
    cfg: TrainConfig, augment: AugmentConfig, tile_size: int, tiles_dir, dist: Dist, fold: int = 0
):
    """``(train dataset, its sampler, train loader, validation loader)`` over ``tiles_dir``.

    Online augmentation (``augment.mode: online``) happens here; offline, the tiles on disk are
    already augmented. Under DDP each process reads its shard of the training tiles and all of
    the validation tiles (so every process reaches the same decisions). ``fold``: the
    cross-validation fold's tiles (``data.split.folds``; 0 is the plain train/val split).
    """
    channels = read_channels(tiles_dir)
    augmenter = (
        build_augmenter(augment, tile_size, channels=channels) if augment.mode == "online" else None
    )
    train_ds = TileDataset.from_dir(tiles_dir, "train", fold, augmenter=augmenter, seed=cfg.seed)
    val_ds = TileDataset.from_dir(tiles_dir, "val", fold)
    if dist.world > 1:
        sampler = DistributedSampler(
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


def seed_epoch(sampler, seed: int, epoch: int) -> None:
    """The data order of an epoch depends on (seed, epoch) alone: resumable, worker-proof."""
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed * 100_003 + epoch)
