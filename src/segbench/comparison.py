"""The comparison table: one row per model, its uncertainty, its cost, and what qualifies it.

A row is a model's ``eval/<m>/metrics.json`` (test metrics, with training's cost and the notes
that qualify them); rows are sorted by mean test Dice. The *reference* row is the best model
that sees the image alone (no oracle prompts); every other row is compared with it on
per-image Dice (paired Wilcoxon, Holm over all rows, :mod:`segbench.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

from segbench.evalmetrics import PER_IMAGE_FILE, EvalMetrics, evaluate_stage, read_per_image
from segbench.stats import SMALL_TEST_SET, compare_to_best

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
MEANS = ("iou", "miou", "mpa", "pixel_accuracy", "precision", "recall")
# What `segbench summary` (and `make run`) prints in a terminal: the table's essentials.
TERMINAL_COLUMNS = [
    c
    for c in COLUMNS
    if c[0]
    in (
        "model",
        "dice",
        "verdict",
        "iou",
        "n_images",
        "threshold",
        "params_total",
        "train_seconds",
        "images_per_second",
        "notes",
    )
]

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
    value = row.get(key)
    if _missing(value):
        return "n/a"
    if key == "dice":
        low, high = row.get("dice_ci_low"), row.get("dice_ci_high")
        ci = "" if _missing(low) else f" [{low:.3f}, {high:.3f}]"
        return f"{value:.3f}{ci}"
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


def comparison_rows(
    names: list[str], eval_dir: Path, *, alpha: float = 0.05, ensembles: Collection[str] = ()
):
    """One dict per model of ``names`` (evaluated in ``eval_dir/<name>``; those in
    ``ensembles`` are ensembles), best test Dice first, with the paired comparison against
    the reference row (``reference``, ``p``, ``p_holm``, ``verdict``, ``significant``,
    ``n_pairs``, ``mean_diff``). A missing or damaged ``metrics.json`` or ``per_image.csv``
    is a :class:`SegbenchError` naming the file and the stage that rewrites it."""
    stages = {name: evaluate_stage(name, ensembles) for name in names}
    rows = [
        {"model": name, **EvalMetrics.read(eval_dir / name, stage=stages[name]).model_dump()}
        for name in names
    ]
    rows.sort(key=lambda r: -(r["dice"] if not _missing(r.get("dice")) else -1))
    ref = reference_row(rows)
    if ref is None:
        return rows
    ref["reference"] = True
    dice = {m: _per_image_dice(eval_dir / m / PER_IMAGE_FILE, stages[m]) for m in names}
    ids = list(dice[ref["model"]])
    scores = {m: [d.get(i, math.nan) for i in ids] for m, d in dice.items()}
    tests = compare_to_best(scores, ref["model"], alpha=alpha)
    for row in rows:
        row.update(tests.get(row["model"], {}))
    return rows


def _per_image_dice(path: Path, stage: str) -> dict[str, float]:
    return {r["id"]: r["dice"] for r in read_per_image(path, stage=stage, columns=("id", "dice"))}


def reference_row(rows: list[dict]) -> dict | None:
    """The best row by Dice among models that see the image alone (no oracle prompts)."""
    return next(
        (r for r in rows if not _missing(r.get("dice")) and not r.get("oracle_prompts")), None
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


def headline(rows: list[dict]) -> str:
    """A few sentences: the reference model, how sure that is, the classical baseline's margin,
    and any oracle row that scores higher."""
    ref = reference_row(rows)
    if ref is None:
        return "No model without oracle prompts produced a defined test Dice."
    n = ref["n_images"]
    text = f"Best test Dice: {ref['model']} ({fmt('dice', ref)} over {n} image{'s' * (n != 1)})."
    same = [
        r["model"]
        for r in rows
        if r.get("verdict") == "not significantly different" and not r.get("oracle_prompts")
    ]
    if same:
        text += (
            f" Not significantly different from it (paired Wilcoxon on per-image Dice, Holm-"
            f"corrected): {', '.join(same)}."
        )
    scored = [r for r in rows if not _missing(r.get("dice"))]
    above = [r for r in scored if r.get("oracle_prompts") and r["dice"] > ref["dice"]]
    if above:
        text += (
            f" With oracle prompts from the ground truth, {above[0]['model']} reaches "
            f"{above[0]['dice']:.3f}: an upper bound for a perfect user, not a fair comparison."
        )
    base = next((r for r in scored if r["model"] == "otsu"), None)
    if base is not None and base is not ref:
        text += (
            f" The classical baseline (Otsu) scores {base['dice']:.3f}:"
            f" a margin of {ref['dice'] - base['dice']:+.3f}."
        )
    return text


def pareto_front(rows: list[dict], cost: str) -> list[str]:
    """Models no other model beats on both test Dice and ``cost`` (lower is better), among the
    rows that see the image alone; cheapest first."""
    fair = [r for r in rows if not _missing(r.get("dice")) and not r.get("oracle_prompts")]
    fair.sort(key=lambda r: (float(r.get(cost) or 0.0), -r["dice"]))
    front, best = [], -math.inf
    for r in fair:
        if r["dice"] > best:
            front.append(r["model"])
            best = r["dice"]
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
    """The essentials of the comparison as aligned plain text."""
    cells = [[title for _, title in TERMINAL_COLUMNS]]
    cells += [[fmt(key, r) for key, _ in TERMINAL_COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TERMINAL_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )
