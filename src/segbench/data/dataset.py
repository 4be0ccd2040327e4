"""The torch Dataset over prepared tiles, with optional online augmentation.

Tiles stay at their stored bit depth in memory; each item is normalised on the way out with
its source image's intensity range (recorded by ``prepare``; see :mod:`segbench.data.normalize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.classes import read_channels, read_classes
from segbench.data.normalize import standardize
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_image, read_mask


def in_fold(row: dict, split: str, fold: int) -> bool:
    """Whether a tile of ``split``'s directory belongs to the ``fold``-th cross-validation
    split: validation tiles of fold ``fold``, training tiles of every other fold. Tiles made
    without folds (no ``fold`` value) always do."""
    own = row.get("fold", "")
    if own == "":
        return True
    return (int(own) == fold) is (split == "val")


def load_tiles(
    tiles_dir: str | Path, split: str, fold: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All tiles of ``split``: images (N, T, T[, 3]) uint8/uint16, masks (N, T, T) class
    indices ({0, 1} for two classes), and ranges (N, 2) float64, the ``(lo, hi)`` intensity
    range of each tile's source image. With k-fold tiles (``data.split.folds``), those of
    cross-validation fold ``fold`` (:func:`in_fold`; fold 0 is the plain train/val split)."""
    tiles_dir = Path(tiles_dir)
    rows = [
        r
        for r in read_csv(tiles_dir / "manifest.csv")
        if r["split"] == split and in_fold(r, split, fold)
    ]
    if not rows:
        raise SegbenchError(f"{tiles_dir}: no {split} tiles; re-run `dvc repro prepare`")
    channels = read_channels(tiles_dir)
    num_classes = read_classes(tiles_dir).num_classes
    images = [read_image(tiles_dir / split / "images" / f"{r['tile']}.png", channels) for r in rows]
    dtype = np.uint16 if any(i.dtype == np.uint16 for i in images) else np.uint8
    images = np.stack(images).astype(dtype, copy=False)
    masks = np.stack(
        [read_mask(tiles_dir / split / "masks" / f"{r['tile']}.png", num_classes) for r in rows]
    )
    ranges = np.array([[float(r["lo"]), float(r["hi"])] for r in rows])
    return images, masks, ranges


class TileDataset(Dataset):
    """Tiles held in memory; item ``i`` is (image (C, T, T) float32, target): the target is
    (1, T, T) float32 {0, 1} for two classes, else (T, T) int64 class indices (255 = ignore).

    With ``augmenter`` (an albumentations pipeline from :func:`segbench.data.augment.
    build_augmenter`) every item is augmented afresh, seeded by (``seed``, epoch, index): the
    same epoch gives the same batches whatever the number of DataLoader workers, and a resumed
    run sees what an uninterrupted one would. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        ranges: np.ndarray,
        *,
        augmenter=None,
        seed: int = 0,
        num_classes: int = 2,
    ):
        if images.shape[:3] != masks.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
        if len(ranges) != len(images):
            raise ValueError(f"{len(ranges)} intensity ranges for {len(images)} tiles")
        self.images, self.masks, self.ranges = images, masks, ranges
        self.augmenter, self.seed, self.epoch = augmenter, seed, 0
        self.num_classes = num_classes
        self.binary = num_classes == 2

    @classmethod
    def from_dir(cls, tiles_dir: str | Path, split: str, fold: int = 0, **kwargs) -> TileDataset:
        kwargs.setdefault("num_classes", read_classes(tiles_dir).num_classes)
        return cls(*load_tiles(tiles_dir, split, fold), **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.augmenter is not None:
            from segbench.data.augment import augment

            seed = int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0])
            image, mask = augment(self.augmenter, image, mask, seed)
        lo, hi = self.ranges[i]
        x = to_chw(standardize(image, lo, hi))
        if self.binary:  # (1, T, T) float {0, 1}: the sigmoid losses' target
            y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        else:  # (T, T) int64 class indices (255 = ignore): the softmax losses' target
            y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        return x, y


def to_chw(x: torch.Tensor) -> torch.Tensor:
    """A standardised (H, W) or (H, W, 3) image tensor -> (C, H, W)."""
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()
