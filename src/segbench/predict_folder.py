"""``predict_folder(model_dir, input_dir, output_dir)``: segment every image of a folder.

The function behind ``segbench predict MODEL_DIR INPUT_DIR OUTPUT_DIR``. Output layout::

    <output_dir>/<stem>.png            the mask, (H, W) of its image, uint8 PNG: {0, 255} for a
                                       two-class model, else class indices (0 = background)
    <output_dir>/overlays/<stem>.png   with ``overlays``: (H, W, 3) uint8 RGB PNG, the image
                                       (grey, or in colour) with each predicted class tinted in
                                       its colour (the model card's ``class_colors``; red for
                                       two classes)

An image whose channels differ from the model's (grey for an RGB model, or colour for a grey
one) is converted, and the run says so once (:meth:`segbench.predict.Predictor.as_input`).

Everything that would stop the whole run (a bad folder, an incomplete or oracle model, two images
that would write the same mask) is checked before ``output_dir`` is created. An image that cannot
be read or predicted is skipped with a warning and reported in the returned summary, so one bad
file does not cost the masks of all the others.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from segbench.decode import IMAGE_SUFFIXES
from segbench.errors import SegbenchError
from segbench.io import writable_dir

OVERLAY_COLOR = np.array([255.0, 40.0, 40.0], dtype=np.float32)  # red: stands out on grey
OVERLAY_ALPHA = 0.45


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
) -> dict:
    """Write one mask (and optionally one overlay) per image of ``input_dir``; return a summary.

    Images are the files directly in ``input_dir`` whose suffix is one of ``IMAGE_SUFFIXES``
    (any case), taken in name order; other files are ignored. Each is read as stored
    (:func:`segbench.io.read_image`), predicted at full size, and labelled by
    :func:`segbench.postprocess.to_labels` (two classes: ``proba >= threshold``; several: the
    most probable class; then components under ``min_area`` pixels removed). ``classes``, when
    given, are the class names the caller expects the model to tell apart: a model trained for
    others is refused before anything is written.

    Returns ``{"written": int, "skipped": [path, ...], "reasons": {path: why}, "ignored":
    [file name, ...], "output_dir": str, "overlays_dir": str | None}``. Raises
    :class:`SegbenchError`, before ``output_dir`` is created, for a bad ``input_dir``, bad
    options, an incomplete model directory, an oracle model or two images sharing a stem.
    """
    from tqdm import tqdm

    from segbench.postprocess import to_labels

    _check_options(threshold, min_area, overlap, batch_size)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    images, ignored = list_images(input_dir)
    _check_output_dir(input_dir, output_dir)
    overlay_dir = output_dir / "overlays" if overlays else None
    # Where the masks go is checked before the model loads (seconds to minutes); a refused
    # model then leaves no new folder behind.
    with writable_dir(overlay_dir or output_dir):
        predictor = _load(model_dir, overlap=overlap, batch_size=batch_size, blend=blend)
        card = predictor.card
        if classes is not None and list(classes) != card.classes:
            raise SegbenchError(
                f"{model_dir}: trained for {card.num_classes} classes "
                f"({', '.join(card.classes)}), asked for {len(classes)} ({', '.join(classes)}); "
                "use a model trained on those classes, or drop --classes"
            )
    colors = np.array(card.class_colors or [], dtype=np.float32)
    written, reasons = 0, {}
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
        written += 1
    return {
        "written": written,
        "skipped": list(reasons),
        "reasons": reasons,
        "ignored": [p.name for p in ignored],
        "output_dir": str(output_dir),
        "overlays_dir": str(overlay_dir) if overlay_dir is not None else None,
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


def _load(model_dir, *, overlap: float, batch_size: int, blend: str):
    from segbench.inference import BLENDS
    from segbench.predict import load_predictor

    if blend not in BLENDS:
        raise SegbenchError(f"--blend must be one of {', '.join(BLENDS)}; got {blend!r}")
    predictor = load_predictor(model_dir, overlap=overlap, batch_size=batch_size, blend=blend)
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
    """Write a mask ({0, 255}, or class indices) or an RGB overlay under a temporary name in the
    same folder, then rename it: a run killed mid-write leaves no truncated PNG under the final
    name."""
    import cv2

    from segbench.io import write_mask

    # The temporary name ends in .png because OpenCV picks the encoder from the suffix.
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.png")
    try:
        if rgb:
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(array[..., ::-1])):  # cv2: BGR
                raise SegbenchError(
                    f"{path}: could not write the overlay (check the folder's free space and "
                    "permissions)"
                )
        else:
            write_mask(tmp, array, num_classes)
        os.replace(tmp, path)
    except OSError as exc:  # the folder went away, filled up or turned read-only mid-run
        raise SegbenchError(f"{path}: could not write it ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):  # a failed clean-up must not hide the reason
            tmp.unlink(missing_ok=True)
