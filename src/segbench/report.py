"""``report(...) -> rows``: the comparison table, training curves and example overlays.

Output layout (``out_dir``)::

    report.html       self-contained page (figures embedded as base64 PNG)
    summary.md        the comparison table and links to the figures
    comparison.csv    one row per model
    plots/<model>.csv per-epoch history of each trained model (DVC plots data)
    figures/*.png     training curves and per-model example overlays
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from pathlib import Path

import jinja2
import numpy as np
from tqdm import tqdm

from segbench import figures
from segbench.config import Params
from segbench.data.normalize import intensity_range, to_unit
from segbench.io import atomic_dir, read_csv, read_image, read_json, read_mask, write_csv

COLUMNS = [
    ("model", "model"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("pixel_accuracy", "pixel acc."),
    ("precision", "precision"),
    ("recall", "recall"),
    ("n_images", "test images"),
    ("params_total", "params"),
    ("params_trainable", "trained"),
    ("train_seconds", "train s"),
    ("images_per_second", "img/s"),
    ("device", "device"),
    ("notes", "notes"),
]

# Flags a trained model's metrics.json carries (segbench.models.registry.model_notes), with the
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


def _fmt(key: str, row: dict) -> str:
    if key == "notes":  # computed from the row's flags, not stored
        return ", ".join(words for flag, (words, _) in NOTES.items() if row.get(flag))
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key in ("dice", "iou", "pixel_accuracy", "precision", "recall"):
        std = row.get(f"{key}_std")
        return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    if key in ("params_total", "params_trainable"):
        return f"{value / 1e6:.2f} M" if value else "0"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value)


def comparison_rows(model_dirs: dict[str, Path], eval_dir: Path) -> list[dict]:
    """One dict per model (``{name: its model directory}``): test metrics + training cost, best
    test Dice first."""
    rows = []
    for name, model_dir in model_dirs.items():
        row = {"model": name, **read_json(model_dir / "metrics.json")}
        row.update(read_json(eval_dir / name / "metrics.json"))
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["dice"] if r.get("dice") is not None else -1))


def markdown_table(rows: list[dict]) -> str:
    """The comparison as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(k, r) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _display(image: np.ndarray, params: Params) -> np.ndarray:
    """(H, W) uint8/uint16 -> uint8 for display, over the range the models were given."""
    lo, hi = intensity_range(image, params.prepare.normalize)
    return np.rint(to_unit(image, lo, hi) * 255).astype(np.uint8)


def _examples(params: Params, raw_dir: Path, eval_dir: Path, models: list[str], fig_dir: Path):
    """Render overlays of the same few test images for every model; ``{model: [png paths]}``."""
    tests = [r for r in read_csv(raw_dir / "manifest.csv") if r["split"] == "test"]
    tests = sorted(tests, key=lambda r: r["id"])[: params.report.n_examples]
    out: dict[str, list[Path]] = {m: [] for m in models}
    for rec in tqdm(tests, desc="report figures", unit="img"):
        image, mask = read_image(raw_dir / rec["image"]), read_mask(raw_dir / rec["mask"])
        image = _display(image, params)
        for name in models:
            pred = read_mask(eval_dir / name / "pred" / f"{rec['id']}.png")
            path = fig_dir / f"{name}_{rec['id']}.png"
            figures.overlay(image, mask, pred, path, title=f"{name} · {rec['id']}")
            out[name].append(path)
    return out


def report(
    params: Params, *, raw_dir, models_dir, eval_dir, out_dir, ensembles_dir="ensembles"
) -> list[dict]:
    """Write the report for every model in ``params.models`` and every ensemble in
    ``params.ensembles``; return the comparison rows."""
    raw_dir, eval_dir = Path(raw_dir), Path(eval_dir)
    model_dirs = {m: Path(models_dir) / m for m in params.models}
    model_dirs |= {e: Path(ensembles_dir) / e for e in params.ensembles}
    models = list(model_dirs)
    rows = comparison_rows(model_dirs, eval_dir)
    with atomic_dir(out_dir) as tmp:
        fig_dir = tmp / "figures"
        fig_dir.mkdir()
        examples = _examples(params, raw_dir, eval_dir, models, fig_dir)
        curves = {}
        (tmp / "plots").mkdir()
        for name in models:
            history = read_csv(model_dirs[name] / "history.csv")
            if history:
                curves[name] = figures.training_curve(history, fig_dir / f"{name}_curve.png", name)
                # DVC plots data: one file per model, so `dvc plots show` draws one line each.
                write_csv(tmp / "plots" / f"{name}.csv", history, list(history[0]))
        context = {
            "rows": rows,
            "columns": COLUMNS,
            "fmt": _fmt,
            "table_md": markdown_table(rows),
            "dataset": read_json(raw_dir / "summary.json"),
            "source": params.data.source,
            "params": params.model_dump(mode="json"),
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "headline": headline(rows),
            "banners": banners(rows),
            "ensemble_notes": [
                ensemble_note(e, read_json(model_dirs[e] / "metrics.json"))
                for e in params.ensembles
            ],
        }
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("segbench", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
        )
        rel = {m: [p.relative_to(tmp).as_posix() for p in ps] for m, ps in examples.items()}
        (tmp / "summary.md").write_text(
            env.get_template("summary.md.j2").render(
                **context,
                examples=rel,
                curves={m: p.relative_to(tmp).as_posix() for m, p in curves.items()},
            )
        )
        (tmp / "report.html").write_text(
            env.get_template("report.html.j2").render(
                **context,
                examples={m: [_b64(p) for p in ps] for m, ps in examples.items()},
                curves={m: _b64(p) for m, p in curves.items()},
            )
        )
        write_csv(
            tmp / "comparison.csv",
            [{k: _fmt(k, r) if k == "notes" else r.get(k) for k, _ in COLUMNS} for r in rows],
            [k for k, _ in COLUMNS],
        )
    return rows


def ensemble_note(name: str, metrics: dict) -> str:
    """One sentence on how an ensemble was mixed, from its ``metrics.json``."""
    members = [k[len("weight_") :] for k in metrics if k.startswith("weight_")]
    mix = " + ".join(f"{metrics[f'weight_{m}']:.2f} × {m}" for m in members)
    alone = ", ".join(f"{m} {metrics[f'val_dice_{m}']:.3f}" for m in members)
    return (
        f"{name} = {mix}: weights chosen on {metrics['n_val_images']} validation images "
        f"(pooled validation Dice {metrics['val_dice']:.3f}; members alone: {alone}). "
        "Its training time is its members' plus the weight search."
    )


def banners(rows: list[dict]) -> list[str]:
    """The warnings the table's notes need, each once, for the flags some row carries."""
    return [text for flag, (_, text) in NOTES.items() if any(r.get(flag) for r in rows)]


def headline(rows: list[dict]) -> str:
    """One sentence: the best model that sees the image alone (no oracle prompts), its margin
    over the classical baseline if present, and any oracle row that scores higher."""
    scored = [r for r in rows if r.get("dice") is not None]
    fair = [r for r in scored if not r.get("oracle_prompts")]
    if not fair:
        return "No model without oracle prompts produced a defined test Dice."
    best = fair[0]
    text = f"Best test Dice: {best['model']} ({best['dice']:.3f} over {best['n_images']} images)."
    above = [r for r in scored if r.get("oracle_prompts") and r["dice"] > best["dice"]]
    if above:
        text += (
            f" With oracle prompts from the ground truth, {above[0]['model']} reaches "
            f"{above[0]['dice']:.3f}: an upper bound for a perfect user, not a fair comparison."
        )
    base = next((r for r in scored if r["model"] == "otsu"), None)
    if base is not None and base is not best:
        text += (
            f" The classical baseline (Otsu) scores {base['dice']:.3f}:"
            f" a margin of {best['dice'] - base['dice']:+.3f}."
        )
    return text
