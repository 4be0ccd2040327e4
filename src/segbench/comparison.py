"""The comparison table: one row per model, its uncertainty, its cost, and what qualifies it.

A row is a model's ``eval/<m>/metrics.json`` (test metrics, with training's cost and the notes
that qualify them); rows are sorted by the mean test *primary metric*: Dice with two classes,
mIoU with several (:attr:`segbench.evalmetrics.EvalMetrics.primary`). The *reference* row is the
best model that sees the image alone (no oracle prompts); every other row is compared with it
on the per-image primary metric (paired Wilcoxon, Holm over all rows, :mod:`segbench.stats`).
Entries that could not run on the data (:func:`segbench.evalmetrics.write_skipped`) have no
row: :func:`skipped_entries` lists them and why.
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
from segbench.stats import SMALL_TEST_SET, compare_to_best

# The primary metric's name in the report's words.
PRIMARY_TITLES = {"dice": "Dice", "miou": "mIoU"}

# (key, title) of the main table's columns, in order (accuracy, its certainty, and cost);
# _fmt knows how to show each. DETAIL_COLUMNS: every other metric, in a second table.
COLUMNS = [
    ("model", "model"),
    ("dice", "Dice [95% CI]"),
    ("verdict", "vs best (Holm p)"),
    ("n_images", "test images"),
    ("threshold", "threshold"),
    ("params_total", "params"),
    ("params_trainable", "trained"),
    ("train_seconds", "train s"),
    ("devices", "train device"),
    ("images_per_second", "img/s"),
    ("notes", "notes"),
]
DETAIL_COLUMNS = [
    ("model", "model"),
    ("dice", "Dice [95% CI]"),
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
    ("miou", "mIoU [95% CI]") if key == "dice" else (key, title)
    for key, title in COLUMNS
    if key != "threshold"
]
MULTICLASS_DETAIL_COLUMNS = [
    ("model", "model"),
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
    "dice",
    "miou",
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
    value = row.get(key)
    if _missing(value):
        return "n/a"
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
    if _missing(row.get("p_holm")):
        return "n/a"
    words = {
        "not significantly different": "not significantly different",
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


def comparison_rows(
    names: list[str], eval_dir: Path, *, alpha: float = 0.05, ensembles: Collection[str] = ()
):
    """One dict per model of ``names`` (evaluated in ``eval_dir/<name>``; those in
    ``ensembles`` are ensembles), best test primary metric first (Dice with two classes, mIoU
    with several), with the paired comparison on it against the reference row
    (``reference``, ``p``, ``p_holm``, ``verdict``, ``significant``, ``n_pairs``,
    ``mean_diff``). With several classes each row also holds ``class_iou_n``: per class, the
    test images where its IoU is defined. Entries that were skipped on this data
    (:func:`skipped_entries`) have no row. A missing or damaged ``metrics.json`` or
    ``per_image.csv`` is a :class:`SegbenchError` naming the file and the stage that rewrites
    it."""
    eval_dir = Path(eval_dir)
    names = [n for n in names if n not in skipped_entries(names, eval_dir)]
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
    rows.sort(key=lambda r: -(r[metric] if not _missing(r.get(metric)) else -1))
    ref = reference_row(rows, metric)
    if ref is None:
        return rows
    ref["reference"] = True
    scores = {m: {r["id"]: r[metric] for r in per} for m, per in per_image.items()}
    ids = list(scores[ref["model"]])
    aligned = {m: [d.get(i, math.nan) for i in ids] for m, d in scores.items()}
    tests = compare_to_best(aligned, ref["model"], alpha=alpha)
    for row in rows:
        row.update(tests.get(row["model"], {}))
    return rows


def _per_image(path: Path, stage: str, metric: str) -> list[dict]:
    """``per_image.csv``'s id and ``metric`` (several classes: and each class's IoU)."""
    if metric == "dice":
        return read_per_image(path, stage=stage, columns=("id", "dice"))
    header = []
    if path.is_file():
        with open(path, newline="", errors="replace") as fh:
            header = fh.readline().strip().split(",")
    classes = [c for c in header if c.startswith("iou_") and c[4:].isdigit()]
    return read_per_image(path, stage=stage, columns=("id", metric, *classes))


def _defined_per_class(per_image: list[dict], num_classes: int) -> list[int]:
    return [
        sum(1 for r in per_image if not _missing(r.get(f"iou_{k}", math.nan)))
        for k in range(num_classes)
    ]


def reference_row(rows: list[dict], metric: str | None = None) -> dict | None:
    """The best row by the primary ``metric`` (default: :func:`primary_metric`) among models
    that see the image alone (no oracle prompts); ``rows`` are sorted best first."""
    metric = metric or primary_metric(rows)
    return next(
        (r for r in rows if not _missing(r.get(metric)) and not r.get("oracle_prompts")), None
    )


def markdown_table(rows: list[dict], columns: list[tuple[str, str]] = COLUMNS) -> str:
    """The comparison (or another set of ``columns``) as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(k, r) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def banners(rows: list[dict]) -> list[str]:
    """The warnings the table needs, each once: the flags some row carries, a small test set."""
    out = [text for flag, (_, text) in NOTES.items() if any(r.get(flag) for r in rows)]
    n = max((r.get("n_images", 0) for r in rows), default=0)
    if rows and n < SMALL_TEST_SET:
        out.append(
            f"Small test set. Only {n} test image{'s' * (n != 1)}: confidence intervals are wide "
            "and the paired tests can rarely tell models apart (with 3 images no difference can "
            f"ever reach p < 0.05). Rank differences here are not evidence; use {SMALL_TEST_SET} "
            "or more test images (data.split.test) before drawing conclusions."
        )
    return out


def headline(rows: list[dict], metric: str | None = None) -> str:
    """A few sentences: the reference model, how sure that is, the classical baseline's margin,
    and any oracle row that scores higher, on the primary ``metric`` (default:
    :func:`primary_metric`)."""
    metric = metric or primary_metric(rows)
    title = PRIMARY_TITLES[metric]
    ref = reference_row(rows, metric)
    if ref is None:
        return f"No model without oracle prompts produced a defined test {title}."
    n = ref["n_images"]
    text = f"Best test {title}: {ref['model']} ({fmt(metric, ref)} over {n} image{'s' * (n != 1)})."
    same = [
        r["model"]
        for r in rows
        if r.get("verdict") == "not significantly different" and not r.get("oracle_prompts")
    ]
    if same:
        text += (
            f" Not significantly different from it (paired Wilcoxon on per-image {title}, Holm-"
            f"corrected): {', '.join(same)}."
        )
    scored = [r for r in rows if not _missing(r.get(metric))]
    above = [r for r in scored if r.get("oracle_prompts") and r[metric] > ref[metric]]
    if above:
        text += (
            f" With oracle prompts from the ground truth, {above[0]['model']} reaches "
            f"{above[0][metric]:.3f}: an upper bound for a perfect user, not a fair comparison."
        )
    base = next((r for r in scored if r["model"] == "otsu"), None)
    if base is not None and base is not ref:
        otsu = "Otsu" if metric == "dice" else "multi-Otsu"
        text += (
            f" The classical baseline ({otsu}) scores {base[metric]:.3f}:"
            f" a margin of {ref[metric] - base[metric]:+.3f}."
        )
    return text


def pareto_front(rows: list[dict], cost: str, metric: str | None = None) -> list[str]:
    """Models no other model beats on both the test primary ``metric`` (default:
    :func:`primary_metric`) and ``cost`` (lower is better), among the rows that see the image
    alone; cheapest first."""
    metric = metric or primary_metric(rows)
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
