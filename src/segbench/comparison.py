"""The comparison table: one row per model, its uncertainty, its cost, and what qualifies it.

A row is a model's ``eval/<m>/metrics.json`` (test metrics, with training's cost and the notes
that qualify them). Rows are ranked on one per-image criterion, ``score`` (Dice over all
images with two classes, where an empty reference scores 1 for an empty prediction and 0 for
any false positive; mIoU with several: :mod:`segbench.metrics`), averaged over a model's seeds
(``train.repeats``). The NaN-rule Dice (empty references left out) is shown beside it.

The *reference* row is chosen before any test figure is looked at: the model with the best
validation ``score`` among those that see the image alone (no oracle prompts). Every other row
is compared with it on the per-image test score: the paired difference (mean with a paired
BCa bootstrap interval, Hodges-Lehmann), the Wilcoxon signed-rank test with Holm's correction
over the rows, and "better"/"worse" from the same signed-rank statistic (:mod:`segbench.stats`).
An ensemble whose weight search gave one member all the weight is that member: it has no row
(:func:`collapsed_ensembles`). Entries that could not run on the data
(:func:`segbench.evalmetrics.write_skipped`) have no row: :func:`skipped_entries` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

from segbench.evalmetrics import (
    PER_IMAGE_FILE,
    EvalMetrics,
    evaluate_stage,
    read_per_image,
    read_skipped,
)
from segbench.stats import compare_to_reference

# The primary metric's name in the report's words.
PRIMARY_TITLES = {"dice": "Dice", "miou": "mIoU"}
# The ranking criterion's name in the report's words, by primary metric.
SCORE_TITLES = {"dice": "Dice (all images)", "miou": "mIoU"}
RANK = "score"  # the key rows are ranked, tested and plotted on

# (key, title) of the main table's columns, in order (accuracy, its certainty, and cost);
# _fmt knows how to show each. DETAIL_COLUMNS: every other metric, in a second table.
COLUMNS = [
    ("model", "model"),
    ("score", "Dice, all images [95% CI]"),
    ("dice_point", "Dice, empty refs left out"),
    ("val_score", "val. score"),
    ("diff", "Δ vs reference [95% CI]"),
    ("verdict", "vs reference (Holm p)"),
    ("pairs", "pairs"),
    ("seeds", "seed spread"),
    ("threshold", "threshold"),
    ("params_total", "params"),
    ("train_seconds", "train s"),
    ("images_per_second", "img/s"),
    ("notes", "notes"),
]
DETAIL_COLUMNS = [
    ("model", "model"),
    ("n_images", "test images"),
    ("hl_diff", "HL Δ vs reference"),
    ("params_trainable", "trained params"),
    ("devices", "train device"),
    ("dice", "Dice, empty refs left out [95% CI]"),
    ("iou", "IoU"),
    ("miou", "mIoU"),
    ("mpa", "mPA"),
    ("pixel_accuracy", "pixel acc."),
    ("precision", "precision"),
    ("recall", "recall"),
    ("empty_fpr", "FP rate on empty refs"),
    ("train_peak_memory_mb", "train peak MiB"),
    ("peak_memory_mb", "inference peak MiB"),
]
# Several classes: mIoU (with its interval) leads; Dice, IoU, precision and recall are means
# over the foreground classes present; there is no threshold (each pixel's argmax class).
MULTICLASS_COLUMNS = [
    ("score", "mIoU [95% CI]") if key == "score" else (key, title)
    for key, title in COLUMNS
    if key not in ("threshold", "dice_point")
]
MULTICLASS_DETAIL_COLUMNS = [
    ("model", "model"),
    ("n_images", "test images"),
    ("hl_diff", "HL Δ vs reference"),
    ("params_trainable", "trained params"),
    ("devices", "train device"),
    ("miou", "mIoU [95% CI]"),
    ("mpa", "mPA"),
    ("pixel_accuracy", "pixel acc."),
    ("dice", "Dice (fg. classes) [95% CI]"),
    ("iou", "IoU (fg. classes)"),
    ("precision", "precision (fg.)"),
    ("recall", "recall (fg.)"),
    ("empty_fpr", "FP rate on refs with no fg."),
    ("train_peak_memory_mb", "train peak MiB"),
    ("peak_memory_mb", "inference peak MiB"),
]
# The columns of the U-Net / SegFormer / UFormer study's table, for every row.
STUDY_COLUMNS = [
    ("model", "model"),
    ("test_loss", "test loss"),
    ("miou", "mIoU"),
    ("mpa", "mPA"),
    ("devices", "devices"),
    ("train_epochs", "epochs"),
    ("train_batch_size", "batch"),
    ("train_time", "training time"),
]
MEANS = ("iou", "miou", "mpa", "pixel_accuracy", "precision", "recall")
# What `segbench summary` (and `make run`) prints in a terminal: the table's essentials.
TERMINAL_KEYS = (
    "model",
    "score",
    "dice_point",
    "val_score",
    "diff",
    "verdict",
    "iou",
    "n_images",
    "threshold",
    "params_total",
    "train_seconds",
    "images_per_second",
    "notes",
)


def primary_metric(rows: list[dict]) -> str:
    """``miou`` when the rows are of several classes (they carry ``num_classes``), else
    ``dice``: the metric rows are ranked, tested and plotted on."""
    return "miou" if any(r.get("num_classes") for r in rows) else "dice"


def table_columns(metric: str = "dice") -> list[tuple[str, str]]:
    """The main table's columns for the primary ``metric``."""
    return COLUMNS if metric == "dice" else MULTICLASS_COLUMNS


def detail_columns(metric: str = "dice") -> list[tuple[str, str]]:
    """The second table's columns (every other metric) for the primary ``metric``."""
    return DETAIL_COLUMNS if metric == "dice" else MULTICLASS_DETAIL_COLUMNS


# Flags an evaluated model's metrics.json carries (segbench.config.models.Entry.notes), with the
# words the table uses and the banner that explains them.
NOTES = {
    "oracle_prompts": (
        "oracle prompts",
        "Oracle prompts. Rows noted 'oracle prompts' take SAM's prompts (points or boxes) from "
        "the ground-truth masks, as a perfect user would place them. They measure SAM given "
        "perfect guidance, not a model that segments the image on its own, and are not a fair "
        "comparison with the other rows.",
    ),
    "random_init": (
        "random-init SAM",
        "Random-initialised SAM. Rows noted 'random-init SAM' were built without a SAM "
        "checkpoint: their weights are random, so their numbers say nothing about Segment "
        "Anything. Point models.<name>.checkpoint at an official sam_vit_b/l/h file (README, "
        "'Segment Anything') for numbers that do.",
    ),
    "scratch_decoder": (
        "decoder from scratch",
        "Mask decoder trained from scratch. Rows noted 'decoder from scratch' re-initialised "
        "SAM's mask decoder and trained it on this data alone (decoder_init: scratch, as a "
        "reference study did); only the image and prompt encoders are the checkpoint's. They "
        "measure what a decoder learns from these images on frozen SAM features, not SAM's own "
        "decoder fine-tuned.",
    ),
}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(key: str, row: dict) -> str:
    """One cell of the table as text."""
    if key == "notes":  # computed from the row's flags, not stored
        return ", ".join(words for flag, (words, _) in NOTES.items() if row.get(flag))
    if key == "verdict":
        return _verdict(row)
    if key == "devices":
        return f"{row.get('train_device') or row.get('device', '?')} ×{row.get('device_count', 1)}"
    if key == "train_time":
        return _duration(row.get("train_seconds"))
    if key in ("diff", "hl_diff", "pairs"):
        return _difference(key, row)
    if key == "seeds":
        return _seed_spread(row)
    if key == "dice_point":  # the main table's NaN-rule Dice; its interval is in the details
        return "n/a" if _missing(row.get("dice")) else f"{row['dice']:.3f}"
    value = row.get(key)
    if _missing(value):
        return "n/a"
    if key == "score":
        low, high = row.get("score_ci_low"), row.get("score_ci_high")
        ci = "" if _missing(low) else f" [{low:.3f}, {high:.3f}]"
        return f"{value:.3f}{ci}"
    if key == "val_score":
        return f"{value:.3f}"
    if key == "train_seconds" and row.get("train_cache_seconds"):
        cache = row["train_cache_seconds"]
        return f"{value - cache:.1f} + {cache:.1f} cache"
    # Dice, and mIoU where it is the primary metric (several classes): with the interval.
    if key == "dice" or (key == "miou" and row.get("num_classes")):
        low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
        ci = "" if _missing(low) else f" [{low:.3f}, {high:.3f}]"
        return f"{value:.3f}{ci}"
    if key == "test_loss":
        return f"{value:.3f}"
    if key in MEANS:
        std = row.get(f"{key}_std")
        return f"{value:.3f}" + ("" if _missing(std) else f" ± {std:.3f}")
    if key == "n_images":
        empty = row.get("n_empty_reference") or 0
        return f"{value}" + (f" ({empty} empty)" if empty else "")
    if key == "threshold":
        return f"{value:.2f}" + (" (val)" if row.get("threshold_tuned") else "")
    if key in ("params_total", "params_trainable"):
        return f"{value / 1e6:.2f} M" if value else "0"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.3f}" if value < 1 else f"{value:.2f}"
    return str(value)


def _difference(key: str, row: dict) -> str:
    """The paired difference to the reference (this row minus it, per test image)."""
    if row.get("reference"):
        return "—"
    if key == "pairs":
        n, usable = row.get("n_pairs"), row.get("n_usable")
        if n is None:
            return "n/a"
        ties = n - usable if usable is not None else 0
        return f"{n}" + (f" ({ties} tied)" if ties else "")
    value = row.get("mean_diff" if key == "diff" else "hl_diff")
    if _missing(value):
        return "n/a"
    if key == "hl_diff":
        return f"{value:+.3f}"
    low, high = row.get("diff_ci_low"), row.get("diff_ci_high")
    ci = "" if _missing(low) or _missing(high) else f" [{low:+.3f}, {high:+.3f}]"
    return f"{value:+.3f}{ci}"


def _seed_spread(row: dict) -> str:
    """The seed-to-seed std of the mean test score, or how many times the model was made."""
    scores = row.get("seed_scores")  # a list, or comparison.csv's space-separated cell
    n = len(scores) if isinstance(scores, list) else len(str(scores or "").split())
    if n < 2 or _missing(row.get("seed_std")):
        return "1 seed" if row.get("train_epochs") else "—"  # nothing random to repeat
    folds = row.get("folds")
    if isinstance(folds, list) and len(set(folds)) > 1:
        k = len(set(folds))
        per = n // k
        return f"±{row['seed_std']:.3f} ({k} folds" + (f" × {per} seeds)" if per > 1 else ")")
    return f"±{row['seed_std']:.3f} ({n} seeds)"


def _duration(seconds) -> str:
    """Training wall time as a reader says it: ``0.03 s``, ``42.1 s``, ``12.5 min``, ``3.50 h``."""
    if _missing(seconds):
        return "n/a"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def class_iou_cell(row: dict, k: int) -> str:
    """Class ``k``'s mean test IoU in ``row`` with its 95% interval and the number of test
    images where it is defined (the class in the reference or the prediction)."""
    iou = (row.get("class_iou") or [None] * (k + 1))[k]
    n = (row.get("class_iou_n") or [0] * (k + 1))[k]
    if _missing(iou):
        return f"n/a (n={n})"
    low = (row.get("class_iou_ci_low") or [None] * (k + 1))[k]
    high = (row.get("class_iou_ci_high") or [None] * (k + 1))[k]
    ci = "" if _missing(low) or _missing(high) else f" [{low:.3f}, {high:.3f}]"
    return f"{iou:.3f}{ci} (n={n})"


def class_names(rows: list[dict]) -> list[str]:
    """The classes of the rows (several classes), background first; [] for two classes."""
    return next((list(r["class_names"]) for r in rows if r.get("class_names")), [])


def class_iou_markdown(rows: list[dict]) -> str:
    """The per-class IoU table (rows: models, columns: classes) in Markdown."""
    names = class_names(rows)
    lines = ["| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    lines += [
        f"| {r['model']} | " + " | ".join(class_iou_cell(r, k) for k in range(len(names))) + " |"
        for r in rows
    ]
    return "\n".join(lines)


def _verdict(row: dict) -> str:
    if row.get("reference"):
        return "reference"
    if row.get("verdict") == "too few pairs":
        return f"too few pairs ({row.get('n_usable', 0)} untied)"
    if _missing(row.get("p_holm")):
        return "n/a"
    words = {
        "not significantly different": "n.s.",
        "significantly worse": "worse *",
        "significantly better": "better *",
    }[row["verdict"]]
    return f"{words} (p={row['p_holm']:.3g})"


def skipped_entries(names: list[str], eval_dir: Path) -> dict[str, str]:
    """``{name: reason}`` for the entries of ``names`` that did not run on this data (their
    ``eval_dir/<name>/metrics.json`` says ``skipped``); their other files are never read."""
    out = {}
    for name in names:
        reason = read_skipped(Path(eval_dir) / name)
        if reason is not None:
            out[name] = reason
    return out


def collapsed_ensembles(names: list[str], eval_dir: Path, ensembles: Collection[str]) -> dict:
    """``{ensemble: member}`` for the ensembles of ``names`` whose weight search gave one
    member all the weight (``metrics.json``'s ``ensemble_collapsed_to``): each *is* that
    member, and has no row of its own."""
    out = {}
    for name in names:
        if name in ensembles and not read_skipped(Path(eval_dir) / name):
            stage = evaluate_stage(name, ensembles)
            member = EvalMetrics.read(Path(eval_dir) / name, stage=stage).ensemble_collapsed_to
            if member:
                out[name] = member
    return out


def comparison_rows(
    names: list[str],
    eval_dir: Path,
    *,
    alpha: float = 0.05,
    ensembles: Collection[str] = (),
    n_resamples: int = 10_000,
    seed: int = 0,
):
    """One dict per model of ``names`` (evaluated in ``eval_dir/<name>``; those in
    ``ensembles`` are ensembles), best test ``score`` first (the per-image criterion averaged
    over seeds), with the paired comparison against the reference row, chosen on validation
    (``reference``; the others: ``n_pairs``, ``n_usable``, ``mean_diff``, ``hl_diff``,
    ``diff_ci_low``, ``diff_ci_high``, ``p``, ``p_holm``, ``verdict``, ``significant``,
    ``can_reach``, ``family_size``). With several classes each row also holds
    ``class_iou_n``: per class, the test images where its IoU is defined. Entries skipped on
    this data (:func:`skipped_entries`) and ensembles that collapsed onto one member
    (:func:`collapsed_ensembles`) have no row. A missing or damaged ``metrics.json`` or
    ``per_image.csv`` is a :class:`SegbenchError` naming the file and the stage that rewrites
    it."""
    eval_dir = Path(eval_dir)
    names = [n for n in names if n not in skipped_entries(names, eval_dir)]
    names = [n for n in names if n not in collapsed_ensembles(names, eval_dir, ensembles)]
    stages = {name: evaluate_stage(name, ensembles) for name in names}
    rows = [
        {"model": name, **EvalMetrics.read(eval_dir / name, stage=stages[name]).model_dump()}
        for name in names
    ]
    metric = primary_metric(rows)
    per_image = {m: _per_image(eval_dir / m / PER_IMAGE_FILE, stages[m], metric) for m in names}
    if metric != "dice":
        for row in rows:
            row["class_iou_n"] = _defined_per_class(per_image[row["model"]], row["num_classes"])
    rows.sort(key=lambda r: -(r[RANK] if not _missing(r.get(RANK)) else -1))
    ref = reference_row(rows)
    if ref is None:
        return rows
    ref["reference"] = True
    scores = {m: {r["id"]: r[RANK] for r in per} for m, per in per_image.items()}
    ids = list(scores[ref["model"]])
    aligned = {m: [d.get(i, math.nan) for i in ids] for m, d in scores.items()}
    tests = compare_to_reference(
        aligned, ref["model"], alpha=alpha, n_resamples=n_resamples, seed=seed
    )
    for row in rows:
        row.update(tests.get(row["model"], {}))
    return rows


def _per_image(path: Path, stage: str, metric: str) -> list[dict]:
    """``per_image.csv``'s id, ``score`` and ``metric`` (several classes: and each class's
    IoU)."""
    if metric == "dice":
        return read_per_image(path, stage=stage, columns=("id", RANK, "dice"))
    header = []
    if path.is_file():
        with open(path, newline="", errors="replace") as fh:
            header = fh.readline().strip().split(",")
    classes = [c for c in header if c.startswith("iou_") and c[4:].isdigit()]
    return read_per_image(path, stage=stage, columns=("id", RANK, metric, *classes))


def _defined_per_class(per_image: list[dict], num_classes: int) -> list[int]:
    return [
        sum(1 for r in per_image if not _missing(r.get(f"iou_{k}", math.nan)))
        for k in range(num_classes)
    ]


def reference_row(rows: list[dict]) -> dict | None:
    """The reference: the best row by validation ``score`` (chosen before the test set is
    looked at) among models that see the image alone (no oracle prompts) and have a test
    score; None when no such row has a validation score (no validation images)."""
    fair = [
        r
        for r in rows
        if not _missing(r.get(RANK))
        and not _missing(r.get("val_score"))
        and not r.get("oracle_prompts")
    ]
    # A tie on validation goes by name, never by the test score (that would be choosing on test).
    return min(fair, key=lambda r: (-r["val_score"], r["model"]), default=None)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]] = COLUMNS) -> str:
    """The comparison (or another set of ``columns``) as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(k, r) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def pareto_front(rows: list[dict], cost: str, metric: str = RANK) -> list[str]:
    """Models no other model beats on both the test ``metric`` (default: the ranking score)
    and ``cost`` (lower is better), among the rows that see the image alone; cheapest
    first."""
    fair = [r for r in rows if not _missing(r.get(metric)) and not r.get("oracle_prompts")]
    fair.sort(key=lambda r: (float(r.get(cost) or 0.0), -r[metric]))
    front, best = [], -math.inf
    for r in fair:
        if r[metric] > best:
            front.append(r["model"])
            best = r[metric]
    return front


def rows_from_csv(rows: list[dict[str, str]]) -> list[dict]:
    """``comparison.csv`` rows (all text) back to the numbers and flags :func:`fmt` expects."""
    out = []
    for row in rows:
        parsed: dict = {}
        for key, text in row.items():
            if text in ("True", "False"):
                parsed[key] = text == "True"
            elif text == "":
                parsed[key] = None
            else:
                try:
                    parsed[key] = int(text) if text.lstrip("-").isdigit() else float(text)
                except ValueError:
                    parsed[key] = text
        out.append(parsed)
    return out


def terminal_table(rows: list[dict]) -> str:
    """The essentials of the comparison as aligned plain text (the primary metric first)."""
    columns = [c for c in table_columns(primary_metric(rows)) if c[0] in TERMINAL_KEYS]
    cells = [[title for _, title in columns]]
    cells += [[fmt(key, r) for key, _ in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )
