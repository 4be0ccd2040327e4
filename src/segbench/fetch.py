"""The ``fetch`` stage: validate the configured source, then materialise it with its splits.

Every pair is decoded and checked (readable, image and mask the same height and width, mask
values interpretable, group key found) and every problem is collected; if there is any, fetch
stops with all of them listed, each naming the file and the fix, and ``out_dir`` is left as it
was. Pairs are written to a temporary sibling while they are checked (so each file is decoded
once) and the sibling only replaces ``out_dir`` when the whole dataset passed.

Output layout (``out_dir``)::

    images/<id>.png   (H, W) grey or (H, W, 3) RGB (``data.channels``), 8- or 16-bit as the
                      source
    masks/<id>.png    (H, W) class indices (:mod:`segbench.classes`); two classes: {0, 255}
    instances/<id>.tif  (H, W) uint16 (uint32 past 65535) instance labels, 0 background and
                      1..N one object each, the stored values renumbered in order; only for
                      masks that carry them (below); their union is the mask's foreground
    classes.json      the class list (names, stored values or colours, display colours) and
                      the data's channels: what every later stage reads them from
    manifest.csv      id, name, group, image, mask, instances ("instances/<id>.tif" or ""),
                      height, width, bit_depth, channels, foreground_fraction, split
                      (+ classes present, with several classes)
    summary.json      counts, sizes, bit depths, stored channels, foreground fraction
                      distribution, empty masks, per-split counts, per class pixel share and
                      images holding it, the input channels (also printed to the log), and
                      ``test_data_hash`` / ``val_data_hash``: the sha256 of those splits'
                      images and masks (:func:`segbench.datahash.split_hash`);
                      ``instance_masks``: how many images have instance labels

Instance labels (``data.mask.instances``, :meth:`segbench.config.DataConfig.instance_mode`):
in a binary task whose masks are read as "non-zero = foreground" (no class list naming
values, ``data.mask.value`` and ``threshold`` null), a stored mask with two or more distinct
non-zero values is an instance label image, each value one object (``auto``); ``true`` takes
every mask as one (a single value is one object, an empty mask none), ``false`` none. Object
metrics score against these where a row has them, else against connected components of the
binary mask (:mod:`segbench.objects`). The embedded particles are stored as instance labels.

Channels: ``data.channels: gray`` reduces colour to luminance (as segbench always did), ``rgb``
replicates grey images to three channels, and null takes what the images are: RGB as soon as
one image carries colour (a mixed folder becomes RGB, grey images replicated), else grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from segbench.classes import IGNORE, ClassSpec, write_classes
from segbench.config import Params
from segbench.data.sources import Item, open_source
from segbench.data.split import SPLITS, assign_folds, assign_splits, group_key
from segbench.datahash import split_hash
from segbench.decode import DecodeError, bit_depth, channels_name, convert_channels, is_colour
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_image, write_csv, write_image, write_json, write_mask
from segbench.objects import relabel, write_instances

MANIFEST_FIELDS = [
    "id",
    "name",
    "group",
    "image",
    "mask",
    "instances",
    "height",
    "width",
    "bit_depth",
    "channels",
    "foreground_fraction",
    "split",
]
CLASS_FIELD = "classes_present"  # several classes: the foreground classes present, e.g. "1 2"
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


def _decode_pair(
    item: Item, spec: ClassSpec, channels: str | None, problems: list[str]
) -> tuple | None:
    """(image, mask, stored image array, stored mask array) for one item, or None after
    recording its problems.

    The image is converted to ``channels`` (None: colour stays RGB, anything else becomes
    grey, e.g. grey saved as RGB); the mask becomes class indices by ``spec``.
    """
    image = mask = stored = stored_mask = None
    try:
        stored = item.read_image()
        image = convert_channels(stored, channels or ("rgb" if is_colour(stored) else "gray"))
    except DecodeError as exc:
        problems.append(f"{item.image_name}: {exc}")
    try:
        stored_mask = item.read_mask(colors=True) if spec.by_color else item.read_mask()
        mask = spec.to_index(stored_mask)
    except DecodeError as exc:
        problems.append(f"{item.mask_name}: {exc}")
    if image is None or mask is None:
        return None
    if image.shape[:2] != mask.shape:
        problems.append(
            f"{item.mask_name}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{item.image_name} is {image.shape[1]}x{image.shape[0]}; masks must match their "
            "image pixel for pixel"
        )
        return None
    return image, mask, stored, stored_mask


def instance_labels(stored_mask: np.ndarray, mode: str) -> np.ndarray | None:
    """The (H, W) int32 instance labels (0 background, 1..N) of a stored mask that
    :meth:`ClassSpec.to_index` accepted, or None where it carries none: ``mode`` ``none``
    never, ``auto`` with two or more distinct non-zero values, ``all`` always."""
    if mode == "none":
        return None
    labels = np.asarray(stored_mask)
    if labels.ndim == 3:  # grey saved as RGB(A): to_index found its channels equal
        labels = labels[..., 0]
    if labels.dtype.kind == "f":  # whole numbers (to_index checked), e.g. from a hub array
        labels = labels.astype(np.int64)
    values = labels[labels != 0]
    if mode == "auto" and (values.size == 0 or (values == values[0]).all()):
        return None
    return relabel(labels)


def fetch(params: Params, out_dir: str | Path) -> dict:
    """Validate the source and write it to ``out_dir`` (atomically); return its summary."""
    cfg = params.data
    spec = cfg.class_spec()
    instance_mode = cfg.instance_mode()
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
            pair = _decode_pair(item, spec, cfg.channels, problems)
            if pair is None or problems:
                continue  # keep checking the rest, but stop writing
            image, mask, stored, stored_mask = pair
            write_image(tmp / "images" / f"{item.id}.png", image)
            write_mask(tmp / "masks" / f"{item.id}.png", mask, spec.num_classes)
            instances = instance_labels(stored_mask, instance_mode)
            if instances is not None:
                (tmp / "instances").mkdir(exist_ok=True)
                write_instances(tmp / "instances" / f"{item.id}.tif", instances)
            labelled = mask[mask != IGNORE]
            counts = np.bincount(labelled.ravel(), minlength=spec.num_classes)
            rows.append(
                {
                    "id": item.id,
                    "name": item.name,
                    "group": group,
                    "image": f"images/{item.id}.png",
                    "mask": f"masks/{item.id}.png",
                    "instances": "" if instances is None else f"instances/{item.id}.tif",
                    "height": image.shape[0],
                    "width": image.shape[1],
                    "bit_depth": bit_depth(image),
                    "channels": channels_name(stored),
                    "colour": is_colour(stored),
                    "foreground_fraction": round(
                        float(counts[1:].sum() / max(1, labelled.size)), 6
                    ),
                    "pixels": counts,
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
        channels = cfg.channels or ("rgb" if any(r["colour"] for r in rows) else "gray")
        if channels == "rgb" and cfg.channels is None:
            _replicate_grey(tmp, [r for r in rows if not r["colour"]])
        present = [[int(c) for c in np.flatnonzero(r["pixels"][1:]) + 1] for r in rows]
        splits = assign_splits(
            [r["id"] for r in rows],
            **cfg.split.fractions(),
            seed=cfg.seed,
            foreground=[r["foreground_fraction"] for r in rows],
            groups=[r["group"] for r in rows],
            strata=cfg.split.strata,
            presence=None if spec.binary else present,
        )
        fields = list(MANIFEST_FIELDS)
        for row, classes in zip(rows, present, strict=True):
            row["split"] = splits[row["id"]]
            if not spec.binary:
                row[CLASS_FIELD] = " ".join(str(c) for c in classes)
        if not spec.binary:
            fields.insert(fields.index("split"), CLASS_FIELD)
        if cfg.split.folds:
            _assign_folds(rows, present, cfg, spec, where=listing.where)
            fields.insert(fields.index("split") + 1, "fold")
        write_csv(tmp / "manifest.csv", rows, fields)
        summary = summarise(rows, source=listing.where, spec=spec, channels=channels)
        summary["instance_masks"] = sum(bool(r["instances"]) for r in rows)
        # the tiles' data_version leaves the test split out; these version what is scored on
        summary |= {f"{s}_data_hash": split_hash(tmp, s) for s in ("test", "val")}
        write_json(tmp / "summary.json", summary)
        write_classes(tmp, spec, channels=channels)
    return summary


def _assign_folds(rows: list[dict], present, cfg, spec, *, where: str) -> None:
    """k-fold cross-validation (``data.split.folds``): the train and val images dealt into
    folds (:func:`segbench.data.split.assign_folds`); fold 0 becomes the validation split and
    the others train. Each row gets ``fold`` (empty for the test images)."""
    k = cfg.split.folds
    pool = [(r, p) for r, p in zip(rows, present, strict=True) if r["split"] != "test"]
    try:
        folds = assign_folds(
            [r["id"] for r, _ in pool],
            k,
            seed=cfg.seed,
            foreground=[r["foreground_fraction"] for r, _ in pool],
            groups=[r["group"] for r, _ in pool],
            strata=cfg.split.strata,
            presence=None if spec.binary else [p for _, p in pool],
        )
    except ValueError as exc:
        raise SegbenchError(
            f"data.split.folds: {exc} in {where}; lower data.split.folds or use more images"
        ) from None
    for row in rows:
        fold = folds.get(row["id"])
        row["fold"] = "" if fold is None else fold
        if fold is not None:
            row["split"] = "val" if fold == 0 else "train"


def _replicate_grey(folder: Path, rows: list[dict]) -> None:
    """Rewrite the grey images of a mixed folder as RGB (grey replicated to three channels),
    so every image of the data has the channels the models take."""
    for row in tqdm(rows, desc="fetch: grey -> rgb", unit="img", disable=not rows or None):
        path = folder / row["image"]
        write_image(path, read_image(path, "rgb"))


def _counts(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def summarise(
    rows: list[dict], *, source: str = "", spec: ClassSpec | None = None, channels: str = "gray"
) -> dict:
    """Counts, sizes, bit depths, channels, foreground fractions and empty masks, per split;
    with ``spec`` and rows holding ``pixels`` (per-class counts), each class's pixel share and
    the images (per split) that hold it."""
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
        **_class_summary(rows, spec, channels),
    }


def _class_summary(rows: list[dict], spec: ClassSpec | None, channels: str) -> dict:
    if spec is None or not rows or "pixels" not in rows[0]:
        return {}
    pixels = np.sum([r["pixels"] for r in rows], axis=0)
    total = max(1, int(pixels.sum()))
    classes = [
        {
            "name": name,
            "pixel_share": round(float(pixels[c]) / total, 6),
            "images": sum(int(r["pixels"][c] > 0) for r in rows),
            "images_by_split": {
                s: sum(int(r["pixels"][c] > 0) for r in rows if r.get("split") == s) for s in SPLITS
            },
        }
        for c, name in enumerate(spec.names)
    ]
    return {"input_channels": channels, "classes": classes}


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
            *(
                [f"  input: {summary['input_channels']}; classes (pixel share, images): "]
                + [
                    f"    {c['name']}: {100 * c['pixel_share']:.2f}%, {c['images']} "
                    f"{c['images_by_split']}"
                    for c in summary["classes"]
                ]
                if "classes" in summary
                else []
            ),
            *(
                [f"  instance labels (object references): {summary['instance_masks']} images"]
                if summary.get("instance_masks")
                else []
            ),
        ]
    )
