"""The ``fetch`` stage: validate the configured source, then materialise it with its splits.

Every pair is decoded and checked (readable, image and mask the same height and width, mask
values interpretable, group key found) and every problem is collected; if there is any, fetch
stops with all of them listed, each naming the file and the fix, and ``out_dir`` is left as it
was. Pairs are written to a temporary sibling while they are checked (so each file is decoded
once) and the sibling only replaces ``out_dir`` when the whole dataset passed.

Output layout (``out_dir``)::

    images/<id>.png   (H, W) grayscale, 8- or 16-bit as the source
    masks/<id>.png    (H, W) {0, 255}
    manifest.csv      id, name, group, image, mask, height, width, bit_depth, channels,
                      foreground_fraction, split
    summary.json      counts, sizes, bit depths, channels, foreground fraction distribution,
                      empty masks, per-split counts (also printed to the log)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from segbench.config import Params
from segbench.data.sources import Item, open_source
from segbench.data.split import SPLITS, assign_splits, group_key
from segbench.decode import DecodeError, bit_depth, channels_name, interpret_mask, to_gray
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, write_csv, write_image, write_json, write_mask

MANIFEST_FIELDS = [
    "id",
    "name",
    "group",
    "image",
    "mask",
    "height",
    "width",
    "bit_depth",
    "channels",
    "foreground_fraction",
    "split",
]
MAX_LISTED = 50


class DataProblems(SegbenchError):
    """The dataset failed validation; the message lists every problem found."""

    def __init__(self, where: str, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_LISTED]
        lines = [f"{len(problems)} problem(s) in {where}; nothing was written:"]
        lines += [f"  - {p}" for p in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more")
        super().__init__("\n".join(lines))


def _decode_pair(item: Item, cfg, problems: list[str]) -> tuple | None:
    """(image, mask, stored image array) for one item, or None after recording its problems."""
    image = mask = stored = None
    try:
        stored = item.read_image()
        image = to_gray(stored)
    except DecodeError as exc:
        problems.append(f"{item.image_name}: {exc}")
    try:
        mask = interpret_mask(item.read_mask(), value=cfg.mask.value, threshold=cfg.mask.threshold)
    except DecodeError as exc:
        problems.append(f"{item.mask_name}: {exc}")
    if image is None or mask is None:
        return None
    if image.shape != mask.shape:
        problems.append(
            f"{item.mask_name}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{item.image_name} is {image.shape[1]}x{image.shape[0]}; masks must match their "
            "image pixel for pixel"
        )
        return None
    return image, mask, stored


def fetch(params: Params, out_dir: str | Path) -> dict:
    """Validate the source and write it to ``out_dir`` (atomically); return its summary."""
    cfg = params.data
    listing = open_source(cfg)
    problems = list(listing.problems)
    if not listing.items and not problems:
        problems.append(f"{listing.where}: holds no image/mask pairs; add some or fix data.path")
    rows = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for item in tqdm(listing.items, desc="fetch", unit="img"):
            group = group_key(item.name, cfg.split.group)
            if group is None:
                problems.append(
                    f"{item.image_name}: data.split.group {cfg.split.group!r} does not match "
                    f"its name {item.name!r}; fix the regex so every file has a group"
                )
            pair = _decode_pair(item, cfg, problems)
            if pair is None or problems:
                continue  # keep checking the rest, but stop writing
            image, mask, stored = pair
            write_image(tmp / "images" / f"{item.id}.png", image)
            write_mask(tmp / "masks" / f"{item.id}.png", mask)
            rows.append(
                {
                    "id": item.id,
                    "name": item.name,
                    "group": group,
                    "image": f"images/{item.id}.png",
                    "mask": f"masks/{item.id}.png",
                    "height": image.shape[0],
                    "width": image.shape[1],
                    "bit_depth": bit_depth(image),
                    "channels": channels_name(stored),
                    "foreground_fraction": round(float(mask.mean()), 6),
                }
            )
        no_label = all(r["foreground_fraction"] == 0 for r in rows)
        if cfg.mask.value is not None and rows and not problems and no_label:
            problems.append(
                f"data.mask.value: no mask in {listing.where} contains the label "
                f"{cfg.mask.value}; check the value, or null for any non-zero label"
            )
        n_groups = len({r["group"] for r in rows})
        if not problems and n_groups < len(SPLITS):
            problems.append(
                f"{listing.where}: {len(rows)} images in {n_groups} group(s); train, val and "
                f"test need at least {len(SPLITS)}"
            )
        if problems:
            raise DataProblems(listing.where, problems)
        splits = assign_splits(
            [r["id"] for r in rows],
            **cfg.split.fractions(),
            seed=cfg.seed,
            foreground=[r["foreground_fraction"] for r in rows],
            groups=[r["group"] for r in rows],
            strata=cfg.split.strata,
        )
        for row in rows:
            row["split"] = splits[row["id"]]
        write_csv(tmp / "manifest.csv", rows, MANIFEST_FIELDS)
        summary = summarise(rows, source=listing.where)
        write_json(tmp / "summary.json", summary)
    return summary


def _counts(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def summarise(rows: list[dict], *, source: str = "") -> dict:
    """Counts, sizes, bit depths, channels, foreground fractions and empty masks, per split."""
    fg = np.array([r["foreground_fraction"] for r in rows], dtype=float)
    heights = np.array([r["height"] for r in rows])
    widths = np.array([r["width"] for r in rows])
    return {
        "source": source,
        "n_images": len(rows),
        "n_groups": len({r["group"] for r in rows}),
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "empty_masks": int((fg == 0).sum()),
        "empty_by_split": {
            s: sum(r["split"] == s and r["foreground_fraction"] == 0 for r in rows) for s in SPLITS
        },
        "sizes": _counts(f"{r['width']}x{r['height']}" for r in rows),
        "height": {"min": int(heights.min()), "max": int(heights.max())},
        "width": {"min": int(widths.min()), "max": int(widths.max())},
        "bit_depths": _counts(int(r["bit_depth"]) for r in rows),
        "channels": _counts(r["channels"] for r in rows),
        "foreground_fraction": {
            "min": float(fg.min()),
            "p25": float(np.percentile(fg, 25)),
            "median": float(np.median(fg)),
            "p75": float(np.percentile(fg, 75)),
            "max": float(fg.max()),
            "mean": float(fg.mean()),
        },
    }


def describe(summary: dict) -> str:
    """The summary as a few log lines."""
    fg = summary["foreground_fraction"]
    sizes = summary["sizes"]
    size_text = ", ".join(f"{k} ({v})" for k, v in list(sizes.items())[:4]) + (
        f", ... {len(sizes)} sizes" if len(sizes) > 4 else ""
    )
    return "\n".join(
        [
            f"fetch: {summary['n_images']} images from {summary['source']} "
            f"({summary['n_groups']} groups)",
            f"  splits: {summary['splits']}  empty masks: {summary['empty_masks']} "
            f"{summary['empty_by_split']}",
            f"  sizes (WxH): {size_text}",
            f"  bit depths: {summary['bit_depths']}  channels: {summary['channels']}",
            f"  foreground fraction: min {fg['min']:.3f}  p25 {fg['p25']:.3f}  "
            f"median {fg['median']:.3f}  p75 {fg['p75']:.3f}  max {fg['max']:.3f}",
        ]
    )
