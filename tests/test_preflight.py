"""Pre-flight: what the machine must provide (SAM checkpoints, a saved hub dataset, GPUs) is
found by `segbench check` before any stage deletes an output, as one line that says what to
download or run, and where."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import torch
import yaml

from segbench.check import check_params
from segbench.config import parse_params
from segbench.data.sources import open_source
from segbench.downloads import SAM_CHECKPOINTS, hf_save_command
from segbench.errors import SegbenchError
from segbench.sam.checkpoint import load_checkpoint
from tests.conftest import REPO, deep_update, real_params_raw, venv_env

VIT_B_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
VIT_B_SHA = "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"


def check_message(override: dict) -> str:
    with pytest.raises(SegbenchError) as info:
        check_params(parse_params(deep_update(real_params_raw(), override)), "mine.yaml")
    message = str(info.value)
    assert message.startswith("mine.yaml: ") and "\n" not in message
    return message


def test_the_table_holds_the_official_files():
    assert {v: (c.file_name, c.url, c.sha256) for v, c in SAM_CHECKPOINTS.items()} == {
        "vit_b": ("sam_vit_b_01ec64.pth", VIT_B_URL, VIT_B_SHA),
        "vit_l": (
            "sam_vit_l_0b3195.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        "vit_h": (
            "sam_vit_h_4b8939.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        ),
    }


def test_every_checkpoint_the_readme_names_is_in_the_table():
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"sam_vit_[blh]_[0-9a-f]{6}\.pth", readme))
    assert named == {c.file_name for c in SAM_CHECKPOINTS.values()}
    # The README's table row of each file gives the table's digest.
    for c in SAM_CHECKPOINTS.values():
        assert f"| {c.variant} | {c.file_name} | {c.size_text} | `{c.sha256}` |" in readme


def test_missing_vit_b_checkpoint_says_what_to_download_where(tmp_path):
    path = tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth"
    message = check_message(
        {"models": {"sam_box": {"variant": "vit_b", "checkpoint": str(path), "image_size": 1024}}}
    )
    assert message == (
        f"mine.yaml: models.sam_box.checkpoint: {path} does not exist; download {VIT_B_URL} "
        f"(375 MB) to {path} and set models.sam_box.sha256: {VIT_B_SHA}"
    )


def test_the_variant_names_the_file_when_its_name_does_not(tmp_path):
    path = tmp_path / "sam.pth"
    message = check_message({"models": {"sam_lora": {"variant": "vit_b", "checkpoint": str(path)}}})
    assert f"models.sam_lora.checkpoint: {path} does not exist; download {VIT_B_URL}" in message
    # a digest already set to the official one is not asked for again
    message = check_message(
        {"models": {"sam_lora": {"variant": "vit_b", "checkpoint": str(path), "sha256": VIT_B_SHA}}}
    )
    assert message.endswith(f"download {VIT_B_URL} (375 MB) to {path}")


def test_entries_sharing_one_missing_file_get_one_sentence(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    entry = {"variant": "vit_b", "checkpoint": str(path)}
    message = check_message({"models": {"sam_box": entry, "sam_decoder": entry}})
    assert message == (
        f"mine.yaml: models.sam_box.checkpoint, models.sam_decoder.checkpoint: {path} does not "
        f"exist; download {VIT_B_URL} (375 MB) to {path} and set models.sam_box.sha256, "
        f"models.sam_decoder.sha256: {VIT_B_SHA}"
    )
    assert message.count("does not exist") == 1 and message.count(VIT_B_URL) == 1


def test_an_unknown_file_still_names_the_key_and_the_path(tmp_path):
    path = tmp_path / "my_sam.pth"
    message = check_message({"models": {"sam_point": {"checkpoint": str(path)}}})  # variant tiny
    assert message == (
        f"mine.yaml: models.sam_point.checkpoint: {path} does not exist; put the checkpoint "
        "file there or fix the path (null = random weights)"
    )
    assert "https://" not in message


def test_a_present_checkpoint_without_sha256_passes_with_a_note(tmp_path, capsys):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(b"not read by check")
    raw = deep_update(real_params_raw(), {"models": {"sam_box": {"checkpoint": str(path)}}})
    check_params(parse_params(raw))
    note = capsys.readouterr().out
    assert f"check: models.sam_box.sha256 is null, so {path} is loaded unverified" in note


def test_the_loader_says_the_same_when_the_file_is_missing(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(SegbenchError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"SAM checkpoint {path} does not exist; download {VIT_B_URL} (375 MB) to {path} and set "
        f"sha256: {VIT_B_SHA}"
    )


def test_missing_hf_folder_gives_the_command_that_writes_it(tmp_path):
    path = tmp_path / "hub" / "busi"
    data = {"source": "hf", "path": str(path), "hf": {"name": "nielsr/breast-cancer"}}
    command = (
        "python -c \"import datasets; datasets.load_dataset('nielsr/breast-cancer', "
        f"revision=None).save_to_disk('{path}')\""
    )
    assert check_message({"data": data}) == (
        f"mine.yaml: data.path: {path} does not exist; write it with: {command}"
    )
    # fetch, run on its own, says the same
    with pytest.raises(SegbenchError) as info:
        open_source(parse_params(deep_update(real_params_raw(), {"data": data})).data)
    assert str(info.value) == f"data.path: {path} does not exist; write it with: {command}"


def test_missing_hf_folder_without_a_hub_id_says_to_set_one(tmp_path):
    path = tmp_path / "busi"
    message = check_message({"data": {"source": "hf", "path": str(path)}})
    assert f"data.path: {path} does not exist and data.hf.name is null; set data.hf.name" in message
    assert "load_dataset('<hub id>'" in message


@pytest.mark.parametrize("path", ["data/busi", '/data/$HOME\'s "set"'])
def test_the_save_command_reaches_python_as_written(path):
    code = f"import datasets; datasets.load_dataset('a/b', revision='v1').save_to_disk({path!r})"
    assert shlex.split(hf_save_command("a/b", "v1", path)) == ["python", "-c", code]


def test_unreachable_hub_is_one_line_with_the_command_to_run_elsewhere(tmp_path):
    params = tmp_path / "params.yaml"
    data = {"source": "hf", "path": None, "hf": {"name": "nobody/no-such-set", "revision": "v2"}}
    params.write_text(yaml.safe_dump(deep_update(real_params_raw(), {"data": data})))
    raw = tmp_path / "raw"
    # Offline switches in the environment: nothing here touches the network.
    env = venv_env() | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "segbench.cli", "fetch", *("--params", params, "--out", raw)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: data.hf.name: cannot load 'nobody/no-such-set' at revision 'v2': the hub could "
        "not be reached ("
    )
    assert lines[0].endswith(
        'on a machine with network run: python -c "import datasets; datasets.load_dataset('
        "'nobody/no-such-set', revision='v2').save_to_disk('no-such-set')\", then copy the "
        "folder no-such-set here and set data.path to it"
    )
    assert not raw.exists()


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``n`` CUDA GPUs (a hardware count; nothing runs on them)."""

    def have(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return have


def test_more_devices_than_gpus_names_the_models_own_key(gpus):
    gpus(1)
    message = check_message({"models": {"segformer": {"train": {"devices": 4}}}})
    assert message == (
        "mine.yaml: models.segformer.train.devices: 4, but this machine has 1 CUDA GPU; set it "
        "to 1 or fewer (one training process per GPU), or train where more GPUs are visible"
    )


def test_a_shared_devices_key_is_named_once(gpus):
    gpus(2)
    message = check_message({"train": {"devices": 3, "device": "cuda"}})
    assert message.count("train.devices: 3, but this machine has 2 CUDA GPUs") == 1
    assert "models." not in message


def test_devices_within_the_gpus_or_on_the_cpu_pass(gpus):
    gpus(2)
    check_params(parse_params(deep_update(real_params_raw(), {"train": {"devices": 2}})))
    # on the CPU, devices > 1 is Gloo processes: any number
    raw = deep_update(real_params_raw(), {"train": {"devices": 4, "device": "cpu"}})
    check_params(parse_params(raw))
    gpus(0)
    check_params(parse_params(deep_update(real_params_raw(), {"train": {"devices": 4}})))


def test_cuda_asked_where_there_is_none_names_the_device_key(gpus):
    gpus(0)
    message = check_message({"models": {"unet": {"train": {"device": "cuda"}}}})
    assert "models.unet.train.device: cuda requested but no CUDA device is visible" in message


def test_train_refuses_to_launch_more_processes_than_gpus(gpus, tmp_path, capsys):
    from segbench.commands import train as train_command

    gpus(1)
    params = tmp_path / "params.yaml"
    raw = deep_update(real_params_raw(), {"models": {"unet": {"train": {"devices": 2}}}})
    params.write_text(yaml.safe_dump(raw))
    argv = ["unet", "--tiles", str(tmp_path / "tiles"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        train_command.main([*argv, "--params", str(params)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "error: models.unet.train.devices: 2, but this machine has 1 CUDA GPU; set it to 1 or "
        "fewer (one training process per GPU), or train where more GPUs are visible\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_real_gpu_count_is_what_devices_is_checked_against():
    present = torch.cuda.device_count()
    ok = deep_update(real_params_raw(), {"train": {"devices": present, "device": "cuda"}})
    check_params(parse_params(ok))
    s = "" if present == 1 else "s"
    message = check_message({"train": {"devices": present + 1, "device": "cuda"}})
    assert f"train.devices: {present + 1}, but this machine has {present} CUDA GPU{s}" in message


def test_segbench_check_is_one_line_and_exit_2(tmp_path):
    params = tmp_path / "params.yaml"
    path = tmp_path / "sam_vit_b_01ec64.pth"
    entry = {"variant": "vit_b", "checkpoint": str(path)}
    raw = deep_update(real_params_raw(), {"models": {"sam_box": entry, "sam_points": entry}})
    params.write_text(yaml.safe_dump(raw, sort_keys=False))  # entries in params.yaml's order
    checks = tmp_path / "checks"
    proc = subprocess.run(
        [sys.executable, "-m", "segbench.cli", "check", *("--params", params, "--out", checks)],
        capture_output=True,
        text=True,
        env=venv_env(),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"error: {params}: models.sam_points.checkpoint, models.sam_box.checkpoint: {path} does "
        f"not exist; download {VIT_B_URL} (375 MB) to {path} and set models.sam_points.sha256, "
        f"models.sam_box.sha256: {VIT_B_SHA}\n"
    )
    assert not checks.exists()
