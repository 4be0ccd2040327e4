"""End to end: `dvc repro` on a shrunk params.yaml in a temporary copy of the repository."""

import json
import subprocess
import sys

import mlflow
import pytest
import yaml

from segbench.io import read_csv, read_json
from tests.browser import browser_available, check_report_in_browser, overflow
from tests.conftest import real_params_raw, venv_env

pytestmark = pytest.mark.slow

# Every entry of the real params.yaml: the networks, the ensemble, Otsu and the SAM rows.
ALL_MODELS = tuple(real_params_raw()["models"]) + tuple(real_params_raw()["ensembles"])
SAM_ORACLE = ("sam_point", "sam_points", "sam_box")


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

    # train@sam_lora takes the sweep's best configuration (promote stage).
    params_file = repo_copy / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["models"]["sam_lora"]["from_sweep"] = True
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    metrics = load_flow_module().pipeline(root=str(repo_copy))
    assert set(metrics) == {f"eval/{m}/metrics.json" for m in ALL_MODELS}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    done = sorted(
        (r for r in runs if r.state and r.state.is_completed()), key=lambda r: r.start_time
    )
    order = stage_order(repo_copy)
    assert [r.name for r in done if r.name in order] == order

    # dvc metrics show lists every model's test metrics.
    shown = json.loads(dvc(repo_copy, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]  # the workspace entry
    for model in ALL_MODELS:
        values = files[f"eval/{model}/metrics.json"]["data"]
        assert 0 <= values["dice"] <= 1 and values["n_images"] == 1

    # The ensemble's weights were chosen on validation: never worse there than a member.
    ens = read_json(repo_copy / "ensembles" / "ensemble" / "metrics.json")
    assert ens["val_dice"] >= max(ens["val_dice_unet"], ens["val_dice_segformer"])

    # The report exists, compares every model, and has every section.
    html = (repo_copy / "reports" / "report.html").read_text()
    assert all(f'<tr data-model="{m}"' in html for m in ALL_MODELS)
    assert all(f'<section class="gallery" data-model="{m}">' in html for m in ALL_MODELS)
    for section in ("comparison", "definitions", "pareto-plot", "training", "thresholds"):
        assert f'id="{section}"' in html, section
    assert "Small test set." in html  # one test image in the shrunk data
    # The report renders in a real browser: no errors, no requests, every row and picture shown.
    if browser_available():  # False without Chromium; a failure under SEGBENCH_REQUIRE_BROWSER=1
        seen = check_report_in_browser(
            repo_copy / "reports" / "report.html", repo_copy.parent / "report_e2e.png"
        )
        assert seen["console_errors"] == seen["page_errors"] == seen["failed_requests"] == []
        assert seen["requests"] == []  # self-contained
        assert sorted(seen["models"]) == sorted(ALL_MODELS)
        assert sorted(g["model"] for g in seen["galleries"]) == sorted(ALL_MODELS)
        for gallery in seen["galleries"]:
            assert 0 < gallery["n_decoded"] == gallery["n_images"], gallery["model"]
            assert all(img["visible"] for img in gallery["images"]), gallery["model"]
        assert all(img["decoded"] and img["embedded"] for img in seen["images"])
        assert overflow(seen, "comparison") == []  # every model's row fits a 1280 px window
    # The sweep ran its grid (conftest.SHRINK: two one-epoch trials) on a local Ray, and
    # train@sam_lora trained with the best trial's values; nothing else took them.
    trials = read_csv(repo_copy / "sweeps" / "trials.csv")
    assert sorted(t["rank"] for t in trials) == ["2", "4"]
    best = read_json(repo_copy / "sweeps" / "best.json")
    lora = read_json(repo_copy / "models" / "sam_lora" / "config.json")
    assert best["model"] == "sam_lora" and best["config"]["train.lr"] == 0.003
    assert lora["params"]["rank"] == best["config"]["model.rank"]
    assert lora["train"]["lr"] == 0.003 != raw["train"]["lr"]
    assert read_json(repo_copy / "promoted" / "unet.json") == {"from_sweep": False}
    assert read_json(repo_copy / "models" / "unet" / "config.json")["train"]["lr"] == 0.001
    assert 'id="sweep"' in html and 'class="sweep-trials"' in html
    # The threshold tuned on validation is recorded with the test metrics.
    unet_eval = read_json(repo_copy / "eval" / "unet" / "metrics.json")
    assert unet_eval["threshold_tuned"] and 0 < unet_eval["threshold"] < 1
    # DVC knows the plots: validation curves, threshold tuning, Dice against cost.
    plots = json.loads(dvc(repo_copy, "plots", "show", "--json").stdout)
    assert not plots.get("errors")
    assert "Test Dice against training time" in plots["data"]
    assert "reports/plots/history/unet.csv" in plots["data"]
    summary = (repo_copy / "reports" / "summary.md").read_text()
    assert all(f"| {m} |" in summary for m in ALL_MODELS)
    # SAM's rows carry their notes, and the banners explain them.
    main_table = summary.split("## Comparison on the test split")[1].split("### Every metric")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in main_table.splitlines()}
    for m in ("sam_point", "sam_points", "sam_box", "sam_auto", "sam_decoder", "sam_lora"):
        assert "random-init SAM" in rows[m]
        assert ("oracle prompts" in rows[m]) is (m in SAM_ORACLE)
    assert "**Oracle prompts.**" in summary and "**Random-initialised SAM.**" in summary
    assert "Oracle prompts." in html and "Random-initialised SAM." in html
    assert not summary.split("Best test Dice: ")[1].startswith(SAM_ORACLE)
    # Fine-tuned SAM saved only what it trained: no frozen encoder weight in its file.
    assert read_json(repo_copy / "models" / "sam_decoder" / "metrics.json")["params_trainable"] > 0
    assert "ensemble = " in summary and "weights chosen on" in summary

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

    # An experiment with one model's knob changed re-runs only what depends on it.
    exp = dvc(repo_copy, "exp", "run", "-S", "models.otsu.smooth_sigma=2.0")
    assert "Running stage 'train@otsu'" in exp.stdout
    # (ensemble@ensemble re-runs: it depends on the whole models/ directory, see dvc.yaml.)
    for stage in ("fetch", "prepare", "sweep", "train@unet", "train@segformer"):
        assert f"Running stage '{stage}'" not in exp.stdout


def test_bad_params_fail_the_stage_cleanly(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.001", "lr: -0.001"))
    proc = dvc(repo_copy, "repro", "fetch", check=False)
    assert proc.returncode != 0
    assert "train.lr" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (repo_copy / "data" / "raw").exists()
