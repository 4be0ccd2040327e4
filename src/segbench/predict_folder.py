"""``predict_folder(model_dir, input_dir, output_dir)``: segment every image of a folder.

The function behind ``segbench predict MODEL_DIR INPUT_DIR OUTPUT_DIR``. Output layout::

    <output_dir>/<stem>.png            the mask, (H, W) of its image, uint8 PNG: {0, 255} for a
                                       two-class model, else class indices (0 = background)
    <output_dir>/overlays/<stem>.png   with ``overlays``: (H, W, 3) uint8 RGB PNG, the image
                                       (grey, or in colour) with each predicted class tinted in
                                       its colour (the model card's ``class_colors``; red for
                                       two classes)
    <output_dir>/objects/<stem>.tif    with ``objects`` (two-class models): (H, W) label image,
                                       0 = background, 1..N the objects (uint16, or uint32
                                       past 65535 objects; :mod:`segbench.objects`)
    <output_dir>/objects/<stem>.csv    one row per object: id (its label), area (px), diameter
                                       (equivalent circle, px), centroid_y/x, bbox_y0/x0/y1/x1
                                       (half-open, px)
    <output_dir>/objects/summary.csv   one row per image: count, mean and median area and
                                       diameter

An image whose channels differ from the model's (grey for an RGB model, or colour for a grey
one) is converted, and the run says so once (:meth:`segbench.predict.Predictor.as_input`).

Everything that would stop the whole run (a bad folder, an incomplete or oracle model, two images
that would write the same mask) is checked before ``output_dir`` is created. An image that cannot
be read or predicted is skipped with a warning and reported in the returned summary, so one bad
file does not cost the masks of all the others.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

import numpy as np

from segbench.decode import IMAGE_SUFFIXES
from segbench.errors import SegbenchError
from segbench.io import writable_dir, write_csv
from segbench.modelcard import ModelCard

OVERLAY_COLOR = np.array([255.0, 40.0, 40.0], dtype=np.float32)  # red: stands out on grey
OVERLAY_ALPHA = 0.45
SUMMARY_FIELDS = [
    "image",
    "count",
    "area_mean",
    "area_median",
    "diameter_mean",
    "diameter_median",
]


def predict_folder(
    model_dir: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    threshold: float = 0.5,
    min_area: int = 0,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    overlays: bool = False,
    classes: list[str] | None = None,
    tta: str = "none",
    objects: bool = False,
    split: str = "none",
    min_distance: int = 5,
) -> dict:
    """Write one mask (and optionally one overlay) per image of ``input_dir``; return a summary.

    Images are the files directly in ``input_dir`` whose suffix is one of ``IMAGE_SUFFIXES``
    (any case), taken in name order; other files are ignored. Each is read as stored
    (:func:`segbench.io.read_image`), predicted at full size, and labelled by
    :func:`segbench.postprocess.to_labels` (two classes: ``proba >= threshold``; several: the
    most probable class; then components under ``min_area`` pixels removed). ``classes``, when
    given, are the class names the caller expects the model to tell apart: a model trained for
    others is refused before anything is written. ``tta`` averages the probabilities over
    flipped or rotated views (:mod:`segbench.tta`). ``objects`` (two-class models only) also
    writes each mask's objects: connected components, split at their necks by a
    distance-transform watershed when ``split`` is ``watershed`` (centres at least
    ``min_distance`` px apart).

    Returns ``{"written": int, "skipped": [path, ...], "reasons": {path: why}, "ignored":
    [file name, ...], "output_dir": str, "overlays_dir": str | None}``. Raises
    :class:`SegbenchError`, before ``output_dir`` is created, for a bad ``input_dir``, bad
    options, an incomplete model directory, an oracle model or two images sharing a stem.
    """
    from tqdm import tqdm

    from segbench.postprocess import to_labels

    _check_options(threshold, min_area, overlap, batch_size)
    _check_objects(split, min_distance)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    images, ignored = list_images(input_dir)
    _check_output_dir(input_dir, output_dir)
    overlay_dir = output_dir / "overlays" if overlays else None
    object_dir = output_dir / "objects" if objects else None
    # Where the masks go is checked before the model loads (seconds to minutes); a refused
    # model then leaves no new folder behind.
    with contextlib.ExitStack() as stack:
        for folder in {overlay_dir or output_dir, object_dir or output_dir}:
            stack.enter_context(writable_dir(folder))
        _check_card(ModelCard.read(model_dir), model_dir, classes=classes, objects=objects)
        predictor = _load(model_dir, overlap=overlap, batch_size=batch_size, blend=blend, tta=tta)
        card = predictor.card
    colors = np.array(card.class_colors or [], dtype=np.float32)
    written, reasons, counts = 0, {}, []
    for path in tqdm(images, desc="predict", unit="img"):
        try:
            image = _read(path)
            proba = predictor.predict_proba(image, image_id=path.name)
            mask = to_labels(proba, threshold, min_area)
        except SegbenchError as exc:
            reasons[str(path)] = str(exc).removeprefix(f"{path}: ")  # the path is said once
            # tqdm.write keeps the warning from being drawn over by the progress bar.
            tqdm.write(f"warning: skipped {path}: {reasons[str(path)]}", file=sys.stderr)
            continue
        _write_atomic(output_dir / f"{path.stem}.png", mask, num_classes=card.num_classes)
        if overlay_dir is not None:
            tinted = overlay(image, mask, colors if card.num_classes > 2 else None)
            _write_atomic(overlay_dir / f"{path.stem}.png", tinted, rgb=True)
        if object_dir is not None:
            counts.append(_write_objects(object_dir, path.stem, mask, split, min_distance))
        written += 1
    if object_dir is not None:
        _atomic(object_dir / "summary.csv", lambda tmp: write_csv(tmp, counts, SUMMARY_FIELDS))
    return {
        "written": written,
        "skipped": list(reasons),
        "reasons": reasons,
        "ignored": [p.name for p in ignored],
        "output_dir": str(output_dir),
        "overlays_dir": str(overlay_dir) if overlay_dir is not None else None,
        "objects_dir": str(object_dir) if object_dir is not None else None,
        "objects": int(sum(c["count"] for c in counts)),
    }


def list_images(input_dir: Path) -> tuple[list[Path], list[Path]]:
    """``(images, ignored)``: the image files directly in ``input_dir`` sorted by name, and its
    other files; a SegbenchError if it is not a directory, holds no image, or two images share
    a stem (their masks would overwrite each other)."""
    accepted = "/".join(s[1:] for s in IMAGE_SUFFIXES)
    if not input_dir.is_dir():
        what = "not a directory" if input_dir.exists() else "no such directory"
        raise SegbenchError(f"{input_dir}: {what}; give a folder of {accepted} images")
    files = sorted(p for p in input_dir.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    ignored = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        others = f" (it holds {len(ignored)} other files)" if ignored else " (it is empty)"
        raise SegbenchError(
            f"{input_dir}: no image files{others}; accepted suffixes: {accepted} (any case)"
        )
    by_stem: dict[str, Path] = {}
    for path in images:
        if path.stem in by_stem:
            raise SegbenchError(
                f"{by_stem[path.stem]} and {path} would both be written as {path.stem}.png; "
                "rename or move one of them"
            )
        by_stem[path.stem] = path
    return images, ignored


def overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
    """(H, W[, 3]) uint8/uint16 image + (H, W) mask -> (H, W, 3) uint8 RGB: the image (grey, or
    in colour), stretched over its 1st-99th percentiles so that dim 16-bit data is visible,
    with the foreground blended towards red (``colors`` None: a two-class mask) or each class
    k > 0 towards ``colors[k]`` ((C, 3) RGB; background left as it is)."""
    from segbench.config import NormalizeConfig
    from segbench.data.normalize import intensity_range, to_unit

    stretch = NormalizeConfig(mode="percentile", percentiles=(1.0, 99.0))
    unit = to_unit(image, *intensity_range(image, stretch)) * 255.0
    rgb = unit if unit.ndim == 3 else np.repeat(unit[..., None], 3, axis=-1)
    if colors is None:
        tint = {1: OVERLAY_COLOR}
        mask = np.asarray(mask) > 0
    else:
        tint = {k: colors[k] for k in range(1, len(colors))}
    for k, color in tint.items():
        where = mask == k if colors is not None else mask
        rgb[where] = (1.0 - OVERLAY_ALPHA) * rgb[where] + OVERLAY_ALPHA * color
    return np.rint(rgb).astype(np.uint8)


def _check_options(threshold: float, min_area: int, overlap: float, batch_size: int) -> None:
    # The same bounds params.yaml puts on evaluate's settings.
    if not 0 < threshold < 1:
        raise SegbenchError(f"--threshold must be between 0 and 1 (exclusive); got {threshold}")
    if min_area < 0:
        raise SegbenchError(f"--min-area must be 0 or more pixels; got {min_area}")
    if not 0 <= overlap < 1:
        raise SegbenchError(f"--overlap must be in [0, 1); got {overlap}")
    if batch_size < 1:
        raise SegbenchError(f"--batch-size must be 1 or more; got {batch_size}")


def _check_output_dir(input_dir: Path, output_dir: Path) -> None:
    # Masks are PNGs named after their image: in the input folder they would replace its PNGs.
    if output_dir.resolve() == input_dir.resolve():
        raise SegbenchError(
            f"{output_dir}: the output folder is the input folder, and masks would overwrite "
            "its PNG images; choose another output folder"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise SegbenchError(f"{output_dir}: exists and is not a directory")


def _check_card(card, model_dir, *, classes: list[str] | None, objects: bool) -> None:
    """Refuse, before the model loads, what the model cannot do: other classes than the
    caller expects, or objects of a model of several classes."""
    if classes is not None and list(classes) != card.classes:
        raise SegbenchError(
            f"{model_dir}: trained for {card.num_classes} classes "
            f"({', '.join(card.classes)}), asked for {len(classes)} ({', '.join(classes)}); "
            "use a model trained on those classes, or drop --classes"
        )
    if objects and card.num_classes > 2:
        raise SegbenchError(
            f"{model_dir}: --objects counts the objects of a two-class model, and this one "
            f"tells {card.num_classes} classes apart ({', '.join(card.classes)}); use a "
            "two-class model, or drop --objects"
        )


def _check_objects(split: str, min_distance: int) -> None:
    from segbench.objects import SPLITS

    if split not in SPLITS:
        raise SegbenchError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    if min_distance < 1:
        raise SegbenchError(f"--min-distance must be 1 or more pixels; got {min_distance}")


def _write_objects(out: Path, stem: str, mask: np.ndarray, split: str, min_distance: int):
    """``out/<stem>.tif`` (labels) and ``out/<stem>.csv`` (one row per object) for one (H, W)
    {0, 1} mask; returns the image's summary.csv row."""
    from segbench.objects import OBJECT_TABLE_FIELDS, label_objects, object_table, write_instances

    labels = label_objects(mask, split=split, min_distance=min_distance)
    table = object_table(labels)
    _atomic(out / f"{stem}.tif", lambda tmp: write_instances(tmp, labels))
    _atomic(out / f"{stem}.csv", lambda tmp: write_csv(tmp, table, OBJECT_TABLE_FIELDS))
    areas = np.array([r["area"] for r in table], dtype=float)
    diameters = np.array([r["diameter"] for r in table], dtype=float)

    def stat(fn, x):
        return float(fn(x)) if x.size else math.nan

    return {
        "image": stem,
        "count": len(table),
        "area_mean": stat(np.mean, areas),
        "area_median": stat(np.median, areas),
        "diameter_mean": stat(np.mean, diameters),
        "diameter_median": stat(np.median, diameters),
    }


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename: a killed run leaves no
    truncated file under the final name. The temporary name keeps the suffix (OpenCV and
    tifffile pick the format from it)."""
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # the folder went away, filled up or turned read-only mid-run
        raise SegbenchError(f"{path}: could not write it ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):  # a failed clean-up must not hide the reason
            tmp.unlink(missing_ok=True)


def _load(model_dir, *, overlap: float, batch_size: int, blend: str, tta: str = "none"):
    from segbench.inference import BLENDS
    from segbench.predict import load_predictor

    if blend not in BLENDS:
        raise SegbenchError(f"--blend must be one of {', '.join(BLENDS)}; got {blend!r}")
    from segbench.tta import TTA_MODES

    if tta not in TTA_MODES:
        raise SegbenchError(f"--tta must be one of {', '.join(TTA_MODES)}; got {tta!r}")
    predictor = load_predictor(
        model_dir, overlap=overlap, batch_size=batch_size, blend=blend, tta=tta
    )
    if predictor.oracle:
        raise SegbenchError(
            f"{model_dir} takes its prompts from reference masks (oracle prompts), and "
            "unlabelled images have none; use a model without them (SAM: prompt auto or none)"
        )
    return predictor


def _read(path: Path) -> np.ndarray:
    from segbench.io import read_image

    image = read_image(path)
    if image.size == 0:  # decodes, but there is nothing to segment
        raise SegbenchError(f"{path}: image has no pixels (shape {image.shape})")
    return image


def _write_atomic(
    path: Path, array: np.ndarray, *, rgb: bool = False, num_classes: int = 2
) -> None:
    """Write a mask ({0, 255}, or class indices) or an RGB overlay as a PNG, through
    :func:`_atomic`: a run killed mid-write leaves no truncated PNG under the final name."""
    import cv2

    from segbench.io import write_mask

    def write(tmp: Path) -> None:
        if not rgb:
            write_mask(tmp, array, num_classes)
        elif not cv2.imwrite(str(tmp), np.ascontiguousarray(array[..., ::-1])):  # cv2: BGR
            raise SegbenchError(
                f"{path}: could not write the overlay (check the folder's free space and "
                "permissions)"
            )

    _atomic(path, write)
