"""Builders of small on-disk datasets in the formats users bring (for tests and benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage.measure import label

from segbench.data.synthetic import generate_sample


def particle_pair(seed: int, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic particle image (uint8) and its {0, 1} mask."""
    return generate_sample(seed, height=height, width=width, n_particles=(3, 8), radius=(4, 14))


def to_12_in_16(image: np.ndarray) -> np.ndarray:
    """uint8 -> uint16 holding a 12-bit signal (0..4095), as many microscopy cameras write."""
    return (image.astype(np.uint16) * 16 + 7).astype(np.uint16)


def write_tiff_dataset(root: Path, n: int, *, height: int = 96, width: int = 128) -> Path:
    """``root/images/*.tif`` 16-bit (12-bit signal) with ``root/masks/*.tif`` instance labels."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = particle_pair(100 + i, height, width)
        labels = label(mask, connectivity=1).astype(np.uint16)  # 1..K, one per particle
        tifffile.imwrite(root / "images" / f"sample_{i:03d}.tif", to_12_in_16(image))
        tifffile.imwrite(root / "masks" / f"sample_{i:03d}.tif", labels)
    return root


def write_png_dataset(root: Path, n: int, *, rgb: bool = False, mask_255: bool = True) -> Path:
    """``root/images/*.png`` (gray or RGB) with ``root/masks/*.png`` {0, 255} (or {0, 1})."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = particle_pair(200 + i)
        array = np.repeat(image[..., None], 3, axis=2) if rgb else image
        Image.fromarray(array).save(root / "images" / f"img_{i:03d}.png")
        Image.fromarray(mask * (255 if mask_255 else 1)).save(root / "masks" / f"img_{i:03d}.png")
    return root


# Class colours of the palette-mask fixture: what a user's class list would name.
PARKING_COLORS = {"asphalt": (0, 0, 0), "car": (220, 20, 60), "marking": (255, 215, 0)}


def parking_classes() -> list[dict]:
    """``data.classes`` for :func:`write_parking_palette_dataset`: by colour."""
    return [{"name": n, "color": list(c)} for n, c in PARKING_COLORS.items()]


def write_parking_palette_dataset(
    root: Path,
    n: int,
    *,
    height: int = 96,
    width: int = 128,
    palette_extra=None,
    tiff_16_bit: bool = False,
) -> Path:
    """``root/images/*.png`` RGB aerial parking lots with ``root/masks/*.png`` palette PNGs
    whose palette holds the class colours (index = class), as annotation tools save them.
    ``palette_extra``: an (index, colour) put into every palette and used by a few pixels
    (a palette that differs from the class list). ``tiff_16_bit``: images as 16-bit RGB TIFFs
    holding a 12-bit signal (:func:`to_12_in_16`) instead."""
    from segbench.data.parking import generate_parking
    from segbench.data.synthetic import sample_seed

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    palette = [c for color in PARKING_COLORS.values() for c in color]
    for i in range(n):
        image, mask = generate_parking(sample_seed(7, i), height=height, width=width, noise=1.0)
        if tiff_16_bit:
            tifffile.imwrite(root / "images" / f"lot_{i:03d}.tif", to_12_in_16(image))
        else:
            Image.fromarray(image).save(root / "images" / f"lot_{i:03d}.png")
        pal = list(palette)
        if palette_extra is not None:
            index, color = palette_extra
            pal += [0] * (3 * index - len(pal)) + list(color)
            mask = mask.copy()
            mask[:2, :2] = index
        im = Image.fromarray(mask.astype(np.uint8), mode="P")
        im.putpalette(pal + [0] * (768 - len(pal)))
        im.save(root / "masks" / f"lot_{i:03d}.png")
    return root
