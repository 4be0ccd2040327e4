"""The ``prepare`` stage: train/val images -> square tiles, augmented, on every core, streaming.

Per train/val image (at ``prepare.scale``):

* sliding windows of ``tile_size`` at ``stride`` (or ``overlap``), edges per ``prepare.edges``;
* training images only: ``random_crops`` random crops, each redrawn (up to 20 times) while its
  foreground fraction is below ``crop_min_foreground``;
* training tiles only, ``augment.mode: offline``: ``augment.factor`` augmented copies of every
  tile (plus the untouched tile with ``keep_original``). ``online`` writes plain tiles and
  leaves augmentation to the training Dataset.

Images are processed by a pool of worker processes, one image per task, each worker reading,
tiling, augmenting and writing its PNGs itself; the parent only collects manifest rows. Memory
is therefore one image per worker, whatever the dataset size. Every random draw is seeded by
(``prepare.seed``, image id), so the output is identical for any number of workers and does not
change for an image when others are added or removed. Test images are not tiled: evaluation
runs on them at full size.

An image smaller than ``tile_size`` on either side (after ``scale``), whatever its source, is
reflect-padded at the bottom/right up to one tile (real datasets mix sizes; refusing them would
reject the dataset). This is never silent: ``prepare`` prints one warning with how many train/val
images were padded, the smallest of them and a tile size that would need no padding, and
``summary.json`` counts them per split (``padded_images``).

Output layout (``out_dir``)::

    train/images/<tile>.png, train/masks/<tile>.png, val/...   (8/16-bit as the source, grey
                    or RGB as data/raw; masks of class indices as data/raw's)
    classes.json    the class list and channels, copied from data/raw
    manifest.csv    tile, split, source, kind (window|crop), copy, y, x, foreground_fraction,
                    lo, hi (the image's intensity range, see segbench.data.normalize)
    summary.json    tile counts per split and kind, images and padded images per split, and
                    the data version (a hash of the tiles and the manifest)
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segbench.classes import IGNORE, read_channels, read_classes, write_classes
from segbench.config import PrepareConfig
from segbench.data.augment import augment, build_augmenter
from segbench.data.normalize import intensity_range
from segbench.data.resize import resize_image, resize_mask, scaled_shape
from segbench.data.tiles import iter_tiles, pad_to_tile
from segbench.io import (
    atomic_dir,
    read_csv,
    read_image,
    read_mask,
    write_csv,
    write_image,
    write_json,
    write_mask,
)

TILE_FIELDS = [
    "tile",
    "split",
    "source",
    "kind",
    "copy",
    "y",
    "x",
    "foreground_fraction",
    "lo",
    "hi",
]
TILED_SPLITS = ("train", "val")
CROP_TRIES = 20


def image_seed(seed: int, image_id: str) -> int:
    """A seed fixed by (seed, image id) alone: independent of the order and number of images."""
    digest = hashlib.sha256(f"{seed}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _sub_seed(base: int, *keys: int) -> int:
    return int(np.random.SeedSequence([base, *keys]).generate_state(1)[0])


@dataclass(frozen=True)
class Tile:
    kind: str  # "window" or "crop"
    copy: int  # 0 = as cut; 1.. = augmented copies
    y: int
    x: int
    image: np.ndarray  # (T, T[, 3]) uint8/uint16
    mask: np.ndarray  # (T, T) class indices ({0, 1} for two classes)


def foreground_fraction(mask: np.ndarray) -> float:
    """Share of a mask's labelled pixels that belong to a foreground class (index >= 1)."""
    labelled = mask != IGNORE
    n = int(labelled.sum())
    return float(((mask > 0) & labelled).sum() / n) if n else 0.0


def random_crop(
    image: np.ndarray, mask: np.ndarray, tile: int, rng: np.random.Generator, min_fg: float
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """A random ``tile`` crop; redrawn while below ``min_fg`` foreground (best of the tries)."""
    image, mask = pad_to_tile(image, tile), pad_to_tile(mask, tile)
    best = None
    for _ in range(CROP_TRIES if min_fg > 0 else 1):
        y = int(rng.integers(0, image.shape[0] - tile + 1))
        x = int(rng.integers(0, image.shape[1] - tile + 1))
        fg = foreground_fraction(mask[y : y + tile, x : x + tile])
        if best is None or fg > best[0]:
            best = (fg, y, x)
        if fg >= min_fg:
            break
    _, y, x = best
    return y, x, image[y : y + tile, x : x + tile], mask[y : y + tile, x : x + tile]


def tiles_for_image(
    image: np.ndarray, mask: np.ndarray, cfg: PrepareConfig, *, seed: int, train: bool
) -> list[Tile]:
    """All tiles of one image already at working resolution.

    ``image`` (H, W[, 3]) uint8/uint16 and ``mask`` (H, W) class indices; tiles are
    (tile_size, tile_size).
    """
    t = cfg.tile_size
    base = [
        Tile("window", 0, y, x, img_t, msk_t)
        for y, x, img_t, msk_t in iter_tiles(image, mask, t, cfg.step, cfg.edges)
    ]
    if train:
        rng = np.random.default_rng(_sub_seed(seed, 0))
        for _ in range(cfg.random_crops):
            y, x, img_t, msk_t = random_crop(image, mask, t, rng, cfg.crop_min_foreground)
            base.append(Tile("crop", 0, y, x, img_t, msk_t))
    aug_cfg = cfg.augment
    if not train or aug_cfg.mode != "offline":
        return base
    aug = build_augmenter(aug_cfg, t, channels="rgb" if image.ndim == 3 else "gray")
    out = []
    for k, tile in enumerate(base):
        if aug_cfg.keep_original or aug is None:
            out.append(tile)
        if aug is None:
            continue
        for c in range(1, aug_cfg.factor + 1):
            img_t, msk_t = augment(aug, tile.image, tile.mask, _sub_seed(seed, 1, k, c))
            out.append(Tile(tile.kind, c, tile.y, tile.x, img_t, msk_t))
    return out


@dataclass(frozen=True)
class _Job:
    image_id: str
    split: str
    image: Path
    mask: Path
    out: Path
    channels: str = "gray"
    num_classes: int = 2
    fold: str = ""  # k-fold cross-validation: the image's fold (segbench.data.split)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; nested threads only contend


def _tile_one(job: _Job, cfg: PrepareConfig) -> tuple[list[dict], str, tuple[int, int]]:
    """Tile one image and write its PNGs; return its manifest rows, a digest of its tiles and
    its (H, W) at working resolution."""
    image = read_image(job.image, job.channels)
    mask = read_mask(job.mask, job.num_classes)
    shape = scaled_shape(*image.shape[:2], cfg.scale)
    image, mask = resize_image(image, shape), resize_mask(mask, shape, job.num_classes)
    lo, hi = intensity_range(image, cfg.normalize)
    tiles = tiles_for_image(
        image, mask, cfg, seed=image_seed(cfg.seed, job.image_id), train=job.split == "train"
    )
    digest = hashlib.sha256()
    rows = []
    for k, tile in enumerate(tiles):
        name = f"{job.image_id}_{k:04d}"
        write_image(job.out / job.split / "images" / f"{name}.png", tile.image)
        write_mask(job.out / job.split / "masks" / f"{name}.png", tile.mask, job.num_classes)
        digest.update(tile.image.tobytes())
        digest.update(tile.mask.tobytes())
        rows.append(
            {
                "tile": name,
                "split": job.split,
                "source": job.image_id,
                "kind": tile.kind,
                "copy": tile.copy,
                "y": tile.y,
                "x": tile.x,
                "foreground_fraction": round(foreground_fraction(tile.mask), 6),
                "lo": lo,
                "hi": hi,
                "fold": job.fold,
            }
        )
    return rows, digest.hexdigest(), shape


class _Worker:
    """Picklable callable binding the config, for ``Pool.imap``."""

    def __init__(self, cfg: PrepareConfig):
        self.cfg = cfg

    def __call__(self, job: _Job) -> tuple[list[dict], str, tuple[int, int]]:
        return _tile_one(job, self.cfg)


def _pool(workers: int):
    """A process pool whose workers do not inherit this process's threads.

    Plain ``fork`` copies OpenCV's thread-pool state from a parent that already resized an
    image, and the child then waits forever on threads it does not have. ``forkserver`` forks
    from a clean server process that has imported this module once, so workers still start in
    milliseconds.
    """
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["segbench.prepare"])
    else:  # Windows
        ctx = multiprocessing.get_context("spawn")
    return ctx.Pool(workers, initializer=_init_worker)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def prepare(cfg: PrepareConfig, raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Tile the train and val images of ``raw_dir`` into ``out_dir``; return the summary."""
    raw_dir = Path(raw_dir)
    manifest = [r for r in read_csv(raw_dir / "manifest.csv") if r["split"] in TILED_SPLITS]
    spec, channels = read_classes(raw_dir), read_channels(raw_dir)
    rows: list[dict] = []
    padded: dict[str, list[tuple[int, int]]] = {split: [] for split in TILED_SPLITS}
    digest = hashlib.sha256()
    with atomic_dir(out_dir) as tmp:
        for split in TILED_SPLITS:
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
        # k-fold cross-validation: every train/val image is a training image of the folds it
        # is not in and the validation image of its own, so it is tiled both ways.
        folds = any(r.get("fold", "") != "" for r in manifest)
        jobs = [
            _Job(
                r["id"],
                split,
                raw_dir / r["image"],
                raw_dir / r["mask"],
                tmp,
                channels,
                spec.num_classes,
                r.get("fold", ""),
            )
            for r in manifest
            for split in (TILED_SPLITS if folds else (r["split"],))
        ]
        workers = max(1, min(cfg.workers or available_cores(), len(jobs)))
        worker = _Worker(cfg)
        progress = tqdm(total=len(jobs), desc=f"prepare ({workers} proc)", unit="img")
        if workers == 1:
            results = map(worker, jobs)
            pool = None
        else:
            pool = _pool(workers)
            results = pool.imap(worker, jobs, chunksize=1)  # in order: a stable manifest
        try:
            for job, (image_rows, image_digest, shape) in zip(jobs, results, strict=True):
                rows.extend(image_rows)
                digest.update(image_digest.encode())
                if min(shape) < cfg.tile_size:
                    padded[job.split].append(shape)
                progress.update()
        finally:
            progress.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        write_csv(tmp / "manifest.csv", rows, [*TILE_FIELDS, "fold"] if folds else TILE_FIELDS)
        # The manifest carries the intensity ranges training uses, so it is part of the version.
        digest.update((tmp / "manifest.csv").read_bytes())
        counts = {split: len(shapes) for split, shapes in padded.items()}
        summary = summarise(rows, cfg, digest.hexdigest()[:16], padded_images=counts)
        write_json(tmp / "summary.json", summary)
        if (raw_dir / "classes.json").exists():
            write_classes(tmp, spec, channels=channels)
    warning = padding_warning(padded, cfg, n_images=len(jobs))
    if warning:
        print(warning, file=sys.stderr)
    return summary


def padding_warning(
    padded: dict[str, list[tuple[int, int]]], cfg: PrepareConfig, *, n_images: int
) -> str | None:
    """The one warning line for the train/val images smaller than a tile (``padded``: their
    (H, W) at working resolution, per split), or None when there are none."""
    shapes = [shape for split in padded.values() for shape in split]
    if not shapes:
        return None
    h, w = min(shapes, key=lambda s: (min(s), s[0] * s[1]))
    per_split = ", ".join(f"{len(v)} {split}" for split, v in padded.items() if v)
    fits = min(h, w) // 32 * 32  # tile sizes are multiples of 32
    advice = (
        f"prepare.tile_size: {fits} or less would tile every image without padding"
        if fits >= 32
        else "no tile size (a multiple of 32) fits it: raise prepare.scale or drop such images"
    )
    return (
        f"warning: prepare: {len(shapes)} of {n_images} train/val images ({per_split}) are "
        f"smaller than prepare.tile_size={cfg.tile_size} after prepare.scale={cfg.scale:g} "
        f"(smallest {h}x{w}) and were reflect-padded up to one tile; {advice}"
    )


def summarise(
    rows: list[dict], cfg: PrepareConfig, data_version: str, *, padded_images: dict[str, int]
) -> dict:
    """Tile counts per split and kind, augmentation mode, images and ``padded_images`` (those
    smaller than a tile) per split, and the data version."""
    fg = np.array([r["foreground_fraction"] for r in rows if r["split"] == "train"], dtype=float)
    return {
        "tile_size": cfg.tile_size,
        "scale": cfg.scale,
        "stride": cfg.step,
        "augment": cfg.augment.mode,
        "tiles": {s: sum(r["split"] == s for r in rows) for s in TILED_SPLITS},
        "train_tiles_by_kind": {
            k: sum(r["split"] == "train" and r["kind"] == k for r in rows)
            for k in ("window", "crop")
        },
        "train_empty_tiles": int((fg == 0).sum()),
        "images": {s: len({r["source"] for r in rows if r["split"] == s}) for s in TILED_SPLITS},
        "padded_images": padded_images,
        "data_version": data_version,
    }
