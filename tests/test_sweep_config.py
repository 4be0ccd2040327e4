"""The sweep and deploy sections: bad spaces, keys, values and schedules stop at load, naming
the dotted key; the best configuration reaches train@ only for an entry that asks for it."""

import subprocess
import sys

import pytest
import yaml

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import read_json, write_json
from segbench.sweep.plan import check_plan, sweep_plan, write_plan
from segbench.sweep.promote import promote, promoted_params
from segbench.sweep.space import column_names, trial_params, tune_space
from tests.conftest import venv_env


def with_sweep(raw: dict, **sweep) -> dict:
    raw["sweep"] = {**raw["sweep"], **sweep}
    return raw


def test_real_sweep_is_a_grid_over_rank_lr_and_batch_size(small_params_raw):
    params = parse_params(small_params_raw)
    assert params.sweep.enabled and params.sweep.model == "sam_lora"
    names = column_names(params.sweep)
    assert set(names.values()) == {"rank", "lr", "batch_size"}
    assert params.sweep.grid_size() == 2  # the shrunk grid of conftest.SHRINK


@pytest.mark.parametrize(
    ("space", "search", "message"),
    [
        ({"train": {"lrr": [0.1]}}, "grid", "sweep.space.train.lrr: training has no key 'lrr'"),
        ({"model": {"rnk": [4]}}, "grid", "sweep.space.model.rnk: training has no key 'rnk' in"),
        ({"train": {"lr": []}}, "grid", "sweep.space.train.lr: an empty list leaves nothing"),
        ({}, "grid", "sweep.space: the search space is empty"),
        ({"train": {}}, "grid", "sweep.space: the search space is empty"),
        ({"trian": {"lr": [0.1]}}, "grid", "sweep.space.trian: the space has two sections"),
        ({"train": {"lr": {"loguniform": [1e-5, 1e-2]}}}, "grid", "needs search: random"),
        ({"train": {"lr": {"loguniform": [0, 1e-2]}}}, "random", "0 < low < high"),
        ({"train": {"lr": {"normal": [0, 1]}}}, "random", "expected a list of values or one of"),
        ({"train": {"lr": [0.001, 5.0]}}, "grid", "sweep.space.train.lr: the value 5.0 is not"),
        ({"train": {"epochs": [1, 2]}}, "grid", "use sweep.epochs"),
        ({"train": {"devices": [2]}}, "grid", "not sweepable"),
        ({"model": {"rank": [0]}}, "grid", "sweep.space.model.rank: the value 0 is not valid"),
    ],
)
def test_bad_spaces_name_the_key(small_params_raw, space, search, message):
    raw = with_sweep(small_params_raw, space=space, search=search)
    with pytest.raises(SegbenchError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_params(raw)


def test_sweep_model_must_be_a_trained_entry(small_params_raw):
    with pytest.raises(SegbenchError, match=r"sweep\.model: 'nope' is not an entry of models"):
        parse_params(with_sweep(small_params_raw, model="nope"))
    with pytest.raises(SegbenchError, match=r"sweep\.model: otsu is a classical model"):
        parse_params(with_sweep(small_params_raw, model="otsu", space={"train": {"lr": [0.1]}}))
    # A disabled sweep checks nothing: configurations without a sweepable model still load,
    # and the swept entry may be absent (or null).
    parse_params(with_sweep(small_params_raw, enabled=False, model="otsu", space={}))
    parse_params(with_sweep(small_params_raw, enabled=False, model="nope"))
    parse_params(with_sweep(small_params_raw, enabled=False, model=None))
    with pytest.raises(SegbenchError, match=r"sweep\.model: the sweep is enabled, so name"):
        parse_params(with_sweep(small_params_raw, enabled=True, model=None))


def test_from_sweep_only_on_the_swept_entry(small_params_raw):
    small_params_raw["models"]["unet"]["from_sweep"] = True
    with pytest.raises(SegbenchError, match=r"models\.unet\.from_sweep: the sweep tunes sam_lora"):
        parse_params(small_params_raw)
    small_params_raw["models"]["unet"]["from_sweep"] = "maybe"
    with pytest.raises(SegbenchError, match=r"models\.unet\.from_sweep: expected true or false"):
        parse_params(small_params_raw)


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ({"cron": "61 * * * *"}, "deploy.cron: not a valid cron expression"),
        ({"timezone": "Mars/Olympus"}, "deploy.timezone: unknown time zone"),
    ],
)
def test_bad_schedules_name_the_key(small_params_raw, deploy, message):
    small_params_raw["deploy"] |= deploy
    with pytest.raises(SegbenchError, match=message):
        parse_params(small_params_raw)


def test_random_space_becomes_ray_distributions(small_params_raw):
    raw = with_sweep(
        small_params_raw,
        search="random",
        num_samples=5,
        space={"train": {"lr": {"loguniform": [1e-5, 1e-2]}}, "model": {"rank": [2, 4, 8]}},
    )
    space = tune_space(parse_params(raw).sweep)
    from ray.tune.search.sample import Categorical, Float

    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower == 1e-5
    assert isinstance(space["model.rank"], Categorical) and space["model.rank"].categories == [
        2,
        4,
        8,
    ]


def test_a_trials_values_go_into_train_and_the_swept_entry(small_params_raw):
    params = parse_params(small_params_raw)
    trial = trial_params(params, {"train.lr": 0.01, "model.rank": 8}, 3)
    # Training values go to the swept entry's own train keys: other entries keep train's.
    trained = trial.entry("sam_lora").train_config(trial.train)
    assert trained.lr == 0.01 and trained.epochs == 3
    assert trial.train == params.train
    assert trial.models["sam_lora"].rank == 8
    assert params.models["sam_lora"].rank == 4  # the original is untouched
    with pytest.raises(SegbenchError, match=r"sweep trial\): models\.sam_lora\.rank"):
        trial_params(params, {"model.rank": 0}, None)


def test_the_sweep_plan_changes_only_with_what_the_trials_read(small_params_raw, tmp_path):
    params = parse_params(small_params_raw)
    plan = sweep_plan(params)
    assert plan["entry"] == "sam_lora" and plan["model"]["rank"] == 4
    assert sweep_plan(params.with_overrides({"models.otsu.smooth_sigma": 2.0})) == plan
    assert sweep_plan(params.with_overrides({"evaluate.min_area": 5})) == plan
    for key, value in [("train.lr", 0.01), ("models.sam_lora.rank", 8), ("prepare.seed", 3)]:
        assert sweep_plan(params.with_overrides({key: value})) != plan, key
    off = params.with_overrides({"sweep.enabled": False})
    assert sweep_plan(off) == {"enabled": False}
    assert sweep_plan(off.with_overrides({"train.lr": 0.01})) == {"enabled": False}
    write_plan(params, tmp_path / "plans")
    check_plan(params, tmp_path / "plans")
    with pytest.raises(SegbenchError, match="the sweep plan is out of date"):
        check_plan(params.with_overrides({"train.lr": 0.01}), tmp_path / "plans")


def test_promote_hands_the_best_values_to_the_entry_that_asks(small_params_raw, tmp_path):
    best = {
        "model": "sam_lora",
        "metric": "best_val_score",
        "value": 0.7,
        "trial": "abc_00001",
        "experiment": "sweep-sam_lora-x",
        "config": {"model.rank": 16, "train.lr": 0.0003, "train.batch_size": 8},
    }
    write_json(tmp_path / "best.json", best)
    params = parse_params(small_params_raw)
    files = promote(params, tmp_path / "best.json", tmp_path / "promoted")
    assert not any(f["from_sweep"] for f in files.values())  # nobody asked
    before = (tmp_path / "promoted" / "unet.json").read_bytes()

    small_params_raw["models"]["sam_lora"]["from_sweep"] = True
    params = parse_params(small_params_raw)
    promote(params, tmp_path / "best.json", tmp_path / "promoted")
    assert (tmp_path / "promoted" / "unet.json").read_bytes() == before  # unet does not retrain
    promoted = read_json(tmp_path / "promoted" / "sam_lora.json")
    assert promoted["config"] == best["config"]
    assert (promoted["metric"], promoted["value"]) == ("best_val_score", 0.7)  # what it chose on
    tuned, values = promoted_params(params, "sam_lora", tmp_path / "promoted" / "sam_lora.json")
    assert tuned.models["sam_lora"].rank == 16 and values["trial"] == "abc_00001"
    trained = tuned.entry("sam_lora").train_config(tuned.train)
    assert trained.lr == 0.0003 and trained.batch_size == 8 and tuned.train == params.train
    assert trained.epochs == params.train.epochs  # the sweep's short horizon is not promoted
    assert promoted_params(params, "unet", None) == (params, None)


def test_promote_without_a_sweep_of_that_entry_says_what_to_run(small_params_raw, tmp_path):
    small_params_raw["models"]["sam_lora"]["from_sweep"] = True
    write_json(tmp_path / "best.json", {"model": None, "config": {}})
    with pytest.raises(SegbenchError, match="run `dvc repro sweep`"):
        promote(parse_params(small_params_raw), tmp_path / "best.json", tmp_path / "promoted")
    assert not (tmp_path / "promoted").exists()  # nothing half-written


@pytest.mark.slow  # a fresh process importing torch (~2 s)
def test_cli_reports_a_bad_space_without_traceback(small_params_raw, tmp_path):
    raw = with_sweep(small_params_raw, space={"train": {"learning_rate": [0.1]}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "segbench.cli", "sweep"),
            *("--params", str(tmp_path / "params.yaml"), "--tiles", "t", "--plan", "p"),
            *("--out", str(tmp_path / "sweeps"), "--state", str(tmp_path / "s")),
        ],
        capture_output=True,
        text=True,
        env=venv_env(),
    )
    assert proc.returncode == 2
    assert "sweep.space.train.learning_rate: training has no key" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "sweeps").exists()


def test_reference_gpu_sweep_is_a_valid_configuration(tmp_path):
    """configs/sweep-reference-gpu.yaml, merged into params.yaml, loads (checkpoint aside:
    it is fetched by the user) and is the study's 4 x 4 x 5 grid."""
    from tests.conftest import REPO, deep_update, real_params_raw

    reference = yaml.safe_load((REPO / "configs" / "sweep-reference-gpu.yaml").read_text())
    raw = deep_update(real_params_raw(), reference)
    params = parse_params(raw)
    assert params.sweep.grid_size() == 80
    assert params.sweep.resources.gpu == 1 and params.models["sam_lora"].variant == "vit_b"
    assert set(column_names(params.sweep).values()) == {"rank", "lr", "batch_size"}
