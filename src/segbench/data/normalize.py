"""The one normalisation step: stored intensities (8- or 16-bit) -> model inputs.

Images keep their stored bit depth through ``fetch`` and ``prepare``. Here, and only here, an
image becomes floats: its intensity range ``(lo, hi)`` is measured on the *whole* image at the
working resolution (``prepare.normalize.mode``), so every tile of one image shares one range,
then ``x -> clip((x - lo) / (hi - lo), 0, 1)`` and a fixed standardisation
``(x - 0.5) / 0.25``. Fixed constants rather than dataset statistics: a checkpoint needs nothing
else to predict. ``prepare`` records each tile's ``(lo, hi)`` in its manifest; prediction
measures it on the full image the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from segbench.config import NormalizeConfig

if TYPE_CHECKING:  # torch is imported only where tensors are made: prepare's workers need none
    import torch

IMAGE_MEAN, IMAGE_STD = 0.5, 0.25


def intensity_range(image: np.ndarray, cfg: NormalizeConfig) -> tuple[float, float]:
    """``(lo, hi)`` of an (H, W) uint8/uint16 image under ``cfg.mode``; ``hi > lo`` always."""
    if cfg.mode == "dtype":
        lo, hi = 0.0, float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    elif cfg.mode == "minmax":
        lo, hi = float(image.min()), float(image.max())
    else:
        # Percentiles of a subsample: exact enough for a range and much cheaper on big frames.
        step = max(1, int(np.sqrt(image.size / 250_000)))
        lo, hi = (float(v) for v in np.percentile(image[::step, ::step], cfg.percentiles))
    if hi <= lo:  # a flat image: any range maps it to one value; avoid dividing by zero
        hi = lo + 1.0
    return lo, hi


def to_unit(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(..., H, W) stored intensities -> float32 in [0, 1] over ``[lo, hi]`` (clipped)."""
    x = (np.asarray(image, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(x, 0.0, 1.0, out=x)


def standardize(image: np.ndarray, lo: float, hi: float) -> torch.Tensor:
    """(..., H, W) stored intensities -> float32 tensor ``(unit - 0.5) / 0.25``."""
    import torch

    x = torch.from_numpy(to_unit(image, lo, hi))
    return x.sub_(IMAGE_MEAN).div_(IMAGE_STD)


def normalize_image(image: np.ndarray, cfg: NormalizeConfig) -> torch.Tensor:
    """A whole (H, W) image -> its standardised float32 tensor (range measured on itself)."""
    return standardize(image, *intensity_range(image, cfg))
