"""The report's objects section (two classes): object F1, panoptic quality and count error per
model with their intervals, how objects were found and matched, the size histograms and the
count scatter; absent with several classes; and the statement of test-time augmentation.

Evaluation directories are written by hand in evaluate's formats (``metrics.json``,
``per_image.csv`` with the object columns, ``objects.csv``); the full reports are built by
:func:`segbench.report.report` on fetched synthetic data, with no model trained."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import objectfigures
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.evalobjects import OBJECT_ROW_FIELDS
from segbench.io import read_csv, read_mask, write_csv, write_json, write_mask
from segbench.objects import OBJECT_METRIC_FIELDS
from segbench.reportobjects import (
    count_notes,
    object_cell,
    object_sections,
    settings_text,
    tta_note,
)
from tests.conftest import SHRINK, deep_update, only_models, real_params_raw, unregistered
from tests.test_evalmetrics import example_metrics
from tests.test_report_multiclass import _several


def object_metrics(**changes) -> dict:
    """``metrics.json``'s object figures of a two-class model, as evaluate writes them."""
    out = {
        "tta": "none",
        "objects_reference": "components",
        "objects_split": "none",
        "objects_iou": 0.5,
        "obj_precision": 0.9,
        "obj_recall": 0.75,
        "obj_f1": 0.812,
        "obj_f1_std": 0.1,
        "obj_f1_n": 6,
        "obj_f1_ci_low": 0.7,
        "obj_f1_ci_high": 0.9,
        "pq": 0.654,
        "pq_std": 0.1,
        "pq_n": 6,
        "pq_ci_low": 0.55,
        "pq_ci_high": 0.75,
        "sq": 0.8,
        "rq": 0.81,
        "count_mae": 1.5,
        "count_mae_ci_low": 0.83,
        "count_mae_ci_high": 2.17,
        "count_bias": -1.5,
        "count_bias_ci_low": -2.17,
        "count_bias_ci_high": -0.83,
        "n_ref_objects": 21,
        "n_pred_objects": 12,
    }
    return out | changes


NO_OBJECTS = object_metrics(  # a model that predicts nothing on images without objects
    obj_precision=math.nan,
    obj_recall=0.0,
    obj_f1=math.nan,
    obj_f1_std=math.nan,
    obj_f1_n=0,
    obj_f1_ci_low=math.nan,
    obj_f1_ci_high=math.nan,
    pq=math.nan,
    pq_std=math.nan,
    pq_n=0,
    pq_ci_low=math.nan,
    pq_ci_high=math.nan,
    sq=math.nan,
    rq=math.nan,
    count_mae=0.0,
    count_mae_ci_low=0.0,
    count_mae_ci_high=0.0,
    count_bias=0.0,
    count_bias_ci_low=0.0,
    count_bias_ci_high=0.0,
    n_ref_objects=0,
    n_pred_objects=0,
)


def write_eval(
    folder: Path,
    ids: list[str],
    counts: list[tuple[int, int]],
    metrics: dict,
    *,
    ref_diameter: float = 12.0,
    pred_diameter: float = 10.0,
) -> Path:
    """``folder`` as evaluate writes a two-class model's directory (no masks): per-image Dice
    0.8 and the object counts ``counts`` ``[(reference, predicted)]`` per image of ``ids``,
    ``objects.csv`` with one row per object (every reference object of diameter
    ``ref_diameter``, predicted ``pred_diameter``, each a little larger than the last), and
    ``metrics.json`` from :func:`example_metrics` with ``metrics`` over it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, objects = [], []
    for image, (n_ref, n_pred) in zip(ids, counts, strict=True):
        tp = min(n_ref, n_pred)
        rows.append(
            {"id": image, "score": 0.8, "dice": 0.8, "fp": 0}
            | dict.fromkeys(OBJECT_METRIC_FIELDS, "nan")
            | {
                "n_ref_objects": n_ref,
                "n_pred_objects": n_pred,
                "obj_tp": tp,
                "obj_fp": n_pred - tp,
                "obj_fn": n_ref - tp,
                "count_diff": n_pred - n_ref,
            }
        )
        for source, n, size in (
            ("reference", n_ref, ref_diameter),
            ("prediction", n_pred, pred_diameter),
        ):
            for k in range(n):
                d = size * (1 + 0.1 * k)
                objects.append(
                    {
                        "image": image,
                        "source": source,
                        "object": k + 1,
                        "area": round(math.pi * d * d / 4),
                        "diameter": d,
                    }
                )
    write_csv(folder / "per_image.csv", rows, list(rows[0]))
    write_csv(folder / "objects.csv", objects, OBJECT_ROW_FIELDS)
    write_json(
        folder / "metrics.json",
        example_metrics(n_images=len(ids), score=0.8, val_score=0.8) | metrics,
    )
    return folder


IDS = [f"img{i:02d}" for i in range(6)]
COUNTS = [(3, 2), (4, 2), (2, 2), (5, 3), (3, 1), (4, 2)]  # 21 reference, 12 predicted


def test_the_cells_show_each_figure_with_its_interval_and_undefined_ones_as_n_a():
    row = {"model": "unet", **example_metrics(), **object_metrics()}
    assert object_cell("obj_f1", row) == "0.812 [0.700, 0.900] (n=6)"
    assert object_cell("obj_pr", row) == "0.900 / 0.750"
    assert object_cell("pq", row) == "0.654 [0.550, 0.750]"
    assert object_cell("sq_rq", row) == "0.800, 0.810"
    assert object_cell("count_mae", row) == "1.50 [0.83, 2.17]"
    assert object_cell("count_bias", row) == "-1.50 [-2.17, -0.83]"
    assert object_cell("totals", row) == "12 / 21"
    assert object_cell("notes", row | {"oracle_prompts": True}) == "oracle prompts"
    empty = {"model": "blank", **example_metrics(), **NO_OBJECTS}
    assert object_cell("obj_f1", empty) == "n/a (n=0)"
    assert object_cell("pq", empty) == "n/a"
    assert object_cell("sq_rq", empty) == "n/a, n/a"
    assert object_cell("obj_pr", empty) == "n/a / 0.000"
    assert object_cell("count_bias", empty) == "+0.00 [+0.00, +0.00]"
    one_image = row | {"pq_ci_low": None, "pq_ci_high": None}
    assert object_cell("pq", one_image) == "0.654"  # no interval from one image


def test_a_count_bias_is_named_only_when_its_interval_excludes_zero():
    under = {"model": "unet", **object_metrics()}
    even = {
        "model": "otsu",
        **object_metrics(count_bias=0.2, count_bias_ci_low=-0.5, count_bias_ci_high=0.9),
    }
    assert count_notes([under, even]) == [
        "unet predicts fewer objects than the reference holds: -1.50 [-2.17, -0.83] per image, "
        "an interval below 0."
    ]
    assert count_notes([even]) == ["No model's count-bias interval excludes 0."]
    over = even | {
        "model": "sam",
        "count_bias": 2.0,
        "count_bias_ci_low": 0.5,
        "count_bias_ci_high": 3,
    }
    assert "sam predicts more objects" in count_notes([over])[0]
    assert count_notes([even | {"count_bias_ci_low": None, "count_bias_ci_high": None}]) == []


def test_the_settings_say_where_objects_came_from_and_how_they_were_matched():
    rows = [{"model": "unet", **object_metrics()}]
    text = settings_text(rows)
    assert "8-connected components of the predicted mask." in text
    assert "Reference objects: the 8-connected components of the reference mask." in text
    assert "IoU exceeds 0.5" in text
    shed = [
        {
            "model": m,
            **object_metrics(
                objects_reference="instances",
                objects_split="watershed",
                objects_iou=0.6,
                objects_min_distance=7,
            ),
        }
        for m in ("a", "b")
    ]
    text = settings_text(shed)
    assert (
        "watershed" in text and "the data's instance labels" in text and "IoU exceeds 0.6" in text
    )
    assert "at least 7 px apart" in text
    assert not text.startswith("a, b:")  # one setting: said once
    mixed = settings_text([rows[0], shed[0]])
    assert mixed.startswith("unet: Predicted objects") and " a: Predicted objects" in mixed


def test_test_time_augmentation_is_stated_once_or_per_model():
    rows = [{"model": m, "tta": "none"} for m in ("unet", "otsu")]
    assert tta_note(rows) == "none (each image predicted once), for every model."
    d4 = [r | {"tta": "d4"} for r in rows]
    assert "the 8 dihedral transforms" in tta_note(d4) and "probabilities averaged" in tta_note(d4)
    mixed = tta_note([rows[1], {"model": "unet", "tta": "flips"}, {"model": "seg", "tta": "flips"}])
    assert mixed.startswith("otsu: none (each image predicted once); unet, seg: ")
    assert "unet, seg: horizontal and vertical flips (4 views" in mixed


def test_the_section_reads_each_models_objects_and_draws_both_figures(tmp_path):
    eval_dir, figs = tmp_path / "eval", tmp_path / "figures"
    figs.mkdir()
    write_eval(eval_dir / "unet", IDS, COUNTS, object_metrics())
    write_eval(eval_dir / "blank", IDS, [(0, 0)] * 6, NO_OBJECTS)
    write_eval(
        eval_dir / "sam_box",
        IDS,
        [(n, n + 1) for n, _ in COUNTS],
        object_metrics(oracle_prompts=True),
    )
    write_eval(eval_dir / "old", IDS, COUNTS, {})  # evaluated before objects were measured
    names = ["unet", "blank", "sam_box", "old"]
    plots, context = object_sections(names, eval_dir, figs, ensembles=())
    objects = context["objects"]
    assert [r["model"] for r in objects["rows"]] == ["unet", "blank", "sam_box"]
    assert objects["without"] == ["old"]
    assert objects["columns"][1] == "object F1 [95% CI] (n)"
    by = {r["model"]: cells for r, cells in zip(objects["rows"], objects["cells"], strict=True)}
    assert by["unet"][1:3] == ["0.812 [0.700, 0.900] (n=6)", "0.900 / 0.750"]
    assert by["blank"][1] == "n/a (n=0)" and by["blank"][7] == "0 / 0"
    assert by["sam_box"][-1] == "oracle prompts"
    table = objects["table_md"].splitlines()
    assert table[0].startswith("| model | object F1 [95% CI] (n) | object precision / recall | PQ")
    assert table[2].startswith(
        "| unet | 0.812 [0.700, 0.900] (n=6) | 0.900 / 0.750 | 0.654 [0.550, 0.750]"
    )
    assert "| n/a (n=0) |" in table[3]
    assert objects["count_notes"][0].startswith("unet predicts fewer objects")
    assert set(plots) == {"object_sizes", "object_counts"}
    for path in plots.values():
        with Image.open(path) as png:
            assert png.width > 200 and png.height > 200


def test_without_object_metrics_there_is_no_section(tmp_path):
    write_eval(tmp_path / "unet", IDS, COUNTS, {})  # several classes write none
    (tmp_path / "unet" / "objects.csv").unlink()  # and it is never read
    assert object_sections(["unet"], tmp_path, tmp_path) == ({}, {"objects": None})


def test_a_damaged_objects_file_names_itself_and_its_stage(tmp_path):
    write_eval(tmp_path / "unet", IDS, COUNTS, object_metrics())
    write_csv(
        tmp_path / "unet" / "objects.csv",
        [{"image": "a", "source": "ref", "diameter": 3}],
        ["image", "source", "diameter"],
    )
    with pytest.raises(SegbenchError, match=r"objects\.csv, line 2: not an object.*evaluate@unet"):
        object_sections(["unet"], tmp_path, tmp_path)
    (tmp_path / "unet" / "objects.csv").unlink()
    with pytest.raises(SegbenchError, match=r"objects\.csv: no such file.*evaluate_ensemble@unet"):
        object_sections(["unet"], tmp_path, tmp_path, ensembles=["unet"])
    write_eval(tmp_path / "unet", IDS, COUNTS, object_metrics())
    rows = read_csv(tmp_path / "unet" / "per_image.csv")
    rows[1]["n_pred_objects"] = "nan"
    write_csv(tmp_path / "unet" / "per_image.csv", rows, list(rows[0]))
    with pytest.raises(SegbenchError, match=r"per_image\.csv: image img01 has object counts"):
        object_sections(["unet"], tmp_path, tmp_path)


def test_the_size_bins_are_shared_and_logarithmic():
    edges = objectfigures.log_bins([np.array([2.0, 4.0]), np.array([50.0]), np.array([])], 10)
    assert len(edges) == 11 and edges[0] == 2.0 and edges[-1] >= 50.0
    ratios = edges[1:] / edges[:-1]
    assert np.allclose(ratios, ratios[0])  # equal widths on a log axis
    assert objectfigures.log_bins([np.array([]), np.array([])]) is None
    one = objectfigures.log_bins([np.array([5.0, 5.0])], 4)
    assert one[0] < 5.0 < one[-1]


# --- reports built by segbench.report.report on fetched data -------------------------------

BINARY = {
    "data": {"synthetic": {"n_images": 12}, "split": {"train": 0.34, "val": 0.16, "test": 0.5}}
}


def _hand_evaluated(root: Path, raw: dict, models: dict[str, dict], num_classes: int = 2):
    """Fetch ``raw``'s data under ``root/raw`` and write ``root/eval/<m>`` for each model of
    ``models`` ``{name: metrics over example_metrics}`` as a perfect model's evaluation (the
    reference masks as predictions), with objects where the metrics have them; the params."""
    from segbench.fetch import fetch

    params = parse_params(only_models(raw, list(models)))
    fetch(params, root / "raw")
    tests = [r for r in read_csv(root / "raw" / "manifest.csv") if r["split"] == "test"]
    ids = [r["id"] for r in tests]
    for i, (name, metrics) in enumerate(models.items()):
        folder = root / "eval" / name
        counts = [(k % 4 + 1, (k + i) % 4) for k in range(len(ids))]
        if metrics.get("n_pred_objects") == 0:
            counts = [(n, 0) for n, _ in counts]
        write_eval(folder, ids, counts, metrics, pred_diameter=8.0 + 4 * i)
        (folder / "pred").mkdir()
        for rec in tests:
            mask = read_mask(root / "raw" / rec["mask"], num_classes)
            if metrics.get("n_pred_objects") == 0:
                mask = np.zeros_like(mask)
            write_mask(folder / "pred" / f"{rec['id']}.png", mask, num_classes)
        write_csv(folder / "history.csv", [], ["epoch", "train_loss", "val_loss", "val_dice"])
    return params


@pytest.fixture(scope="module")
def binary_report(tmp_path_factory):
    """A two-class report of three hand-evaluated models: U-Net with objects and flips, Otsu
    predicting no object, and the oracle-prompted box SAM: its output directory."""
    from segbench.report import report

    root = tmp_path_factory.mktemp("objects_report")
    raw = deep_update(deep_update(real_params_raw(), SHRINK), BINARY)
    models = {
        "unet": object_metrics(tta="flips"),
        "otsu": NO_OBJECTS | {"n_ref_objects": 21, "obj_recall": 0.0},
        "sam_box": object_metrics(
            oracle_prompts=True, obj_f1=0.95, obj_f1_ci_high=0.99, tta="flips"
        ),
    }
    params = _hand_evaluated(root, raw, models)
    report(
        unregistered(params), raw_dir=root / "raw", eval_dir=root / "eval", out_dir=root / "reports"
    )
    return root / "reports"


def test_the_two_class_report_has_the_objects_section(binary_report):
    html = (binary_report / "report.html").read_text()
    section = html.split('<h2 id="objects">')[1].split("<h2")[0]
    table = section.split('id="objects-table"')[1].split("</table>")[0]
    unet = table.split('data-model="unet"')[1].split("</tr>")[0]
    assert "<td>0.812 [0.700, 0.900] (n=6)</td>" in unet and "<td>12 / 21</td>" in unet
    otsu = table.split('data-model="otsu"')[1].split("</tr>")[0]
    assert "<td>n/a (n=0)</td>" in otsu and "<td>0 / 21</td>" in otsu
    assert '<tr data-model="sam_box" class="oracle">' in table
    assert "<td>oracle prompts</td>" in table.split('data-model="sam_box"')[1].split("</tr>")[0]
    assert "connected components of the reference mask" in section and "IoU exceeds 0.5" in section
    assert "Kirillov et al. 2019" in section and "No paired test compares models" in section
    assert "unet predicts fewer objects than the reference holds" in section
    for plot in ("object-sizes-plot", "object-counts-plot"):
        assert f'id="{plot}" alt="' in section
        assert (
            section.split(f'id="{plot}"')[1].split(">")[0].count('src="data:image/png;base64,') == 1
        )
    for name in ("object_sizes.png", "object_counts.png"):
        assert (binary_report / "figures" / name).is_file()
    # Test-time augmentation: stated among the definitions, per model as they differ.
    tta = html.split('<dt id="tta">')[1].split("</dd>")[0]
    assert "unet, sam_box: horizontal and vertical flips (4 views" in tta
    assert "otsu: none (each image predicted once)" in tta
    assert "computed for two-class tasks" not in html


def test_the_two_class_summary_has_the_objects_section(binary_report):
    summary = (binary_report / "summary.md").read_text()
    section = summary.split("## Objects")[1].split("\n## ")[0]
    assert "| model | object F1 [95% CI] (n) |" in section
    assert "| otsu | n/a (n=0) |" in section
    assert "![object sizes, predicted against reference](figures/object_sizes.png)" in section
    assert "(figures/object_counts.png)" in section
    assert "Test-time augmentation: unet, sam_box: horizontal and vertical flips" in summary
    # comparison.csv carries the object figures and the TTA setting beside the table's.
    rows = {r["model"]: r for r in read_csv(binary_report / "comparison.csv")}
    assert rows["unet"]["tta"] == "flips" and rows["otsu"]["tta"] == "none"
    assert float(rows["unet"]["obj_f1"]) == pytest.approx(object_metrics()["obj_f1"])
    assert rows["otsu"]["obj_f1"] == "" and rows["otsu"]["n_pred_objects"] == "0"


def test_several_classes_have_no_objects_section_and_say_why(tmp_path):
    from segbench.fetch import fetch
    from segbench.report import report

    raw = deep_update(
        deep_update(real_params_raw(), SHRINK),
        {
            "data": {
                "synthetic": {"domain": "phases", "n_images": 12},
                "split": {"train": 0.5, "val": 0.17, "test": 0.33},
            }
        },
    )
    params = parse_params(only_models(raw, ["otsu"]))
    fetch(params, tmp_path / "raw")
    # evaluate's files for several classes: no object columns, objects.csv a header only.
    tests = [r for r in read_csv(tmp_path / "raw" / "manifest.csv") if r["split"] == "test"]
    model = tmp_path / "eval" / "otsu"
    (model / "pred").mkdir(parents=True)
    rows = []
    for rec in tests:
        shutil.copyfile(tmp_path / "raw" / rec["mask"], model / "pred" / f"{rec['id']}.png")
        rows.append(
            {"id": rec["id"], "score": 0.7, "miou": 0.7, "iou_0": 0.9, "iou_1": 0.5, "iou_2": 0.6}
        )
    write_csv(model / "per_image.csv", rows, list(rows[0]))
    write_csv(model / "objects.csv", [], OBJECT_ROW_FIELDS)
    names = ["substrate", "phase_a", "phase_b"]
    write_csv(
        model / "confusion.csv",
        [{"reference": n, **dict.fromkeys(names, 1)} for n in names],
        ["reference", *names],
    )
    write_csv(model / "history.csv", [], ["epoch", "train_loss", "val_loss", "val_dice"])
    write_json(model / "metrics.json", _several(n_images=len(rows), test_loss=None, tta="d4"))
    report(
        unregistered(params),
        raw_dir=tmp_path / "raw",
        eval_dir=tmp_path / "eval",
        out_dir=tmp_path / "rep",
    )
    html = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="objects"' not in html and "object_sizes" not in html
    objects = html.split('<dt id="objects-note">Objects</dt><dd>')[1].split("</dd>")[0]
    assert " ".join(objects.split()) == (
        "Object metrics (object F1, panoptic quality, count error) are computed for two-class "
        "tasks."
    )
    assert "the 8 dihedral transforms" in html.split('<dt id="tta">')[1].split("</dd>")[0]
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert (
        "## Objects" not in summary
        and "Object metrics are computed for two-class tasks." in summary
    )
    assert not (tmp_path / "rep" / "figures" / "object_sizes.png").exists()
