"""Training-tile augmentation through albumentations, built from ``prepare.augment``.

The same pipeline serves offline augmentation (``prepare`` writes augmented copies) and online
augmentation (the training Dataset augments every time it serves a tile). Every call is seeded
explicitly, so the result does not depend on process or worker scheduling.

Geometry (flips, rotation with reflected borders, centre crop resized back) moves image and mask
together; the mask always uses nearest-neighbour interpolation, so it stays class indices and
aligned. Intensity transforms (brightness/contrast relative to the image mean, gamma; hue and
saturation jitter for colour data only) touch the image only. 16-bit tiles go through float32
in [0, 1] (albumentations' uint8 paths would truncate them) and come back as uint16.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from segbench.config import AugmentConfig


def build_augmenter(
    cfg: AugmentConfig, tile_size: int, *, channels: str = "gray"
) -> A.Compose | None:
    """The albumentations pipeline for ``cfg``, or None when it would do nothing.

    ``channels`` is the data's: colour jitter applies to ``rgb`` data only (hue and saturation
    mean nothing for a grey image).
    """
    if cfg.mode == "none":
        return None
    ops: list[A.BasicTransform] = []
    if cfg.hflip:
        ops.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.vflip:
        ops.append(A.VerticalFlip(p=cfg.vflip))
    if cfg.rotate.p:
        ops.append(
            A.Rotate(
                limit=cfg.rotate.limit,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,  # no black corners, no fake background
                p=cfg.rotate.p,
            )
        )
    if cfg.center_crop.p:
        side = max(1, round(tile_size * cfg.center_crop.fraction))
        ops.append(
            A.Sequential(
                [
                    A.CenterCrop(height=side, width=side),
                    A.Resize(
                        tile_size,
                        tile_size,
                        interpolation=cv2.INTER_LINEAR,
                        mask_interpolation=cv2.INTER_NEAREST,
                    ),
                ],
                p=cfg.center_crop.p,
            )
        )
    if cfg.brightness_contrast.p:
        ops.append(
            A.RandomBrightnessContrast(
                brightness_limit=cfg.brightness_contrast.brightness,
                contrast_limit=cfg.brightness_contrast.contrast,
                brightness_by_max=False,  # relative to the image mean: fair to 12-in-16-bit data
                p=cfg.brightness_contrast.p,
            )
        )
    if cfg.gamma.p:
        ops.append(A.RandomGamma(gamma_limit=tuple(cfg.gamma.limit), p=cfg.gamma.p))
    if cfg.color_jitter.p and channels == "rgb":
        jitter = cfg.color_jitter
        ops.append(
            A.ColorJitter(
                brightness=0.0,  # brightness and contrast have their own transform above
                contrast=0.0,
                saturation=jitter.saturation,
                hue=jitter.hue,
                p=jitter.p,
            )
        )
    return A.Compose(ops) if ops else None


def augment(
    aug: A.Compose | None, image: np.ndarray, mask: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One seeded draw of ``aug`` on an (H, W[, 3]) uint8/uint16 image and its (H, W) mask of
    class indices."""
    if aug is None:
        return image, mask
    aug.set_random_seed(seed)
    if image.dtype == np.uint16:
        out = aug(image=image.astype(np.float32) / 65535.0, mask=mask)
        back = np.clip(np.rint(out["image"] * 65535.0), 0, 65535).astype(np.uint16)
        return back, out["mask"]
    out = aug(image=image, mask=mask)
    return out["image"], out["mask"]
