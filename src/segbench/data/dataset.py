"""The torch Dataset over prepared tiles, with optional online augmentation.

Tiles stay at their stored bit depth in memory; each item is normalised on the way out with
its source image's intensity range (recorded by ``prepare``; see :mod:`segbench.data.normalize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.data.normalize import standardize
from segbench.errors import SegbenchError
from segbench.io import read_csv, read_image, read_mask


def load_tiles(
    tiles_dir: str | Path, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All tiles of ``split``: images (N, T, T) uint8/uint16, masks (N, T, T) {0, 1}, and
    ranges (N, 2) float64, the ``(lo, hi)`` intensity range of each tile's source image."""
    tiles_dir = Path(tiles_dir)
    rows = [r for r in read_csv(tiles_dir / "manifest.csv") if r["split"] == split]
    if not rows:
        raise SegbenchError(f"{tiles_dir}: no {split} tiles; re-run `dvc repro prepare`")
    images = [read_image(tiles_dir / split / "images" / f"{r['tile']}.png") for r in rows]
    dtype = np.uint16 if any(i.dtype == np.uint16 for i in images) else np.uint8
    images = np.stack(images).astype(dtype, copy=False)
    masks = np.stack([read_mask(tiles_dir / split / "masks" / f"{r['tile']}.png") for r in rows])
    ranges = np.array([[float(r["lo"]), float(r["hi"])] for r in rows])
    return images, masks, ranges


class TileDataset(Dataset):
    """Tiles held in memory; item ``i`` is (image (1, T, T) float32, mask (1, T, T) float32 {0, 1}).

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
    ):
        if images.shape != masks.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
        if len(ranges) != len(images):
            raise ValueError(f"{len(ranges)} intensity ranges for {len(images)} tiles")
        self.images, self.masks, self.ranges = images, masks, ranges
        self.augmenter, self.seed, self.epoch = augmenter, seed, 0

    @classmethod
    def from_dir(cls, tiles_dir: str | Path, split: str, **kwargs) -> TileDataset:
        return cls(*load_tiles(tiles_dir, split), **kwargs)

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
        x = standardize(image, lo, hi)[None]
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return x, y
