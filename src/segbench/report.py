"""``report(...) -> rows``: the comparison a reviewer can trust, as HTML, Markdown and DVC plots.

Output layout (``out_dir``)::

    report.html            self-contained page (every figure embedded: plots PNG, galleries JPEG)
    summary.md             the same content in Markdown, figures linked from figures/
    comparison.csv         one row per model: every figure of the table, unformatted
    figures/               Pareto plot, training and threshold curves, sweep plots, object
                           sizes and counts (PNG); gallery panels (JPEG)
    plots/history/<m>.csv  per-epoch history of each trained model  (DVC plots data)
    plots/threshold/<m>.csv  validation Dice per threshold, for tuned models
    plots/pareto.csv       model, the primary metric, training seconds, parameters

The primary metric (ranking, intervals, paired tests, Pareto plot, galleries) is Dice with two
classes and per-image mIoU with several (:mod:`segbench.comparison`). Several classes add a
per-class IoU table, a confusion-matrix figure per model (``figures/confusion_<m>.png``) and
galleries coloured per class with a legend (``figures/legend.png``). Two classes add the
objects section where evaluate measured objects (:mod:`segbench.reportobjects`: object F1,
panoptic quality, count error; ``figures/object_sizes.png``, ``figures/object_counts.png``).
Entries skipped on this data (``metrics.json`` ``{"skipped": reason}``) are listed with their
reason, never read.
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
from segbench.classes import read_channels, read_classes
from segbench.comparison import (
    COLUMNS,
    NOTES,
    PRIMARY_TITLES,
    RANK,
    SCORE_TITLES,
    STUDY_COLUMNS,
    class_iou_cell,
    class_iou_markdown,
    collapsed_ensembles,
    comparison_rows,
    detail_columns,
    fmt,
    markdown_table,
    pareto_front,
    skipped_entries,
    table_columns,
)
from segbench.config import Params
from segbench.data.normalize import intensity_range, to_unit
from segbench.errors import SegbenchError
from segbench.evalmetrics import PER_IMAGE_FILE, evaluate_stage, read_per_image
from segbench.io import atomic_dir, read_csv, read_image, read_json, read_mask, write_csv
from segbench.metrics import METRICS
from segbench.modelcard import ModelCard
from segbench.registry import register_reference
from segbench.reportcsv import csv_fields, csv_row
from segbench.reportextra import extra_sections
from segbench.reportobjects import object_sections, tta_note
from segbench.reportsweep import sweep_figure, sweep_summary
from segbench.reporttext import banners, ensemble_note, headline, method_note

__all__ = ["COLUMNS", "NOTES", "banners", "headline", "markdown_table", "report"]


def _display(image: np.ndarray, params: Params) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8/uint16 -> uint8 for display, over the range the models were
    given."""
    lo, hi = intensity_range(image, params.prepare.normalize)
    return np.rint(to_unit(image, lo, hi) * 255).astype(np.uint8)


def pick_examples(per_image: list[dict], k: int, metric: str = "dice") -> dict[str, list[dict]]:
    """The ``k`` best and ``k`` worst test images by ``metric`` (Dice, or mIoU with several
    classes; never the same image twice), and with Dice the ``k`` empty-reference images with
    the most false-positive pixels (their Dice is undefined). ``per_image``: rows of
    :func:`segbench.evalmetrics.read_per_image` (``id``, ``metric`` a float, NaN where
    undefined, and for Dice ``fp`` an int).
    """
    scored = [r for r in per_image if not math.isnan(r[metric])]
    scored.sort(key=lambda r: (-r[metric], r["id"]))
    best = scored[:k]
    worst = [r for r in scored[::-1] if r not in best][:k]
    if metric != "dice":  # mIoU is defined on every image: some class is always present
        return {"best": best, "worst": worst}
    empty = [r for r in per_image if math.isnan(r["dice"])]
    empty.sort(key=lambda r: (-r["fp"], r["id"]))
    return {"best": best, "worst": worst, "empty reference": empty[:k]}


def _galleries(params, raw_dir: Path, eval_dir: Path, models: list[str], fig_dir: Path):
    """``{model: {group: [(jpeg path, caption), ...]}}`` for the best/worst/empty images: two
    classes, the reference outlined and the errors coloured; several, the reference and the
    prediction with a colour per class (the data's display colours)."""
    spec, channels = read_classes(raw_dir), read_channels(raw_dir)
    metric = "dice" if spec.binary else "miou"
    manifest = {r["id"]: r for r in read_csv(raw_dir / "manifest.csv")}
    picks = {
        m: pick_examples(
            read_per_image(
                eval_dir / m / PER_IMAGE_FILE,
                stage=evaluate_stage(m, params.ensembles),
                columns=("id", "dice", "fp") if spec.binary else ("id", metric),
            ),
            params.report.gallery_size,
            metric,
        )
        for m in models
    }
    needed = sorted({r["id"] for p in picks.values() for g in p.values() for r in g})
    out: dict[str, dict[str, list]] = {m: {g: [] for g in picks[m]} for m in models}
    for image_id in tqdm(needed, desc="report galleries", unit="img"):
        rec = manifest[image_id]
        image = _display(read_image(raw_dir / rec["image"], channels), params)
        ref = read_mask(raw_dir / rec["mask"], spec.num_classes)
        for m in models:
            for group, chosen in picks[m].items():
                row = next((r for r in chosen if r["id"] == image_id), None)
                if row is None:
                    continue
                pred = read_mask(eval_dir / m / "pred" / f"{image_id}.png", spec.num_classes)
                path = fig_dir / f"gallery_{m}_{image_id}.jpg"
                if spec.binary:
                    panel = figures.gallery_panel(image, ref, pred)
                else:
                    panel = figures.class_panel(image, ref, pred, spec.display_colors())
                path.write_bytes(figures.jpeg_bytes(panel))
                caption = (
                    f"{image_id}: {PRIMARY_TITLES[metric]} {row[metric]:.3f}"
                    if group != "empty reference"
                    else f"{image_id}: empty reference, {row['fp']} false-positive px"
                )
                out[m][group].append((path, caption))
    return out


def read_confusion(eval_dir: Path, names: list[str], *, stage: str) -> np.ndarray:
    """``eval_dir/confusion.csv`` as a (C, C) int64 matrix (rows: reference class, columns:
    predicted class) over the classes ``names``; a damaged file is a :class:`SegbenchError`
    naming it and the stage that rewrites it."""
    path = eval_dir / "confusion.csv"
    rows = read_csv(path)
    try:
        matrix = np.array([[int(r[n]) for n in names] for r in rows], dtype=np.int64)
        ok = [r["reference"] for r in rows] == list(names)
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise SegbenchError(
            f"{path}: not a confusion matrix of the classes {', '.join(names)} (a header "
            f"reference,{','.join(names)} and one row of pixel counts per class); re-run "
            f"`dvc repro {stage}`"
        )
    return matrix


def _figures(
    rows, names: list[str], eval_dir: Path, sweeps_dir, tmp: Path, *, metric: str = "dice"
) -> dict[str, Path]:
    """The report's plots, and their DVC plots data under ``tmp/plots``."""
    fig_dir = tmp / "figures"
    for sub in ("history", "threshold"):
        (tmp / "plots" / sub).mkdir(parents=True)
    front = {key: pareto_front(rows, key) for key, _, _ in figures.PARETO_COSTS}
    out = {
        "pareto": figures.pareto(
            rows, front, fig_dir / "pareto.png", metric=RANK, title=SCORE_TITLES[metric]
        )
    }
    pareto_fields = ["model", RANK, "train_seconds", "params_total"]
    write_csv(
        tmp / "plots" / "pareto.csv",
        [{k: r.get(k) for k in pareto_fields} for r in rows],
        pareto_fields,
    )
    # Several classes: validation Dice is the pooled Dice averaged over the foreground classes.
    dice_label = "validation Dice" if metric == "dice" else "val. Dice (fg. classes)"
    curves, thresholds = {}, {}
    for name in names:
        history = read_csv(eval_dir / name / "history.csv")
        if history:
            write_csv(tmp / "plots" / "history" / f"{name}.csv", history, list(history[0]))
            curves[name] = [(float(h["epoch"]), float(h["val_dice"])) for h in history]
            out[f"curve_{name}"] = figures.training_curve(
                history, fig_dir / f"{name}_curve.png", name, dice_label=dice_label
            )
        tuned = eval_dir / name / "threshold.csv"
        curve = read_csv(tuned) if tuned.is_file() else []
        if curve:
            write_csv(tmp / "plots" / "threshold" / f"{name}.csv", curve, list(curve[0]))
            thresholds[name] = [
                (float(c["threshold"]), float(c["val_score"]))
                for c in curve
                if c.get("val_score") not in (None, "", "nan")
            ]
    if curves:
        out["val_curves"] = figures.lines(
            curves,
            fig_dir / "val_curves.png",
            xlabel="epoch",
            ylabel=dice_label,
            title="Validation Dice per epoch (tiles)",
        )
    if thresholds:
        out["thresholds"] = figures.lines(
            thresholds,
            fig_dir / "thresholds.png",
            xlabel="threshold",
            ylabel="validation Dice (all images), mean per image",
            title="Threshold tuning on the validation images",
        )
    sweep = sweep_figure(sweeps_dir, fig_dir)
    if sweep is not None:
        out["sweep"] = sweep
    return out


def _class_figures(rows, raw_dir: Path, eval_dir: Path, fig_dir: Path, ensembles) -> dict:
    """Several classes: a row-normalised confusion matrix per model and the colour legend."""
    spec = read_classes(raw_dir)
    names = list(spec.names)
    out = {"legend": figures.class_legend(names, spec.display_colors(), fig_dir / "legend.png")}
    for row in rows:
        m = row["model"]
        matrix = read_confusion(eval_dir / m, names, stage=evaluate_stage(m, ensembles))
        out[f"confusion_{m}"] = figures.confusion_matrix(
            matrix, names, fig_dir / f"confusion_{m}.png", title=f"{m}: confusion on the test set"
        )
    return out


def report(params: Params, *, raw_dir, eval_dir, out_dir, sweeps_dir=None) -> list[dict]:
    """Write the report for every model in ``params.models`` and every ensemble in
    ``params.ensembles``, from their evaluation directories ``eval_dir/<name>`` (metrics, model
    card, history, predicted masks, confusion matrix), and the sweep in ``sweeps_dir`` if it
    holds a ``trials.csv``; return the comparison rows, best test primary metric first (Dice
    with two classes, mIoU with several). Entries skipped on this data are listed, not read."""
    raw_dir, eval_dir = Path(raw_dir), Path(eval_dir)
    spec = read_classes(raw_dir)
    metric = "dice" if spec.binary else "miou"
    skipped = skipped_entries([*params.models, *params.ensembles], eval_dir)
    names = [n for n in (*params.models, *params.ensembles) if n not in skipped]
    rows = comparison_rows(
        names,
        eval_dir,
        alpha=params.report.alpha,
        ensembles=params.ensembles,
        n_resamples=params.evaluate.bootstrap_resamples,
        seed=params.evaluate.seed,
    )
    collapsed = collapsed_ensembles(names, eval_dir, params.ensembles)
    order = [r["model"] for r in rows]
    # Before the report is written: a reference that cannot be registered stops the stage with
    # nothing written, and the report states the version it registered.
    registry = register_reference(rows, eval_dir, params)
    with atomic_dir(out_dir) as tmp:
        (tmp / "figures").mkdir()
        sweeps = Path(sweeps_dir) if sweeps_dir else None
        plots = _figures(rows, names, eval_dir, sweeps, tmp, metric=metric)
        if not spec.binary:
            plots |= _class_figures(rows, raw_dir, eval_dir, tmp / "figures", params.ensembles)
        galleries = _galleries(params, raw_dir, eval_dir, order, tmp / "figures")
        extra_plots, extras = extra_sections(
            order,
            eval_dir,
            raw_dir,
            tmp / "figures",
            channels=read_channels(raw_dir),
            display=lambda image: _display(image, params),
            gallery_size=params.report.gallery_size,
            alpha=params.report.alpha,
        )
        plots |= extra_plots
        object_plots, objects = object_sections(
            order, eval_dir, tmp / "figures", ensembles=params.ensembles
        )
        plots |= object_plots
        columns, details = table_columns(metric), detail_columns(metric)
        context = {
            "rows": rows,
            "columns": columns,
            "fmt": fmt,
            "table_md": markdown_table(rows, columns),
            "detail_columns": details,
            "detail_md": markdown_table(rows, details),
            "study_columns": STUDY_COLUMNS,
            "study_md": markdown_table(rows, STUDY_COLUMNS),
            "metric": metric,
            "primary_title": PRIMARY_TITLES[metric],
            "multiclass": not spec.binary,
            "class_names": list(spec.names),
            "class_colors": ["#" + bytes(c.tolist()).hex() for c in spec.display_colors()],
            "class_iou_cell": class_iou_cell,
            "class_md": "" if spec.binary else class_iou_markdown(rows),
            "skipped": skipped,
            **extras,
            **objects,
            "tta_note": tta_note(rows),
            "registry": registry,
            "dataset": read_json(raw_dir / "summary.json"),
            "source": params.data.source,
            "params": params.model_dump(mode="json"),
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "headline": headline(rows, metric),
            "banners": banners(rows, params.report.alpha),
            "method_note": method_note(
                multiclass=not spec.binary,
                alpha=params.report.alpha,
                resamples=params.evaluate.bootstrap_resamples,
                seed=params.evaluate.seed,
                repeats=max((len(r.get("seeds") or []) for r in rows), default=1),
                folds=max((len(set(r.get("folds") or [0])) for r in rows), default=1),
            ),
            "collapsed": {
                e: {"member": m, "note": ensemble_note(ModelCard.read(eval_dir / e))}
                for e, m in collapsed.items()
            },
            "alpha": params.report.alpha,
            "metrics": METRICS,
            "sweep": sweep_summary(Path(sweeps_dir) if sweeps_dir else None),
            "ensemble_notes": [
                ensemble_note(ModelCard.read(eval_dir / e))
                for e in params.ensembles
                if e not in skipped and e not in collapsed
            ],
        }
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("segbench", "templates"),
            autoescape=jinja2.select_autoescape(["html", "html.j2"]),  # report.html.j2
        )

        def rel(p: Path) -> str:
            return p.relative_to(tmp).as_posix()

        def b64(p: Path) -> str:
            mime = "image/jpeg" if p.suffix == ".jpg" else "image/png"
            return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")

        for name, src, template in (
            ("summary.md", rel, "summary.md.j2"),
            ("report.html", b64, "report.html.j2"),
        ):
            (tmp / name).write_text(
                env.get_template(template).render(
                    **context,
                    plots={k: src(p) for k, p in plots.items()},
                    galleries={
                        m: {g: [(src(p), c) for p, c in items] for g, items in groups.items()}
                        for m, groups in galleries.items()
                    },
                    auto_galleries={
                        m: [(src(p), c) for p, c in compare["gallery"]]
                        for m, compare in extras["auto_compares"].items()
                    },
                )
            )
        fields = csv_fields(metric, list(spec.names))
        write_csv(tmp / "comparison.csv", [csv_row(r, fields) for r in rows], fields)
    return rows
