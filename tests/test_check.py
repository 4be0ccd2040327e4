"""segbench check: what params.yaml asks for that only a build would find, before any stage."""

import pytest

from segbench.check import CHECKED, check_params, write_check
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import read_json
from tests.conftest import deep_update, real_params_raw


def test_the_shipped_params_pass_and_the_output_never_changes(tmp_path):
    params = parse_params(real_params_raw())
    assert write_check(params, tmp_path / "checks") == list(params.models)
    assert read_json(tmp_path / "checks" / "params.json") == CHECKED


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"models": {"unet": {"encoder_name": "resnet999"}}}, "models.unet.encoder_name: unknown"),
        ({"models": {"unet": {"encoder_weights": "/no/such.pth"}}}, "models.unet.encoder_weights"),
        ({"models": {"sam_box": {"checkpoint": "/no/sam.pth"}}}, "models.sam_box.checkpoint"),
        ({"data": {"source": "folder", "path": "/no/such/folder"}}, "data.path: /no/such"),
    ],
)
def test_what_the_schema_cannot_see_is_one_line_naming_the_key(tmp_path, override, says):
    params = parse_params(deep_update(real_params_raw(), override))
    with pytest.raises(SegbenchError) as info:
        write_check(params, tmp_path / "checks", source="mine.yaml")
    assert str(info.value).startswith("mine.yaml: ") and says in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "checks").exists()


def test_every_problem_is_listed_at_once():
    raw = deep_update(
        real_params_raw(),
        {"models": {"unet": {"encoder_name": "resnet999"}, "segformer": {"encoder_name": "x"}}},
    )
    with pytest.raises(SegbenchError, match=r"models\.unet\.encoder_name.*models\.segformer"):
        check_params(parse_params(raw))
