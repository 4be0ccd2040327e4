"""params.yaml validation: every kind of bad value stops with the dotted key named."""

import subprocess
import sys

import pytest
import yaml

from segbench.config import load_params, parse_params
from segbench.errors import SegbenchError
from tests.conftest import REPO, deep_update, real_params_raw


def test_real_params_yaml_loads():
    params = load_params(REPO / "params.yaml")
    assert "unet" in params.models and "otsu" in params.models
    assert params.prepare.tile_size <= params.data.synthetic.height * params.prepare.scale


def test_defaults_match_the_issue():
    params = parse_params({})
    assert params.prepare.tile_size == 512
    assert params.model_params("unet").encoder_name == "resnet18"
    split = params.data.split
    assert (split.train, split.val, split.test) == (0.7, 0.2, 0.1)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train": {"lrr": 0.1}}, "train.lrr"),  # unknown key
        ({"bogus_section": {}}, "bogus_section"),  # unknown section
        ({"train": {"epochs": "ten"}}, "train.epochs"),  # wrong type
        ({"train": {"lr": -0.1}}, "train.lr"),  # impossible value
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"prepare": {"tile_size": 2048}}, "prepare.tile_size"),  # larger than the images
        ({"prepare": {"tile_size": 300}}, "prepare.tile_size"),  # not a multiple of 32
        ({"prepare": {"stride": 600}}, "prepare.stride"),  # leaves pixels uncovered
        ({"data": {"split": {"train": 0.9}}}, "data.split.train"),  # fractions sum > 1
        ({"data": {"synthetic": {"radius": [50, 5]}}}, "data.synthetic.radius"),
        ({"data": {"source": "kaggle"}}, "data.source"),
        ({"models": {"unet": {"encoder_depth": 9}}}, "models.unet.encoder_depth"),
        ({"models": {"unet": {"encoder": "resnet18"}}}, "models.unet.encoder"),
        ({"models": {"segnet": {}}}, "models.segnet"),  # unknown model
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


def test_unknown_model_lists_valid_names():
    valid = (
        "valid: attention_unet, ensemble, otsu, sam_decoder, sam_lora, sam_zero_shot, segformer, "
        "unet"
    )
    with pytest.raises(SegbenchError, match=valid):
        parse_params({"models": {"segnet": {}}})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SegbenchError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SegbenchError, match="not valid YAML"):
        load_params(bad)


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
