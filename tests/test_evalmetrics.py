"""The evaluation directory's typed files: ``metrics.json`` written and read through one schema
(the committed files round-trip byte for byte), and a damaged ``metrics.json`` or
``per_image.csv`` stops the comparison, the report and the ``segbench report`` command with one
line naming the file and the stage that rewrites it."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from segbench.comparison import comparison_rows
from segbench.errors import SegbenchError
from segbench.evalmetrics import EvalMetrics, read_per_image
from segbench.io import read_json, write_csv, write_json
from segbench.metrics import METRICS, summarize
from tests.conftest import REPO, only_models, real_params_raw

RERUN = "re-run `dvc repro evaluate@unet`"


def example_metrics(**changes) -> dict:
    """A complete ``metrics.json`` as evaluate writes it (undefined figures as NaN), with
    ``changes`` written over it."""
    out: dict = {"n_images": 12}
    for name in METRICS:
        out |= {name: 0.8, f"{name}_std": 0.05, f"{name}_n": 12}
    out |= {
        "n_empty_reference": 0,
        "empty_fpr": math.nan,
        "empty_with_fp": 0,
        "n_empty_prediction": 0,
        "dice_ci_low": 0.75,
        "dice_ci_high": 0.85,
        "iou_ci_low": 0.65,
        "iou_ci_high": 0.75,
        "threshold": 0.5,
        "threshold_tuned": False,
        "min_area": 0,
        "blend": "gaussian",
        "small_test_set": False,
        "params_total": 1000,
        "params_trainable": 1000,
        "train_seconds": 1.5,
        "device_count": 1,
        "train_device": "cpu",
        "train_peak_memory_mb": 100.0,
        "images_per_second": 10.0,
        "peak_memory_mb": 100.0,
        "device": "cpu",
        "oracle_prompts": False,
        "random_init": False,
    }
    return out | changes


def _eval_dir(root, name="unet", metrics=None, per_image=None):
    """``root/eval/<name>`` with a metrics file and a per-image table (two images)."""
    folder = root / "eval" / name
    folder.mkdir(parents=True)
    write_json(folder / "metrics.json", example_metrics() if metrics is None else metrics)
    rows = per_image or [
        {"id": "a", "score": 0.9, "dice": 0.9, "fp": 3},
        {"id": "b", "score": 0.0, "dice": "nan", "fp": 0},
    ]
    write_csv(folder / "per_image.csv", rows, list(rows[0]))
    return folder


def test_summarize_gives_the_schemas_first_keys_in_its_order():
    """evaluate's dict starts with summarize's keys; the schema lists them in the same order,
    so the file keeps its key order (and its DVC hash) when written through the schema."""
    row = {m: 0.5 for m in METRICS} | {"fpr": 0.0, "tp": 1, "fp": 0, "fn": 1, "tn": 2}
    keys = list(summarize([row, row]))
    assert list(EvalMetrics.model_fields)[: len(keys)] == keys


def test_nan_is_written_as_null_and_the_tuned_figure_only_when_given(tmp_path):
    record = EvalMetrics.model_validate(example_metrics(dice_ci_low=math.nan))
    text = record.write(tmp_path).read_text()
    on_disk = json.loads(text)
    assert on_disk["dice_ci_low"] is None and on_disk["empty_fpr"] is None
    assert list(on_disk) == list(example_metrics())  # the writer's keys, in its order
    assert "val_dice_at_threshold" not in on_disk
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
    again = EvalMetrics.read(tmp_path, stage="evaluate@unet")
    assert again == record and again.val_dice_at_threshold is None
    tuned = EvalMetrics.model_validate(example_metrics(val_dice_at_threshold=0.8))
    assert read_json(tuned.write(tmp_path))["val_dice_at_threshold"] == 0.8


def test_a_key_evaluate_does_not_declare_fails_the_writer():
    with pytest.raises(ValueError, match="new_metric"):
        EvalMetrics.model_validate(example_metrics(new_metric=1.0))


@pytest.mark.parametrize(
    "path", sorted(REPO.glob("eval/*/metrics.json")), ids=lambda p: p.parent.name
)
def test_the_committed_metrics_files_read_and_rewrite_byte_for_byte(path, tmp_path):
    record = EvalMetrics.read(path.parent, stage=f"evaluate@{path.parent.name}")
    assert record.write(tmp_path).read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda m: json.dumps(m | {"dice": "0.8"}), "dice: Input should be a valid number"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "dice"}), "missing key dice"),
        (lambda m: json.dumps([m]), "a JSON object of metric names and values is expected"),
        (lambda m: json.dumps(m)[:-20], "not valid JSON"),
        (lambda m: json.dumps(m | {"n_images": 12.5}), "n_images: Input should be a valid int"),
        (lambda m: json.dumps(m | {"oracle_prompts": 0}), "oracle_prompts: Input should be a"),
        (lambda m: json.dumps(m | {"dicee": 0.8}), "dicee: unknown key"),
        (lambda m: json.dumps(m).replace("10.0", "Infinity"), "images_per_second: Input should"),
    ],
    ids=["text", "missing", "list", "truncated", "float_count", "int_flag", "unknown", "inf"],
)
def test_a_damaged_metrics_file_is_one_line_naming_it(damage, why, tmp_path):
    folder = _eval_dir(tmp_path)
    path = folder / "metrics.json"
    metrics = example_metrics(empty_fpr=None)
    path.write_text(damage(metrics))
    with pytest.raises(SegbenchError) as info:
        comparison_rows(["unet"], tmp_path / "eval")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and why in message, message
    assert message.endswith(RERUN) and "\n" not in message


def test_a_missing_metrics_file_says_which_stage_writes_it(tmp_path):
    folder = _eval_dir(tmp_path, name="ensemble")
    (folder / "metrics.json").unlink()
    with pytest.raises(SegbenchError, match=r"metrics\.json: no such file; run `dvc repro "):
        comparison_rows(["ensemble"], tmp_path / "eval", ensembles=["ensemble"])
    with pytest.raises(SegbenchError, match=r"evaluate_ensemble@ensemble`$"):
        comparison_rows(["ensemble"], tmp_path / "eval", ensembles=["ensemble"])


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        ([{"id": "a", "score": 0.9, "iou": 0.9}], "no dice column (found id, score, iou)"),
        ([{"id": "a", "dice": 0.9}], "no score column (found id, dice)"),
        ([{"name": "a", "score": 0.9, "dice": 0.9}], "no id column (found name, score, dice)"),
        (
            [{"id": "a", "score": 0.9, "dice": 0.9}, {"id": "b", "score": 0.8, "dice": "high"}],
            "line 3: dice: 'high' is not",
        ),
        ([{"id": "", "score": 0.9, "dice": 0.9}], "line 2: id: empty"),
    ],
    ids=["no_dice", "no_score", "no_id", "text", "empty_id"],
)
def test_a_damaged_per_image_table_is_one_line_naming_it(rows, why, tmp_path):
    # Two models, so the comparison reads every per-image table.
    _eval_dir(tmp_path, name="otsu", metrics=example_metrics(dice=0.5))
    folder = _eval_dir(tmp_path, per_image=rows)
    with pytest.raises(SegbenchError) as info:
        comparison_rows(["unet", "otsu"], tmp_path / "eval")
    message = str(info.value)
    assert message.startswith(str(folder / "per_image.csv")) and why in message, message
    assert message.endswith(RERUN) and "\n" not in message


def test_per_image_rows_are_converted_and_a_short_row_named(tmp_path):
    folder = _eval_dir(tmp_path, per_image=[{"id": "a", "dice": 0.9, "fp": 3}])
    path = folder / "per_image.csv"
    path.write_text(path.read_text() + "b,nan,0\nc,\n")
    with pytest.raises(SegbenchError, match=r"line 4: fp: no value"):
        read_per_image(path, stage="evaluate@unet", columns=("id", "dice", "fp"))
    path.write_text("id,dice,fp\na,0.9,3\nb,,0\n")
    rows = read_per_image(path, stage="evaluate@unet", columns=("id", "dice", "fp"))
    assert rows[0] == {"id": "a", "dice": 0.9, "fp": 3} and math.isnan(rows[1]["dice"])
    path.write_text("id,dice,fp\na,0.9,3.5\n")
    with pytest.raises(SegbenchError, match=r"fp: '3\.5' is not an integer"):
        read_per_image(path, stage="evaluate@unet", columns=("id", "dice", "fp"))


@pytest.mark.parametrize("damage", ['{"dice": "0.8"}', "[1, 2]", "{not json"])
def test_the_report_command_stops_with_one_error_line(damage, tmp_path):
    """As a real process, as `dvc repro report` runs it: exit 2, one line, no traceback."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(only_models(real_params_raw(), ["unet"])))
    folder = _eval_dir(tmp_path)
    (folder / "metrics.json").write_text(damage)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segbench.cli",
            "report",
            "--params",
            str(params),
            "--raw",
            str(tmp_path / "raw"),
            "--eval",
            str(tmp_path / "eval"),
            "--out",
            str(tmp_path / "reports"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {folder / 'metrics.json'}: {lines[0].split(': ', 2)[2]}"]
    assert lines[0].endswith(RERUN)
    assert not (tmp_path / "reports").exists()
