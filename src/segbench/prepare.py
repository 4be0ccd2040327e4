"""The ``prepare`` stage: train/val images -> square tiles, with flips as augmentation.

Each train/val image is scaled by ``prepare.scale``, cut into sliding windows of ``tile_size``
with ``stride``, and ``random_crops`` extra random crops are drawn from it. Training tiles are
flipped at random (albumentations, seeded per image so the output does not depend on the order
images are processed in). Test images are not tiled: evaluation runs on them at full size.

Output layout (``out_dir``)::

    train/images/<tile>.png, train/masks/<tile>.png, val/...
    manifest.csv    tile, split, source, kind (window|crop), y, x, foreground_fraction
    summary.json    tile counts per split and the data version (hash of all tile bytes)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import albumentations as A
import numpy as np
from tqdm import tqdm

from segbench.config import PrepareConfig
from segbench.data.resize import resize_image, resize_mask, scaled_shape
from segbench.data.tiles import iter_tiles, pad_to_tile
from segbench.io import atomic_dir, read_csv, read_image, read_mask, write_csv, write_json

TILE_FIELDS = ["tile", "split", "source", "kind", "y", "x", "foreground_fraction"]
TILED_SPLITS = ("train", "val")


def _image_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _augmenter(cfg: PrepareConfig, seed: int, *, crop: bool) -> A.Compose:
    ops = [A.RandomCrop(height=cfg.tile_size, width=cfg.tile_size)] if crop else []
    ops += [A.HorizontalFlip(p=cfg.hflip), A.VerticalFlip(p=cfg.vflip)]
    return A.Compose(ops, seed=seed)


def tiles_for_image(
    image: np.ndarray, mask: np.ndarray, cfg: PrepareConfig, *, seed: int, augment: bool
) -> list[tuple[str, int, int, np.ndarray, np.ndarray]]:
    """All tiles of one full-size image: ``(kind, y, x, image_tile, mask_tile)``.

    ``image`` (H, W) uint8, ``mask`` (H, W) {0, 1}; tiles are (tile_size, tile_size). Crops
    report ``y = x = -1`` (their position is drawn by albumentations and not needed later).
    """
    shape = scaled_shape(*image.shape[:2], cfg.scale)
    image, mask = resize_image(image, shape), resize_mask(mask, shape)
    flip = _augmenter(cfg, seed, crop=False)
    out = []
    for y, x, img_t, msk_t in iter_tiles(image, mask, cfg.tile_size, cfg.stride):
        if augment:
            res = flip(image=img_t, mask=msk_t)
            img_t, msk_t = res["image"], res["mask"]
        out.append(("window", y, x, img_t, msk_t))
    crop = _augmenter(cfg, seed + 1, crop=True)
    padded_img, padded_msk = pad_to_tile(image, cfg.tile_size), pad_to_tile(mask, cfg.tile_size)
    for _ in range(cfg.random_crops if augment else 0):
        res = crop(image=padded_img, mask=padded_msk)
        out.append(("crop", -1, -1, res["image"], res["mask"]))
    return out


def prepare(cfg: PrepareConfig, raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Tile the train and val images of ``raw_dir`` into ``out_dir``; return the summary."""
    from segbench.io import write_image, write_mask

    raw_dir = Path(raw_dir)
    manifest = [r for r in read_csv(raw_dir / "manifest.csv") if r["split"] in TILED_SPLITS]
    rows, digest = [], hashlib.sha256()
    with atomic_dir(out_dir) as tmp:
        for split in TILED_SPLITS:
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
        for index, rec in enumerate(tqdm(manifest, desc="prepare", unit="img")):
            image = read_image(raw_dir / rec["image"])
            mask = read_mask(raw_dir / rec["mask"])
            tiles = tiles_for_image(
                image,
                mask,
                cfg,
                seed=_image_seed(cfg.seed, index),
                augment=rec["split"] == "train",
            )
            for k, (kind, y, x, img_t, msk_t) in enumerate(tiles):
                name = f"{rec['id']}_{k:03d}"
                write_image(tmp / rec["split"] / "images" / f"{name}.png", img_t)
                write_mask(tmp / rec["split"] / "masks" / f"{name}.png", msk_t)
                digest.update(img_t.tobytes() + msk_t.tobytes())
                rows.append(
                    {
                        "tile": name,
                        "split": rec["split"],
                        "source": rec["id"],
                        "kind": kind,
                        "y": y,
                        "x": x,
                        "foreground_fraction": round(float(msk_t.mean()), 6),
                    }
                )
        write_csv(tmp / "manifest.csv", rows, TILE_FIELDS)
        summary = {
            "tile_size": cfg.tile_size,
            "scale": cfg.scale,
            "tiles": {s: sum(r["split"] == s for r in rows) for s in TILED_SPLITS},
            "data_version": digest.hexdigest()[:16],
        }
        write_json(tmp / "summary.json", summary)
    return summary
