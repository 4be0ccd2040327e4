"""End to end: `dvc repro` on a shrunk params.yaml in a temporary copy of the repository."""

import json
import subprocess
import sys

import mlflow
import pytest

from segbench.io import read_json
from tests.conftest import venv_env

pytestmark = pytest.mark.slow


def dvc(repo, *args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=venv_env(),
        capture_output=True,
        text=True,
    )
    if check and proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_prefect_flow_then_dvc_end_to_end(repo_copy, mlflow_store, prefect_server):
    # The first run goes through the Prefect flow: DVC's stages as Prefect tasks, in graph order.
    from prefect.client.orchestration import get_client

    from segbench.dag import stage_order
    from tests.test_flow import load_flow_module

    metrics = load_flow_module().pipeline(root=str(repo_copy))
    assert set(metrics) == {"eval/otsu/metrics.json", "eval/unet/metrics.json"}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    done = sorted(
        (r for r in runs if r.state and r.state.is_completed()), key=lambda r: r.start_time
    )
    order = stage_order(repo_copy)
    assert [r.name for r in done if r.name in order] == order

    # dvc metrics show lists both models' test metrics.
    shown = json.loads(dvc(repo_copy, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]  # the workspace entry
    for model in ("otsu", "unet"):
        values = files[f"eval/{model}/metrics.json"]["data"]
        assert 0 <= values["dice"] <= 1 and values["n_images"] == 1

    # The report exists and compares both models.
    html = (repo_copy / "reports" / "report.html").read_text()
    assert "unet" in html and "otsu" in html and "data:image/png;base64," in html
    assert "| unet |" in (repo_copy / "reports" / "summary.md").read_text()

    # MLflow holds the U-Net run with params, per-epoch and test metrics, and the checkpoint.
    run_id = read_json(repo_copy / "models" / "unet" / "mlflow.json")["run_id"]
    mlflow.set_tracking_uri(mlflow_store)
    run = mlflow.get_run(run_id)
    assert run.data.params["train.epochs"] == "2"
    assert {"val_dice", "test_dice", "test_iou"} <= set(run.data.metrics)
    assert run.data.tags["dvc_stage"] == "train@unet" and run.data.tags["git_commit"] != "unknown"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model")}
    assert "model/weights.pt" in artifacts

    # A second repro does nothing and says so.
    again = dvc(repo_copy, "repro")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()

    # An experiment with one knob changed re-runs only what depends on it.
    exp = dvc(repo_copy, "exp", "run", "-S", "train.epochs=1")
    assert "Running stage 'train@unet'" in exp.stdout
    assert "Running stage 'fetch'" not in exp.stdout
    assert "Running stage 'prepare'" not in exp.stdout


def test_bad_params_fail_the_stage_cleanly(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.001", "lr: -0.001"))
    proc = dvc(repo_copy, "repro", "fetch", check=False)
    assert proc.returncode != 0
    assert "train.lr" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (repo_copy / "data" / "raw").exists()


def test_whole_pipeline_on_a_folder_of_16_bit_tiffs(repo_copy, tmp_path):
    from segbench.io import read_csv
    from tests.datasets import write_tiff_dataset

    data = write_tiff_dataset(tmp_path / "tiffs", 12, height=192, width=256)
    exp = dvc(
        repo_copy,
        "exp",
        "run",
        "-S",
        "data.source=folder",
        "-S",
        f"data.path={data}",
        "-S",
        "prepare.normalize.mode=percentile",
        "-S",
        "train.epochs=1",
    )
    assert "Running stage 'fetch'" in exp.stdout and "Running stage 'report'" in exp.stdout
    summary = read_json(repo_copy / "data" / "raw" / "summary.json")
    assert summary["n_images"] == 12 and summary["bit_depths"] == {"16": 12}
    tiles = read_csv(repo_copy / "data" / "tiles" / "manifest.csv")
    assert float(tiles[0]["hi"]) < 4200  # the 12-bit signal's own range
    metrics = read_json(repo_copy / "eval" / "unet" / "metrics.json")
    assert metrics["n_images"] == summary["splits"]["test"] and 0 <= metrics["dice"] <= 1
    html = (repo_copy / "reports" / "report.html").read_text()
    assert "unet" in html and "otsu" in html
