"""The report with several classes: models ranked and tested on per-image mIoU, a per-class IoU
table, a confusion matrix per model, galleries coloured per class (in colour for RGB data) with
a legend, the reference study's columns, the mPA note, and the entries that cannot run on the
data listed with their reason."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import figures
from segbench.classes import IGNORE, read_classes
from segbench.comparison import (
    class_iou_cell,
    class_iou_markdown,
    comparison_rows,
    fmt,
    pareto_front,
    rows_from_csv,
    skipped_entries,
    terminal_table,
)
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.evalmetrics import write_skipped
from segbench.io import read_csv, read_mask, write_csv, write_json
from segbench.metrics import multiclass_row
from segbench.report import pick_examples, read_confusion
from segbench.reportcsv import csv_fields
from segbench.reporttext import headline
from tests.conftest import (
    SHRINK,
    deep_update,
    only_models,
    real_params_raw,
    seeded_store,
    unregistered,
)
from tests.test_evalmetrics import example_metrics

CLASSES = ["substrate", "phase_a", "phase_b"]
SKIP_REASON = "zero-shot SAM (point prompts) segments one class, but the data has 3"


def _several(**changes) -> dict:
    """A ``metrics.json`` of a model on three classes (as evaluate writes it)."""
    several = {
        "num_classes": 3,
        "class_names": CLASSES,
        "class_iou": [0.9, 0.5, math.nan],
        "class_dice": [0.95, 0.6, math.nan],
        "class_precision": [0.9, 0.6, math.nan],
        "class_recall": [0.9, 0.6, math.nan],
        "class_iou_ci_low": [0.85, 0.4, math.nan],
        "class_iou_ci_high": [0.95, 0.6, math.nan],
        "class_images": [12, 10, 0],
        "miou_ci_low": 0.6,
        "miou_ci_high": 0.8,
        "test_loss": 0.25,
    }
    return example_metrics(**(several | changes))


def _model(root: Path, name: str, miou, dice, val=0.7, **changes) -> str:
    """An evaluation directory of three classes with per-image mIoU ``miou`` (the score) and
    Dice ``dice``, and the validation score ``val``."""
    rows = [
        {
            "id": f"img{i:02d}",
            "score": m,
            "miou": m,
            "dice": d,
            "iou_0": 0.9,
            "iou_1": 0.5,
            "iou_2": "nan",
        }
        for i, (m, d) in enumerate(zip(miou, dice, strict=True))
    ]
    rows[0]["iou_1"] = "nan"  # phase_a absent from both masks of one image
    (root / name).mkdir(parents=True)
    write_csv(root / name / "per_image.csv", rows, list(rows[0]))
    mean = float(np.mean(miou))
    metrics = _several(
        miou=mean, score=mean, score_metric="miou", val_score=val, dice=float(np.mean(dice))
    )
    metrics["n_images"] = len(miou)
    write_json(root / name / "metrics.json", metrics | changes)
    return name


def _skipped(eval_dir: Path, name: str, reason: str = SKIP_REASON) -> None:
    """An entry the pipeline skipped on this data: its reason, and empty outputs."""
    (eval_dir / name / "pred").mkdir(parents=True)
    write_skipped(eval_dir / name, reason)
    for file in ("per_image.csv", "confusion.csv", "threshold.csv", "history.csv"):
        (eval_dir / name / file).write_text("")


def test_several_classes_are_ranked_and_tested_on_per_image_miou(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.7, size=12)
    names = [
        # Higher foreground Dice but lower mIoU: with several classes mIoU decides.
        _model(tmp_path, "dicey", base - 0.2, base + 0.2, val=0.8),
        _model(tmp_path, "best", base, base - 0.1, val=0.9),
        _model(tmp_path, "twin", base + rng.normal(0, 0.005, size=12), base, val=0.85),
        _model(tmp_path, "otsu", base - 0.3, base - 0.3, val=0.5, test_loss=None),
    ]
    _skipped(tmp_path, "sam_point")
    rows = comparison_rows([*names, "sam_point"], tmp_path)
    order = [r["model"] for r in rows]  # sorted by mIoU; "twin" and "best" are a hair apart
    assert set(order[:2]) == {"twin", "best"} and order[2:] == ["dicey", "otsu"]
    by = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows if r.get("reference")] == ["best"]  # on validation
    assert by["dicey"]["verdict"] == "significantly worse"
    assert by["otsu"]["verdict"] == "significantly worse"
    assert by["best"]["class_iou_n"] == [12, 11, 0]  # images where each class's IoU is defined
    text = headline(rows)
    assert text.startswith("Reference: best, the best validation mIoU (0.900)")
    assert "paired Wilcoxon on per-image mIoU" in text
    assert "The classical baseline (multi-Otsu) scores" in text
    assert fmt("miou", rows[0]).endswith("[0.600, 0.800]")
    assert pareto_front(rows, "train_seconds")[0] == rows[0]["model"]  # all cost the same


def test_skipped_entries_have_no_row_and_their_files_are_never_read(tmp_path):
    _model(tmp_path, "unet", [0.5, 0.6], [0.5, 0.6])
    _skipped(tmp_path, "sam_point")
    (tmp_path / "sam_point" / "per_image.csv").write_bytes(b"\x00\xff not a table")
    assert skipped_entries(["unet", "sam_point"], tmp_path) == {"sam_point": SKIP_REASON}
    rows = comparison_rows(["unet", "sam_point"], tmp_path)
    assert [r["model"] for r in rows] == ["unet"]


def test_the_per_class_table_gives_each_class_its_interval_and_images():
    row = {"model": "unet", **_several(), "class_iou_n": [12, 11, 0]}
    assert class_iou_cell(row, 0) == "0.900 [0.850, 0.950] (n=12)"
    assert class_iou_cell(row, 2) == "n/a (n=0)"  # phase_b never in a mask: undefined
    table = class_iou_markdown([row]).splitlines()
    assert table[0] == "| model | substrate | phase_a | phase_b |"
    assert table[2].startswith("| unet | 0.900 [0.850, 0.950] (n=12) | 0.500 [0.400, 0.600]")


def test_the_two_class_table_and_csv_keep_their_columns():
    from segbench.comparison import COLUMNS, table_columns
    from segbench.reportcsv import CSV_FIELDS

    assert table_columns("dice") is COLUMNS and csv_fields("dice") is CSV_FIELDS
    several = csv_fields("miou", CLASSES)
    assert several[:2] == ["model", "score"] and "threshold" not in several
    assert several[several.index("score_metric") + 2] == "miou"
    assert {"test_loss", "num_classes", "iou_phase_a", "iou_phase_a_ci_low"} <= set(several)


def test_galleries_of_several_classes_pick_by_miou():
    rows = [{"id": f"i{k}", "miou": m} for k, m in enumerate([0.9, 0.2, 0.5])]
    picks = pick_examples(rows, 2, "miou")
    assert list(picks) == ["best", "worst"]  # mIoU is defined on every image
    assert [r["id"] for r in picks["best"]] == ["i0", "i2"]
    assert [r["id"] for r in picks["worst"]] == ["i1"]


def test_class_panels_tint_each_class_and_keep_a_colour_image_in_colour():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[..., 2] = 200  # a blue photograph
    ref = np.zeros((20, 30), dtype=np.uint8)
    ref[5:15, 5:15] = 1
    ref[0, 0] = IGNORE
    pred = np.full((20, 30), 2, dtype=np.uint8)
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    panel = figures.class_panel(image, ref, pred, colors, width=30)
    assert panel.shape == (20, 3 * 30 + 8, 3)
    left, middle, right = panel[:, :30], panel[:, 34:64], panel[:, 68:]
    assert (left == [0, 0, 200]).all()  # the image itself, in colour
    assert (middle[10, 10] == [128, 0, 100]).all()  # phase_a tinted red over the blue
    assert (middle[18, 28] == [0, 0, 200]).all()  # background untinted
    assert (middle[0, 0] == [0, 0, 200]).all()  # ignored pixel untinted
    assert (right[10, 10] == [0, 128, 100]).all()  # predicted phase_b, green


def test_the_confusion_figure_normalises_rows_and_keeps_a_class_absent_from_the_reference(
    tmp_path,
):
    matrix = np.array([[90, 10, 0], [5, 5, 0], [0, 0, 0]])
    path = figures.confusion_matrix(matrix, CLASSES, tmp_path / "c.png", title="m")
    with Image.open(path) as png:
        assert png.width > 100 and png.height > 100


def test_a_damaged_confusion_file_names_itself_and_its_stage(tmp_path):
    write_csv(tmp_path / "confusion.csv", [{"reference": "substrate", "x": 1}], ["reference", "x"])
    with pytest.raises(SegbenchError, match=r"confusion\.csv: not a confusion matrix.*evaluate@m"):
        read_confusion(tmp_path, CLASSES, stage="evaluate@m")


# --- a report built by the real functions on three classes ----------------------------------

# Twelve images of two phases on a substrate: six train, two val, four test.
PHASES = {
    "data": {
        "synthetic": {"domain": "phases", "n_images": 12},
        "split": {"train": 0.5, "val": 0.17, "test": 0.33},
    },
    "train": {"epochs": 1},
}


@pytest.fixture(scope="module")
def phases_report(tmp_path_factory):
    """Otsu (multi-Otsu) and a one-epoch U-Net, trained and evaluated on the shrunk three-class
    data, and a zero-shot SAM entry that the pipeline skipped: ``(reports dir, eval dir)``."""
    from segbench.evaluate import evaluate
    from segbench.fetch import fetch
    from segbench.prepare import prepare
    from segbench.report import report
    from segbench.training import train

    root = tmp_path_factory.mktemp("phases_report")
    raw = deep_update(deep_update(real_params_raw(), SHRINK), PHASES)
    params = parse_params(only_models(raw, ["otsu", "unet", "sam_point"]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(root / "mlflow.db"))
        mp.setenv("DVC_ROOT", str(root))
        fetch(params, root / "raw")
        prepare(params.prepare, root / "raw", root / "tiles")
        for m in ("otsu", "unet"):
            train(m, params, root / "tiles", root / "models" / m)
            evaluate(root / "models" / m, params, root / "raw", root / "eval" / m)
        _skipped(root / "eval", "sam_point")
        report(params, raw_dir=root / "raw", eval_dir=root / "eval", out_dir=root / "reports")
    return root / "reports", root / "eval"


@pytest.mark.slow
def test_the_report_of_several_classes_has_every_part(phases_report):
    out, _ = phases_report
    html = (out / "report.html").read_text()
    assert "Reference: " in html and "per-image mIoU" in html
    assert '<th class="score">mIoU [95% CI]</th>' in html and 'class="dice"' not in html
    # The per-class IoU table: one column per class, one row per model.
    table = html.split('id="class-iou"')[1].split("</table>")[0]
    assert [f"<th>{c}</th>" in table for c in CLASSES] == [True] * 3
    assert 'data-model="otsu"' in table and 'data-model="unet"' in table
    assert table.count("(n=4)") == 2 * 3  # four test images, each class in each
    # A confusion matrix per model, drawn and embedded.
    for m in ("otsu", "unet"):
        assert (out / "figures" / f"confusion_{m}.png").is_file()
        assert f'alt="{m}: confusion matrix" src="data:image/png;base64,' in html
    # Galleries coloured per class, with their legend.
    legend = html.split('id="class-legend"')[1].split("</p>")[0]
    assert all(c in legend for c in CLASSES) and "#e6194b" in legend
    assert (out / "figures" / "legend.png").is_file()
    assert "mIoU 0." in html.split('id="galleries"')[1]
    # The study's columns, and the note on its mPA.
    study = html.split('id="study-table"')[1].split("</table>")[0]
    for title in ("test loss", "mIoU", "mPA", "devices", "epochs", "batch", "training time"):
        assert f"<th>{title}</th>" in study
    assert "cpu ×1" in study and "n/a" in study  # Otsu trains no loss
    note = html.split('id="mpa-note"')[1].split("</dd>")[0]
    assert "TP/(TP+FP+FN)" in note and "TP/(TP+FN)" in note and "left out" in note
    # The skipped entry, listed with its reason, and nowhere else.
    skipped = html.split('id="skipped"')[1].split("</div>")[0]
    assert "sam_point" in skipped and SKIP_REASON in skipped
    assert 'data-model="sam_point"' not in html


@pytest.mark.slow
def test_the_summary_and_csv_of_several_classes(phases_report):
    out, _ = phases_report
    summary = (out / "summary.md").read_text()
    assert "| model | mIoU [95% CI] | val. score | Δ vs reference [95% CI] |" in summary
    assert "| model | substrate | phase_a | phase_b |" in summary
    study = "| model | test loss | mIoU | mPA | devices | epochs | batch | training time |"
    assert study in summary
    assert "Not run on this data." in summary and "`sam_point`: " + SKIP_REASON in summary
    assert "![otsu: confusion matrix](figures/confusion_otsu.png)" in summary
    assert "![class colours](figures/legend.png)" in summary
    table = rows_from_csv(read_csv(out / "comparison.csv"))
    assert {r["model"] for r in table} == {"otsu", "unet"}
    assert table[0]["miou"] >= table[1]["miou"]  # ranked on mIoU
    assert all(r["num_classes"] == 3 and r["iou_phase_a_n"] == 4 for r in table)
    terminal = terminal_table(table).splitlines()
    assert terminal[0].split()[:3] == ["model", "mIoU", "[95%"]


def test_a_colour_report_shows_its_images_in_colour(tmp_path):
    """RGB data (the parking domain), evaluated by hand as a perfect model would be: the
    galleries keep the photograph's colour."""
    from segbench.fetch import fetch
    from segbench.report import report

    raw = deep_update(
        deep_update(real_params_raw(), SHRINK),
        {"data": {"synthetic": {"domain": "parking", "n_images": 10, "height": 96, "width": 128}}},
    )
    params = parse_params(only_models(raw, ["otsu"]))
    fetch(params, tmp_path / "raw")
    spec = read_classes(tmp_path / "raw")
    tests = [r for r in read_csv(tmp_path / "raw" / "manifest.csv") if r["split"] == "test"]
    model = tmp_path / "eval" / "otsu"
    (model / "pred").mkdir(parents=True)
    rows, confusion = [], np.zeros((3, 3), dtype=np.int64)
    for rec in tests:
        shutil.copyfile(tmp_path / "raw" / rec["mask"], model / "pred" / f"{rec['id']}.png")
        ref = read_mask(tmp_path / "raw" / rec["mask"], 3)
        row, counts = multiclass_row(ref, ref, 3, ignore_index=IGNORE)
        rows.append({"id": rec["id"], "score": row["miou"], **row})
        confusion += counts
    write_csv(model / "per_image.csv", rows, list(rows[0]))
    counts = [dict(zip(spec.names, line.tolist(), strict=True)) for line in confusion]
    write_csv(
        model / "confusion.csv",
        [{"reference": n, **c} for n, c in zip(spec.names, counts, strict=True)],
        ["reference", *spec.names],
    )
    write_csv(model / "history.csv", [], ["epoch", "train_loss", "val_loss", "val_dice"])
    write_json(
        model / "metrics.json",
        _several(class_names=list(spec.names), n_images=len(rows), test_loss=None),
    )
    report(
        unregistered(params),
        raw_dir=tmp_path / "raw",
        eval_dir=tmp_path / "eval",
        out_dir=tmp_path / "rep",
    )
    gallery = sorted((tmp_path / "rep" / "figures").glob("gallery_otsu_*.jpg"))
    assert gallery
    with Image.open(gallery[0]) as jpeg:
        photo = np.asarray(jpeg.convert("RGB"))[:, :200].astype(int)
    spread = np.abs(photo - photo.mean(axis=2, keepdims=True)).mean()
    assert spread > 2  # the channels differ (a grey image, through JPEG, stays under 1)
    assert "Images: rgb (colour)" in (tmp_path / "rep" / "report.html").read_text()
