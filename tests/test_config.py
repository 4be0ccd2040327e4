"""params.yaml validation: every kind of bad value stops with the dotted key named."""

import copy
import re
import subprocess
import sys

import pytest
import yaml

from segbench.config import ENTRY_CLASSES, load_params, parse_params
from segbench.errors import SegbenchError
from tests.conftest import REPO, deep_update, real_params_raw


def test_real_params_yaml_loads():
    params = load_params(REPO / "params.yaml")
    assert "unet" in params.models and "otsu" in params.models
    assert params.prepare.tile_size <= params.data.synthetic.height * params.prepare.scale


def test_params_yaml_is_the_only_source_of_values():
    """The schema re-defaults nothing: removing any key of params.yaml (a leaf, a section, an
    entry's key) is an error naming it, and nothing else is accepted in its place."""
    raw = real_params_raw()
    with pytest.raises(SegbenchError, match="missing key"):
        parse_params({})
    leaves = list(_leaves(raw))
    assert len(leaves) > 150
    for path in leaves:
        if path[:2] == ("sweep", "space"):
            continue  # the space lists what is swept: any subset of keys is a valid space
        if path[0] == "models" and path[-1] == "model" and path[1] in ENTRY_CLASSES:
            continue  # `model:` names the registered model; an entry's own name does too
        trimmed = copy.deepcopy(raw)
        node = trimmed
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        with pytest.raises(SegbenchError, match=re.escape(path[-1])):
            parse_params(trimmed)


def _leaves(node, path=()):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key)


def test_entries_are_typed_and_overrides_are_validated():
    params = load_params(REPO / "params.yaml")
    assert type(params.models["sam_box"]).__name__ == "SamZeroShotEntry"
    assert params.models["sam_box"].notes() == {
        "oracle_prompts": True,
        "random_init": True,
        "scratch_decoder": False,
    }
    assert params.models["unet"].kind == "torch" and params.models["otsu"].kind == "classical"
    tuned = params.with_overrides({"train.lr": 0.01, "models.sam_lora.rank": 8})
    assert (tuned.train.lr, tuned.models["sam_lora"].rank) == (0.01, 8)
    assert (params.train.lr, params.models["sam_lora"].rank) != (0.01, 8)  # a copy
    with pytest.raises(SegbenchError, match=r"train\.lr: Input should be greater than 0"):
        params.with_overrides({"train.lr": -1.0})
    with pytest.raises(SegbenchError, match=r"train\.lrr: no such key"):
        params.with_overrides({"train.lrr": 0.1})
    with pytest.raises(SegbenchError, match=r"models\.nope: no such key"):
        params.with_overrides({"models.nope.rank": 8})


def test_a_sam_key_of_another_prompt_mode_is_refused():
    raw = real_params_raw()
    raw["models"]["sam_box"]["k_points"] = 3
    with pytest.raises(SegbenchError, match=r"models\.sam_box\.k_points: only prompt: points"):
        parse_params(raw)
    raw = real_params_raw()
    del raw["models"]["sam_points"]["k_points"]
    with pytest.raises(SegbenchError, match=r"models\.sam_points\.k_points: prompt: points needs"):
        parse_params(raw)


def test_an_entry_without_model_key_is_the_model_of_its_name():
    raw = real_params_raw()
    del raw["models"]["unet"]["model"]
    assert parse_params(raw).models["unet"].model == "unet"
    raw["models"]["unet_r34"] = {**raw["models"]["unet"], "model": "unet"}
    raw["models"]["unet_r34"]["encoder_name"] = "resnet34"
    assert parse_params(raw).models["unet_r34"].encoder_name == "resnet34"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train": {"lrr": 0.1}}, "train.lrr"),  # unknown key
        ({"bogus_section": {}}, "bogus_section"),  # unknown section
        ({"train": {"epochs": "ten"}}, "train.epochs"),  # wrong type
        ({"train": {"lr": -0.1}}, "train.lr"),  # impossible value
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"prepare": {"tile_size": 300}}, "prepare.tile_size"),  # not a multiple of 32
        ({"prepare": {"stride": 600}}, "prepare.stride"),  # leaves pixels uncovered
        ({"data": {"split": {"train": 0.9}}}, "data.split.train"),  # fractions sum > 1
        ({"data": {"synthetic": {"radius": [50, 5]}}}, "data.synthetic.radius"),
        ({"data": {"source": "kaggle"}}, "data.source"),
        ({"models": {"unet": {"encoder_depth": 9}}}, "models.unet.encoder_depth"),
        ({"models": {"unet": {"encoder": "resnet18"}}}, "models.unet.encoder"),
        ({"models": {"segnet": {}}}, "models.segnet"),  # unknown model
        ({"models": {"unet": {"encoder_depth": 4}}}, "models.unet.decoder_channels"),
        ({"models": {"x": {"model": "ensemble"}}}, "models.x.model"),
        ({"ensembles": {"ensemble": {"members": ["unet", "otsu"]}}}, "ensembles.ensemble.members"),
        ({"deploy": {"cron": "0 61 * * *"}}, "deploy.cron"),
        ({"evaluate": {"overlap": 1.0}}, "evaluate.overlap"),
    ],
)
def test_bad_values_name_the_dotted_key(override, key):
    raw = deep_update(real_params_raw(), override)
    with pytest.raises(SegbenchError) as info:
        parse_params(raw)
    message = str(info.value)
    assert f"{key}:" in message
    assert "\n" not in message


def test_a_tile_larger_than_the_images_loads_for_every_source():
    """One rule for every source: prepare pads such images and says so (tests/test_prepare.py)."""
    params = parse_params(deep_update(real_params_raw(), {"prepare": {"tile_size": 2048}}))
    assert params.data.source == "synthetic" and params.prepare.tile_size == 2048


def test_unknown_model_lists_valid_names():
    valid = (
        "valid: attention_unet, canny, otsu, sam_decoder, sam_lora, sam_zero_shot, segformer, "
        "sobel, unet"
    )
    with pytest.raises(SegbenchError, match=valid):
        parse_params(deep_update(real_params_raw(), {"models": {"segnet": {}}}))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SegbenchError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SegbenchError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("")
    with pytest.raises(SegbenchError, match="the file is empty"):
        load_params(bad)


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    text = (REPO / "params.yaml").read_text()
    assert text.count("\n  epochs: 4\n") >= 1
    twice = tmp_path / "mine.yaml"
    # An edit above the old value: PyYAML alone would keep the old one without a word.
    twice.write_text(text.replace("\n  epochs: 4\n", "\n  epochs: 40\n  epochs: 4\n", 1))
    line = twice.read_text().splitlines().index("  epochs: 40") + 1
    with pytest.raises(SegbenchError) as info:
        load_params(twice)
    assert str(info.value) == (
        f"{twice}: key 'epochs' given twice in one mapping, on lines {line} and {line + 1} "
        "(YAML would keep only the last); keep one"
    )
    # A key YAML cannot use (a list) is PyYAML's own error, not a crash of the check.
    twice.write_text("train:\n  ? [a, b]\n  : 1\n")
    with pytest.raises(SegbenchError, match=r"not valid YAML .*unhashable"):
        load_params(twice)
    # The same key in two different mappings is fine (every section has its own `seed`).
    assert text.count("  seed: 0") > 1 and load_params(REPO / "params.yaml")


@pytest.mark.parametrize(
    ("override", "key", "says"),
    [
        ({"train": {"epochs": True}}, "train.epochs", "not true"),
        ({"train": {"lr": False}}, "train.lr", "not false"),
        ({"prepare": {"augment": {"hflip": True}}}, "prepare.augment.hflip", "not true"),
        ({"models": {"unet": {"from_sweep": 1}}}, "models.unet.from_sweep", "true or false"),
        ({"sweep": {"enabled": "yes"}}, "sweep.enabled", "true or false"),
        ({"models": {"unet": {"decoder_channels": [True, 8, 8, 8, 8]}}}, "decoder_channels", ""),
        ({"data": {"synthetic": {"radius": [True, 20.0]}}}, "data.synthetic.radius", ""),
    ],
)
def test_booleans_and_numbers_are_not_taken_for_each_other(override, key, says):
    """pydantic alone reads `epochs: true` as 1 and `from_sweep: 1` as true."""
    with pytest.raises(SegbenchError) as info:
        parse_params(deep_update(real_params_raw(), override))
    message = str(info.value)
    assert key in message and says in message and message.count("\n") == 0


def test_the_params_file_named_in_errors_is_the_one_read(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(deep_update(real_params_raw(), {"train": {"lr": -1}})))
    with pytest.raises(SegbenchError, match=f"^{re.escape(str(mine))}: train.lr"):
        load_params(mine)


def test_cli_reports_bad_params_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(deep_update(real_params_raw(), {"train": {"lr": -1}})))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segbench.cli",
            "fetch",
            "--params",
            str(params),
            "--out",
            str(tmp_path / "raw"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "train.lr" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "raw").exists()


# Study files (configs/study-*.yaml) are applied by `segbench study`: tests/test_study.py.
OVERRIDE_FILES = sorted(
    p.name for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("study-")
)


@pytest.mark.parametrize("name", OVERRIDE_FILES)
def test_every_override_file_in_configs_is_valid_over_params_yaml(name):
    from segbench.commands.experiment import command
    from segbench.config.params import merge_raw

    overrides = yaml.safe_load((REPO / "configs" / name).read_text())
    parse_params(merge_raw(real_params_raw(), overrides))
    cmd = command(str(REPO / "params.yaml"), str(REPO / "configs" / name), [])
    assert cmd[1:5] == ["-m", "dvc", "exp", "run"]
    sets = cmd[5::2]
    assert set(sets) == {"-S"} and len(sets) >= len(overrides)


def test_experiment_sets_each_leaf_and_refuses_a_bad_file(tmp_path, capsys):
    from segbench.cli import main

    good = tmp_path / "good.yaml"
    good.write_text(
        "train: {epochs: 40}\nmodels: {unet: {decoder_channels: [256, 128, 64, 32, 16], "
        "train: {epochs: 50}}}\n"
    )
    main(["experiment", str(good), "--params", "params.yaml", "--print"])
    printed = capsys.readouterr().out
    assert "-S train.epochs=40" in printed
    assert "'models.unet.decoder_channels=[256, 128, 64, 32, 16]'" in printed
    # A key params.yaml does not have (the entry's own train keys): DVC needs `++` to add it.
    assert "'++models.unet.train={epochs: 50}'" in printed
    # After `--`, arguments go to `dvc exp run` verbatim, also after an option of segbench's.
    main(["experiment", str(good), "--print", "--", "--name", "full", "--queue"])
    assert capsys.readouterr().out.rstrip().endswith("--name full --queue")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: -1}\n")
    with pytest.raises(SystemExit) as info:
        main(["experiment", str(bad), "--params", "params.yaml", "--print"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"params.yaml + {bad}: train.lr: Input should be" in err
