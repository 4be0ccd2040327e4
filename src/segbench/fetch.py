"""The ``fetch`` stage: materialise the configured source as ``images/``, ``masks/`` and a manifest.

Output layout (``out_dir``)::

    images/<id>.png   (H, W) uint8 grayscale
    masks/<id>.png    (H, W) {0, 255}
    manifest.csv      id, image, mask, height, width, foreground_fraction, split
    summary.json      counts per split, sizes, foreground fraction distribution
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from segbench.config import Params
from segbench.data.sources import open_source
from segbench.data.split import SPLITS, assign_splits
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, write_csv, write_image, write_json, write_mask

MANIFEST_FIELDS = ["id", "image", "mask", "height", "width", "foreground_fraction", "split"]


def fetch(params: Params, out_dir: str | Path) -> dict:
    """Write the dataset to ``out_dir`` (atomically) and return its summary."""
    cfg = params.data
    count, samples = open_source(cfg)
    rows = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for image_id, image, mask in tqdm(samples, total=count, desc="fetch", unit="img"):
            if image.shape != mask.shape:
                raise SegbenchError(
                    f"{image_id}: mask size {mask.shape} differs from image size {image.shape}"
                )
            write_image(tmp / "images" / f"{image_id}.png", image)
            write_mask(tmp / "masks" / f"{image_id}.png", mask)
            rows.append(
                {
                    "id": image_id,
                    "image": f"images/{image_id}.png",
                    "mask": f"masks/{image_id}.png",
                    "height": image.shape[0],
                    "width": image.shape[1],
                    "foreground_fraction": round(float(mask.mean()), 6),
                }
            )
        splits = assign_splits([r["id"] for r in rows], **cfg.split.model_dump(), seed=cfg.seed)
        for row in rows:
            row["split"] = splits[row["id"]]
        write_csv(tmp / "manifest.csv", rows, MANIFEST_FIELDS)
        summary = summarise(rows)
        write_json(tmp / "summary.json", summary)
    return summary


def summarise(rows: list[dict]) -> dict:
    """Counts per split, image sizes and the foreground fraction distribution."""
    fg = np.array([r["foreground_fraction"] for r in rows], dtype=float)
    return {
        "n_images": len(rows),
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "sizes": sorted({f"{r['height']}x{r['width']}" for r in rows}),
        "empty_masks": int((fg == 0).sum()),
        "foreground_fraction": {
            "min": float(fg.min()),
            "median": float(np.median(fg)),
            "max": float(fg.max()),
        },
    }
