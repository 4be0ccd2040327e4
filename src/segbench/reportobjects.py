"""The report's "Objects" section (two classes: :mod:`segbench.objects`) and its statement of
test-time augmentation.

:func:`object_sections` reads, for every evaluated entry, ``metrics.json`` (object F1, panoptic
quality, count error, with their intervals, and how objects were found and matched), the object
counts of ``per_image.csv`` and the object sizes of ``objects.csv``; it draws the size
histograms and the count scatter into the report's figure directory and returns ``(plots,
context)``: the figure paths by key and what the templates print. The section is absent
(``context["objects"]`` is None) when no entry has object metrics: several classes, or
evaluations written before objects were measured.

Every sentence describes the numbers: no paired test is run on object metrics, so nothing
here says one model is better than another; a count bias is called over- or under-counting
only when its interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import numpy as np

from segbench import objectfigures
from segbench.comparison import fmt
from segbench.errors import SegbenchError
from segbench.evalmetrics import PER_IMAGE_FILE, EvalMetrics, evaluate_stage, read_per_image
from segbench.evalobjects import OBJECTS_FILE
from segbench.io import read_csv
from segbench.tta import TTA_DESCRIPTIONS

SOURCES = ("reference", "prediction")
PER_IMAGE_COUNTS = ("id", "n_ref_objects", "n_pred_objects")  # per_image.csv's object counts

# (key, title) of the objects table's columns, in order; object_cell knows how to show each.
OBJECT_COLUMNS = [
    ("model", "model"),
    ("obj_f1", "object F1 [95% CI] (n)"),
    ("obj_pr", "object precision / recall"),
    ("pq", "PQ [95% CI]"),
    ("sq_rq", "SQ, RQ"),
    ("count_mae", "mean abs. count error [95% CI]"),
    ("count_bias", "count bias [95% CI]"),
    ("totals", "objects predicted / reference"),
    ("notes", "notes"),
]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _interval(row: dict, key: str, spec: str) -> str:
    """``row[key]`` with its ``_ci_low``/``_ci_high`` interval, each formatted by ``spec``;
    ``n/a`` where the figure is undefined, no interval where it is (one image)."""
    value = row.get(key)
    if _missing(value):
        return "n/a"
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    ci = "" if _missing(low) or _missing(high) else f" [{low:{spec}}, {high:{spec}}]"
    return f"{value:{spec}}{ci}"


def _plain(value, spec: str = ".3f") -> str:
    return "n/a" if _missing(value) else f"{value:{spec}}"


def object_cell(key: str, row: dict) -> str:
    """One cell of the objects table as text; ``row``: an entry's metrics (``model`` added)."""
    if key == "model":
        return row["model"]
    if key == "notes":  # the comparison table's words for oracle, random-init ... rows
        return fmt("notes", row)
    if key == "obj_f1":
        n = row.get("obj_f1_n")
        return _interval(row, "obj_f1", ".3f") + ("" if n is None else f" (n={n})")
    if key == "obj_pr":
        return f"{_plain(row.get('obj_precision'))} / {_plain(row.get('obj_recall'))}"
    if key == "pq":
        return _interval(row, "pq", ".3f")
    if key == "sq_rq":
        return f"{_plain(row.get('sq'))}, {_plain(row.get('rq'))}"
    if key == "count_mae":
        return _interval(row, "count_mae", ".2f")
    if key == "count_bias":
        return _interval(row, "count_bias", "+.2f")
    if key == "totals":
        pred, ref = row.get("n_pred_objects"), row.get("n_ref_objects")
        return f"{'n/a' if pred is None else pred} / {'n/a' if ref is None else ref}"
    raise KeyError(key)


def object_markdown(rows: list[dict]) -> str:
    """The objects table as a GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(t for _, t in OBJECT_COLUMNS) + " |",
        "|" + "---|" * len(OBJECT_COLUMNS),
    ]
    lines += ["| " + " | ".join(object_cell(k, r) for k, _ in OBJECT_COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def has_objects(row: dict) -> bool:
    """Whether an entry's metrics carry object metrics (two classes, evaluated since objects
    were measured)."""
    return row.get("objects_reference") is not None


def settings_text(rows: list[dict]) -> str:
    """How objects were found and matched, once for the rows that share it (by reference
    source, split and IoU threshold)."""
    groups: dict[tuple, list[str]] = {}
    for row in rows:
        key = (
            row["objects_reference"],
            row["objects_split"],
            row["objects_iou"],
            row.get("objects_min_distance"),
        )
        groups.setdefault(key, []).append(row["model"])
    parts = []
    for (reference, split, iou, spacing), names in groups.items():
        found = "8-connected components of the predicted mask"
        if split == "watershed":
            apart = f", at least {spacing} px apart" if spacing else ""
            found += (
                ", touching objects split by a distance-transform watershed (one marker per "
                f"peak of the distance to the background{apart})"
            )
        if reference == "instances":
            ref = (
                "the data's instance labels (each labelled object of the stored masks; the "
                "connected components of the mask for an image without them)"
            )
        else:
            ref = "the 8-connected components of the reference mask" + (
                ", split by the same watershed" if split == "watershed" else ""
            )
        text = (
            f"Predicted objects: the {found}. Reference objects: {ref}. A predicted and a "
            f"reference object match when their IoU exceeds {iou:g} (above 0.5 an object can "
            "match at most one other)."
        )
        parts.append(text if len(groups) == 1 else f"{', '.join(names)}: {text}")
    return " ".join(parts)


def count_notes(rows: list[dict]) -> list[str]:
    """A sentence for each row whose count-bias interval excludes 0 (more or fewer objects
    predicted than the reference holds, per image), or one saying no interval does."""
    out, tested = [], 0
    for row in rows:
        low, high = row.get("count_bias_ci_low"), row.get("count_bias_ci_high")
        if _missing(low) or _missing(high):
            continue
        tested += 1
        if low > 0 or high < 0:
            more = "more" if low > 0 else "fewer"
            out.append(
                f"{row['model']} predicts {more} objects than the reference holds: "
                f"{object_cell('count_bias', row)} per image, an interval "
                f"{'above' if low > 0 else 'below'} 0."
            )
    if tested and not out:
        out.append("No model's count-bias interval excludes 0.")
    return out


def read_objects(path: Path, *, stage: str) -> dict[str, np.ndarray]:
    """``objects.csv``'s equivalent diameters (px), ``{"reference": (N,) float64,
    "prediction": (M,) float64}``; a missing or damaged file is a :class:`SegbenchError` that
    names it and says to re-run ``stage``."""
    rerun = f"re-run `dvc repro {stage}`"
    if not path.is_file():
        raise SegbenchError(f"{path}: no such file; {rerun}")
    sizes: dict[str, list[float]] = {s: [] for s in SOURCES}
    for line, row in enumerate(read_csv(path), start=2):  # line 1 is the header
        try:
            diameter = float(row["diameter"])
            sizes[row["source"]].append(diameter)
        except (KeyError, TypeError, ValueError):
            diameter = math.nan
        if not math.isfinite(diameter) or diameter <= 0:
            raise SegbenchError(
                f"{path}, line {line}: not an object (a source of {' or '.join(SOURCES)} and a "
                f"positive diameter are expected, found {row.get('source')!r}, "
                f"{row.get('diameter')!r}); {rerun}"
            )
    return {s: np.asarray(v, dtype=np.float64) for s, v in sizes.items()}


def _counts(per_image: list[dict], path: Path, *, stage: str) -> list[tuple[int, int]]:
    """(reference, predicted) object counts per test image; a count that is not a whole
    number is a :class:`SegbenchError` naming ``path`` and ``stage``."""
    out = []
    for row in per_image:
        ref, pred = row["n_ref_objects"], row["n_pred_objects"]
        if not all(math.isfinite(v) and v >= 0 and v == int(v) for v in (ref, pred)):
            raise SegbenchError(
                f"{path}: image {row['id']} has object counts {ref!r}, {pred!r} (whole "
                f"numbers are expected); re-run `dvc repro {stage}`"
            )
        out.append((int(ref), int(pred)))
    return out


def object_sections(
    names: list[str], eval_dir: Path, fig_dir: Path, *, ensembles: Collection[str] = ()
) -> tuple[dict[str, Path], dict]:
    """Figures and template context for the objects of the entries ``names`` (in the report's
    order; those in ``ensembles`` are ensembles), evaluated in ``eval_dir/<name>``.

    Context ``objects``: None when no entry has object metrics, else ``{"rows": [metrics with
    model], "cells": [[cell text per column]], "columns": [titles], "table_md", "settings":
    how objects were found and matched, "count_notes": [sentences], "without": [entries
    evaluated without object metrics]}``. Plots: ``object_sizes`` (size histograms) and
    ``object_counts`` (count scatter).
    """
    eval_dir = Path(eval_dir)
    stages = {n: evaluate_stage(n, ensembles) for n in names}
    metrics = [
        {"model": n, **EvalMetrics.read(eval_dir / n, stage=stages[n]).model_dump()} for n in names
    ]
    rows = [m for m in metrics if has_objects(m)]
    if not rows:
        return {}, {"objects": None}
    sizes, counts = {}, {}
    for row in rows:
        name = row["model"]
        found = read_objects(eval_dir / name / OBJECTS_FILE, stage=stages[name])
        sizes[name] = (found["reference"], found["prediction"])
        per_image = read_per_image(
            eval_dir / name / PER_IMAGE_FILE, stage=stages[name], columns=PER_IMAGE_COUNTS
        )
        counts[name] = _counts(per_image, eval_dir / name / PER_IMAGE_FILE, stage=stages[name])
    plots = {
        "object_sizes": objectfigures.size_histograms(sizes, Path(fig_dir) / "object_sizes.png"),
        "object_counts": objectfigures.count_scatter(counts, Path(fig_dir) / "object_counts.png"),
    }
    context = {
        "rows": rows,
        "cells": [[object_cell(k, r) for k, _ in OBJECT_COLUMNS] for r in rows],
        "columns": [title for _, title in OBJECT_COLUMNS],
        "table_md": object_markdown(rows),
        "settings": settings_text(rows),
        "count_notes": count_notes(rows),
        "without": [m["model"] for m in metrics if not has_objects(m)],
    }
    return plots, {"objects": context}


def tta_note(rows: list[dict]) -> str:
    """Test-time augmentation (``metrics.json``'s ``tta``) in words, after a "Test-time
    augmentation:" the templates write: once when every row used the same, else per setting
    with the rows that used it."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row.get("tta") or "none", []).append(row["model"])
    if len(groups) <= 1:
        return f"{TTA_DESCRIPTIONS[next(iter(groups), 'none')]}, for every model."
    return (
        "; ".join(f"{', '.join(names)}: {TTA_DESCRIPTIONS[t]}" for t, names in groups.items()) + "."
    )
