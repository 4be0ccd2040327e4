"""End to end: the whole pipeline of a shrunk params.yaml, run once through the Prefect flow (DVC's
stages as Prefect tasks) in a temporary copy of the repository; each test below checks one thing
it produced, so that one failure does not hide the others.

The tests share one run (a module fixture) and so one pytest-xdist worker (``xdist_group``,
``make test`` distributes by group). The last test changes the workspace (``dvc exp run``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml

from segbench.io import read_csv, read_json
from segbench.modelcard import ModelCard
from tests.browser import browser_available, check_report_in_browser, overflow
from tests.conftest import seeded_store, venv_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline_e2e")]

# The classical baseline, a network and the LoRA SAM that takes the sweep's best values: every
# stage kind of dvc.yaml but the ensemble's. Every other entry runs through `dvc repro` in a
# reference study (tests/test_study_run_*.py, make test-long) and the ensemble in
# tests/test_ensemble.py; each stage here costs the suite about 5 s (a DVC process and a
# Prefect task around the stage's own).
MODELS = ("otsu", "unet", "sam_lora")
ALL_MODELS = MODELS
SAM_ROWS = ("sam_lora",)


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


@dataclass
class Run:
    repo: Path
    metrics: dict  # what the flow returned: {metrics file: {name: value}}
    task_order: list[str]  # completed Prefect task runs, by start time
    mlflow_uri: str
    params: dict  # the params.yaml it ran with

    def html(self) -> str:
        return (self.repo / "reports" / "report.html").read_text()

    def summary(self) -> str:
        return (self.repo / "reports" / "summary.md").read_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory, prefect_server, small_params_raw_module) -> Run:
    """The Prefect flow over a repository copy whose sam_lora takes the sweep's best values."""
    from prefect.client.orchestration import get_client

    from segbench.workspace import commit, copy_repository
    from tests.conftest import REPO
    from tests.test_flow import load_flow_module

    root = tmp_path_factory.mktemp("e2e")
    repo = copy_repository(REPO, root / "repo")
    raw = small_params_raw_module
    raw["models"] = {name: raw["models"][name] for name in MODELS}
    raw["ensembles"] = {}
    raw["models"]["sam_lora"]["from_sweep"] = True  # the promote stage hands it the best trial
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    commit(repo, "shrink params")
    uri = seeded_store(root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DVC_ROOT", str(repo))
        metrics = load_flow_module().pipeline(root=str(repo))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    done = sorted(
        (r for r in runs if r.state and r.state.is_completed()), key=lambda r: r.start_time
    )
    return Run(repo, metrics, [r.name for r in done], uri, raw)


@pytest.fixture
def in_run_store(run, monkeypatch) -> Run:
    """``run``, with the stages this test starts logging to its MLflow store (the report stage
    registers its reference there, which the run's evaluations logged)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.mlflow_uri)
    return run


def test_the_flow_ran_every_stage_in_dvc_graph_order(run):
    from segbench.dag import stage_order

    order = stage_order(run.repo)
    assert [name for name in run.task_order if name in order] == order
    assert set(run.metrics) == {f"eval/{m}/metrics.json" for m in ALL_MODELS}


def test_dvc_metrics_show_lists_every_model(run):
    shown = json.loads(dvc(run.repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]  # the workspace entry
    for model in ALL_MODELS:
        values = files[f"eval/{model}/metrics.json"]["data"]
        assert 0 <= values["dice"] <= 1 and values["n_images"] == 1


def test_every_evaluation_directory_describes_its_row(run):
    for model in ALL_MODELS:
        card = ModelCard.read(run.repo / "eval" / model)
        assert card.name == model
        assert (run.repo / "eval" / model / "history.csv").is_file()


def test_the_report_compares_every_model_in_every_section(run):
    html = run.html()
    assert all(f'<tr data-model="{m}"' in html for m in ALL_MODELS)
    assert all(f'<section class="gallery" data-model="{m}">' in html for m in ALL_MODELS)
    for section in ("comparison", "definitions", "pareto-plot", "training", "thresholds"):
        assert f'id="{section}"' in html, section
    assert "Small test set." in html  # one test image in the shrunk data
    summary = run.summary()
    assert all(f"| {m} |" in summary for m in ALL_MODELS)


@pytest.mark.browser
def test_the_report_renders_in_a_browser_without_errors(run):
    if not browser_available():  # a failure instead under SEGBENCH_REQUIRE_BROWSER=1
        pytest.skip("no browser")
    seen = check_report_in_browser(run.repo / "reports" / "report.html", run.repo.parent / "r.png")
    assert seen["console_errors"] == seen["page_errors"] == seen["failed_requests"] == []
    assert seen["requests"] == []  # self-contained
    assert sorted(seen["models"]) == sorted(ALL_MODELS)
    assert sorted(g["model"] for g in seen["galleries"]) == sorted(ALL_MODELS)
    for gallery in seen["galleries"]:
        assert 0 < gallery["n_decoded"] == gallery["n_images"], gallery["model"]
        assert all(img["visible"] for img in gallery["images"]), gallery["model"]
    assert all(img["decoded"] and img["embedded"] for img in seen["images"])
    assert overflow(seen, "comparison") == []  # the main table fits a 1280-px window


def test_the_sweep_ran_its_grid_and_only_the_entry_that_asked_took_the_best(run):
    # conftest.SHRINK: two one-epoch trials of the tiny LoRA SAM, on a local Ray.
    trials = read_csv(run.repo / "sweeps" / "trials.csv")
    assert sorted(t["rank"] for t in trials) == ["2", "4"]
    best = read_json(run.repo / "sweeps" / "best.json")
    assert best["model"] == "sam_lora" and best["config"]["train.lr"] == 0.003
    lora = ModelCard.read(run.repo / "models" / "sam_lora")
    assert lora.entry.rank == best["config"]["model.rank"]
    assert lora.train.lr == 0.003 != run.params["train"]["lr"]
    assert lora.promoted["trial"] == best["trial"]
    assert read_json(run.repo / "promoted" / "unet.json") == {"from_sweep": False}
    unet = ModelCard.read(run.repo / "models" / "unet")
    assert unet.train.lr == run.params["train"]["lr"] and unet.promoted is None
    html = run.html()
    assert 'id="sweep"' in html and 'class="sweep-trials"' in html
    assert "<th>trainable params</th>" in html
    for trial in read_csv(run.repo / "sweeps" / "trials.csv"):  # each trial's own count
        assert f"<td>{trial['params_trainable']}</td>" in html


def test_the_threshold_tuned_on_validation_is_recorded(run):
    unet = read_json(run.repo / "eval" / "unet" / "metrics.json")
    assert unet["threshold_tuned"] and 0 < unet["threshold"] < 1


def test_dvc_knows_the_plots(run):
    plots = json.loads(dvc(run.repo, "plots", "show", "--json").stdout)
    assert not plots.get("errors")
    assert "Test score (Dice over all images; mIoU) against training time" in plots["data"]
    assert "reports/plots/history/unet.csv" in plots["data"]


def test_sam_rows_carry_their_notes_and_the_banners_explain_them(run):
    summary, html = run.summary(), run.html()
    main_table = summary.split("## Comparison on the test split")[1].split("### Every metric")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in main_table.splitlines()}
    for m in SAM_ROWS:
        assert "random-init SAM" in rows[m] and "oracle prompts" not in rows[m]
    assert "**Random-initialised SAM.**" in summary and "Random-initialised SAM." in html
    assert "**Oracle prompts.**" not in summary  # no row takes its prompts from the masks
    # Fine-tuned SAM saved only what it trained.
    assert ModelCard.read(run.repo / "models" / "sam_lora").training.params_trainable > 0


def test_mlflow_holds_the_unet_run_with_params_metrics_and_checkpoint(run):
    run_id = ModelCard.read(run.repo / "models" / "unet").mlflow_run_id
    mlflow.set_tracking_uri(run.mlflow_uri)
    record = mlflow.get_run(run_id)
    assert record.data.params["train.epochs"] == "2"
    assert {"val_dice", "test_dice", "test_iou"} <= set(record.data.metrics)
    assert record.data.tags["dvc_stage"] == "train@unet"
    assert record.data.tags["git_commit"] != "unknown"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model")}
    assert "model/weights.pt" in artifacts


def test_mlflow_serves_the_champion_the_report_registered(run):
    """`mlflow models serve -m models:/segbench-particles@champion` on 127.0.0.1 answers a test
    image with the mask segbench's predictor makes; a request of the wrong shape or dtype is
    HTTP 400 with the reason."""
    import numpy as np

    from segbench.evalmetrics import EvalMetrics
    from segbench.io import read_image
    from segbench.postprocess import to_labels
    from segbench.predict import load_predictor
    from tests.serving import model_server, post

    name = f"segbench-{run.params['data']['synthetic']['domain']}"
    holder = mlflow.MlflowClient(run.mlflow_uri).get_model_version_by_alias(name, "champion")
    model = holder.tags["segbench.model"]
    assert re.search(rf"models:/{name}@champion</code>[^<]*{model}", run.html()), "not stated"
    test = next(r for r in read_csv(run.repo / "data/raw/manifest.csv") if r["split"] == "test")
    image = read_image(run.repo / "data/raw" / test["image"])
    metrics = EvalMetrics.read(run.repo / "eval" / model, stage=f"evaluate@{model}")
    local = load_predictor(run.repo / "models" / model, tta=metrics.tta)
    want = to_labels(local.predict_proba(image), metrics.threshold, metrics.min_area)
    uri = f"models:/{name}@champion"
    with model_server(uri, run.mlflow_uri, run.repo.parent / "serve.log") as url:
        status, body = post(url, {"inputs": image[None].tolist()})
        assert status == 200, body
        mask = np.asarray(body["predictions"], dtype=np.uint8)
        assert mask.shape == (1, *image.shape) and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask[0], want)
        # One image without its batch axis, and text where pixels belong: 400, with why.
        status, body = post(url, {"inputs": image.tolist()})
        assert status == 400 and "shape" in body.get("message", ""), body
        status, body = post(url, {"inputs": [[["a", "b"], ["c", "d"]]]})
        assert status == 400 and body.get("message"), body
        # 16-bit values for a model of 8-bit images: out of the signature's dtype.
        status, body = post(url, {"inputs": [[[300, 1], [2, 60000]]]})
        assert status == 400 and "out of bounds for uint8" in body.get("message", ""), body


def test_a_second_repro_does_nothing_and_says_so(run):
    again = dvc(run.repo, "repro")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()


def test_a_code_edit_reruns_only_the_stages_that_can_run_the_file(in_run_store):
    run = in_run_store
    report_py = run.repo / "src" / "segbench" / "report.py"
    original = report_py.read_text()
    report_py.write_text(original + "\n# an edit\n")
    try:
        out = dvc(run.repo, "repro").stdout
    finally:
        report_py.write_text(original)
    assert re.findall(r"Running stage '([^']+)'", out) == ["code", "report"]


def _outputs(repo: Path) -> dict[str, int]:
    """Every file of the stages' outputs, with its modification time in nanoseconds."""
    folders = ("data", "models", "ensembles", "sweeps", "promoted", "eval", "reports", "plans")
    return {
        str(path.relative_to(repo)): path.stat().st_mtime_ns
        for folder in folders
        for path in (repo / folder).rglob("*")
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        # fetch's (data/raw was emptied); prepare's tile size, the sweep's and every model's
        # train.lr go through the same check (tests/test_check.py, tests/test_config.py).
        ("data.split.test", 0.35, "data.split.train: train + val + test must sum to 1"),
        # Found only by smp, not the schema: models/unet was deleted.
        ("models.unet.encoder_name", "resnet999", "models.unet.encoder_name: unknown encoder"),
    ],
)
def test_a_bad_value_stops_at_check_and_every_output_stays(run, key, value, named):
    before = _outputs(run.repo)
    params = run.repo / "params.yaml"
    original = params.read_text()
    raw = yaml.safe_load(original)
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[leaf] = value
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        proc = dvc(run.repo, "repro", check=False)
    finally:
        params.write_text(original)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and re.findall(r"Running stage '([^']+)'", said) == ["check"]
    assert f"error: params.yaml: {named}" in said and "Traceback" not in said, said
    assert _outputs(run.repo) == before  # nothing deleted, nothing rewritten


def test_an_experiment_reruns_only_what_depends_on_the_changed_key(in_run_store):
    """Last: it changes the workspace."""
    run = in_run_store
    exp = dvc(run.repo, "exp", "run", "-S", "models.otsu.smooth_sigma=2.0")
    assert "Running stage 'train@otsu'" in exp.stdout
    # The sweep's plan is re-written (it reads every models entry) but comes out the same, so
    # the sweep itself is not re-run.
    assert "Running stage 'sweep_plan'" in exp.stdout
    for stage in ("fetch", "prepare", "sweep", "train@unet", "train@sam_lora"):
        assert f"Running stage '{stage}'" not in exp.stdout


@pytest.mark.long  # make test-long: two more trainings of each network (tests/conftest.py)
def test_repeated_training_through_dvc_shows_the_seed_spread(in_run_store):
    """After the other experiment: `-S train.repeats=2` retrains each network with two seeds,
    and the report gives each its spread and tests the seed-averaged per-image scores."""
    run = in_run_store
    exp = dvc(run.repo, "exp", "run", "-S", "train.repeats=2")
    assert "Running stage 'train@unet'" in exp.stdout and "Running stage 'report'" in exp.stdout
    # Otsu's stage re-runs (it depends on the train section) but fits once: nothing random.
    assert not (run.repo / "models" / "otsu" / "repeats").exists()
    assert "seeds" not in read_json(run.repo / "eval" / "otsu" / "metrics.json")
    unet = read_json(run.repo / "eval" / "unet" / "metrics.json")
    assert unet["seeds"] == [0, 1] and len(unet["seed_scores"]) == 2
    rows = {r["model"]: r for r in read_csv(run.repo / "reports" / "comparison.csv")}
    assert len(rows["unet"]["seed_scores"].split()) == 2 and rows["unet"]["seed_std"] != ""
    summary = run.summary()
    assert "(2 seeds)" in summary and "Networks were trained 2 times" in summary


def test_bad_params_fail_the_stage_cleanly(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.001", "lr: -0.001"))
    proc = dvc(repo_copy, "repro", "fetch", check=False)
    assert proc.returncode != 0
    assert "train.lr" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (repo_copy / "data" / "raw").exists()
