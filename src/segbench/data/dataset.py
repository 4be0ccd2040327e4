"""The torch Dataset over prepared tiles, and the one image normalisation every model sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench.errors import SegbenchError
from segbench.io import read_csv, read_image, read_mask

# Fixed constants rather than dataset statistics, so a checkpoint needs nothing else to predict.
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25


def normalize(images: np.ndarray) -> torch.Tensor:
    """(..., H, W) uint8 in [0, 255] -> float32 tensor, zero-centred, unit-ish scale."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(IMAGE_MEAN).div_(IMAGE_STD)


def load_tiles(tiles_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All tiles of ``split``: images (N, T, T) uint8 and masks (N, T, T) {0, 1}."""
    tiles_dir = Path(tiles_dir)
    names = [r["tile"] for r in read_csv(tiles_dir / "manifest.csv") if r["split"] == split]
    if not names:
        raise SegbenchError(f"{tiles_dir}: no {split} tiles; re-run `dvc repro prepare`")
    images = np.stack([read_image(tiles_dir / split / "images" / f"{n}.png") for n in names])
    masks = np.stack([read_mask(tiles_dir / split / "masks" / f"{n}.png") for n in names])
    return images, masks


class TileDataset(Dataset):
    """Tiles held in memory; item ``i`` is (image (1, T, T) float32, mask (1, T, T) float32 {0, 1})."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        if images.shape != masks.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
        self.images, self.masks = images, masks

    @classmethod
    def from_dir(cls, tiles_dir: str | Path, split: str) -> TileDataset:
        return cls(*load_tiles(tiles_dir, split))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = normalize(self.images[i])[None]
        mask = torch.from_numpy(self.masks[i].astype(np.float32))[None]
        return image, mask
