"""``segbench study FILE``: the study files in configs/, merging, ``keep``, the comment-keeping
rewrite of params.yaml, and every bad input as one line with exit status 2.

Every test works on a copy of the real params.yaml in ``tmp_path``; nothing runs DVC."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segbench.commands.study import apply_keep, merge_study, read_study
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.yamledit import render
from tests.conftest import REPO, real_params_raw, venv_env

STUDIES = sorted((REPO / "configs").glob("study-*.yaml"))
PARAMS_TEXT = (REPO / "params.yaml").read_text()


def entries(params: dict) -> set[str]:
    return {*params["models"], *(params.get("ensembles") or {})}


def entry_block(text: str, name: str) -> str:
    """The lines of ``models.<name>`` in a params file: its key line and everything indented
    deeper below it (comment lines included)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {name}:"))
    end = start + 1
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    return "".join(lines[start:end]).rstrip("\n") + "\n"


def comments_above(text: str, name: str) -> list[str]:
    """The full-line comments at the entry level right above ``models.<name>``."""
    lines = text.splitlines()
    i = lines.index(next(line for line in lines if line.startswith(f"  {name}:")))
    above = []
    while lines[i - 1 - len(above)].startswith("  #"):
        above.append(lines[i - 1 - len(above)])
    return above


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def write(tmp_path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def segbench(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segbench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=venv_env(),
    )


# --- the study files ---------------------------------------------------------------------------


def test_the_five_study_files_are_there():
    names = {p.name for p in STUDIES}
    assert {
        "study-ultrasound-sam-vs-unet.yaml",
        "study-sam-prompts-decoder.yaml",
        "study-unet-vs-attention-unet.yaml",
        "study-multiclass-unet-segformer.yaml",
        "study-lora-sam-particles.yaml",
    } <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_study_file_merges_into_params_yaml_and_validates(path):
    text = path.read_text()
    assert text.startswith("# "), "a study file opens with what the study did and what differs"
    study = read_study(path)
    assert path.name == f"study-{study.name}.yaml"
    base = real_params_raw()
    merged = merge_study(base, study, source=path.name)
    params = parse_params(merged, source=path.name)
    if study.keep is not None:
        assert set(params.models) | set(params.ensembles) == set(study.keep)
    # The rewritten params.yaml holds exactly these params (render checks it and raises).
    assert yaml.safe_load(render(PARAMS_TEXT, base, merged, source="params.yaml")) == merged


# --- merging and keep --------------------------------------------------------------------------


def test_keep_removes_every_other_entry_and_refuses_what_it_cannot_keep():
    base = real_params_raw()
    kept = apply_keep(base, ("unet", "segformer", "ensemble"), "s")
    assert set(kept["models"]) == {"unet", "segformer"} and set(kept["ensembles"]) == {"ensemble"}
    assert kept["models"]["unet"] == base["models"]["unet"]
    assert set(base["models"]) > {"unet", "segformer"}  # the input is left alone
    with pytest.raises(SegbenchError, match=r"^s: study\.keep: unett: not an entry .*; valid: "):
        apply_keep(base, ("unett",), "s")
    members = base["ensembles"]["ensemble"]["members"]
    with pytest.raises(SegbenchError, match=f"averages {members[1]}, which keep removes"):
        apply_keep(base, ("ensemble", members[0]), "s")


def test_a_study_merges_mapping_by_mapping_and_replaces_lists_whole(tmp_path):
    study = read_study(
        write(
            tmp_path,
            "study: {name: s, keep: null}\n"
            "train: {lr: 0.0001}\n"
            "models: {unet: {decoder_channels: [256, 128, 64, 32, 16], train: {epochs: 50}}}\n",
        )
    )
    base = real_params_raw()
    merged = merge_study(base, study, "s")
    assert merged["train"] == {**base["train"], "lr": 0.0001}
    assert merged["models"]["unet"]["decoder_channels"] == [256, 128, 64, 32, 16]
    assert merged["models"]["unet"]["train"] == {"epochs": 50}
    assert entries(merged) == entries(base)  # keep: null keeps them all


# --- the rewritten params.yaml -----------------------------------------------------------------


KEEPS = [
    ("unet", "sam_decoder"),  # as the ultrasound study: the SAM header stays with sam_decoder
    ("otsu",),  # only the first entry
    ("sam_lora",),  # only the last one
    ("unet", "attention_unet"),  # no SAM entry left
    ("sobel", "unet", "sam_point", "sam_box", "sam_decoder"),
]


@pytest.mark.parametrize("keep", KEEPS, ids="-".join)
def test_removed_entries_take_their_comments_and_the_file_parses_back(keep):
    base = real_params_raw()
    merged = copy.deepcopy(apply_keep(base, keep, "s"))
    merged["sweep"]["enabled"] = "sam_lora" in keep
    text = render(PARAMS_TEXT, base, merged, source="params.yaml")
    assert yaml.safe_load(text) == merged
    for name in base["models"]:
        block = entry_block(PARAMS_TEXT, name)
        if name in keep:
            assert block in text  # every line of it, with its comments
        else:
            assert block.splitlines()[0] not in text.splitlines()  # its key line went
    sam = [m for m, e in base["models"].items() if e["model"].startswith("sam_")]
    header = comments_above(PARAMS_TEXT, sam[0])  # the comment block heading the SAM entries
    assert header and all((line in text) == any(m in keep for m in sam) for line in header)
    # The commented ensembles' only entry (DVC's `-S ~key` broke the file there) goes cleanly.
    assert re.search(r"^ensembles: \{\} +#", text, flags=re.M)


def test_an_unchanged_file_is_written_back_byte_for_byte():
    base = real_params_raw()
    assert render(PARAMS_TEXT, base, base, source="params.yaml") == PARAMS_TEXT


def test_new_values_are_written_as_params_yaml_writes_them(tmp_path):
    study = write(
        tmp_path,
        "study: {name: s}\n"
        "train: {lr: 0.00001, weight_decay: 0.1}\n"
        "data: {classes: [{name: bg, values: [0]}, {name: fg, values: [1]}]}\n"
        "models:\n  sam_copy: {model: otsu, smooth_sigma: 2.0}\n",
    )
    base = real_params_raw()
    merged = merge_study(base, read_study(study), "s")
    text = render(PARAMS_TEXT, base, merged, source="params.yaml")
    assert yaml.safe_load(text) == merged  # 1.0e-05, not 1e-05 (a string to YAML 1.1)
    assert "  lr: 1.0e-05\n" in text
    assert "    - name: bg\n      values: [0]\n" in text  # block list, flow lists of scalars
    assert "  sam_copy:\n    model: otsu\n    smooth_sigma: 2.0\n" in text


# --- the command -------------------------------------------------------------------------------

STUDY = """\
study:
  name: small-study
  keep: [unet, sam_decoder]
train: {lr: 0.0001}
models:
  unet: {train: {epochs: 50}}
sweep: {enabled: false}
"""


def test_dry_run_prints_the_merged_params_and_the_changed_keys_and_writes_nothing(
    tmp_path, params_file, capsys
):
    from segbench.cli import main

    study = write(tmp_path, STUDY)
    before = params_file.read_bytes()
    main(["study", str(study), "--dry-run", "--params", str(params_file)])
    out = capsys.readouterr().out
    assert params_file.read_bytes() == before
    merged = merge_study(real_params_raw(), read_study(study), "s")
    assert yaml.safe_load(out) == merged  # stdout is the params file it would write
    assert out.startswith(PARAMS_TEXT.split("\n\n", 1)[0])  # the top comment too
    changes = [line[4:] for line in out.splitlines() if line.startswith("#   ")]
    assert "train.lr: 0.001 -> 0.0001" in changes
    assert "models.unet.train: added {epochs: 50}" in changes
    assert "models.otsu: removed" in changes and "ensembles.ensemble: removed" in changes
    assert "sweep.enabled: true -> false" in changes
    assert not any(c.startswith(("models.unet.model", "models.sam_decoder")) for c in changes)


def test_applying_rewrites_params_yaml_keeping_comments_and_says_what_next(
    tmp_path, params_file, capsys
):
    from segbench.cli import main
    from segbench.config import load_params

    params_file.chmod(0o640)
    study = write(tmp_path, STUDY)
    main(["study", str(study), "--params", str(params_file)])
    out = capsys.readouterr().out
    text = params_file.read_text()
    merged = merge_study(real_params_raw(), read_study(study), "s")
    assert yaml.safe_load(text) == merged
    assert load_params(params_file).models.keys() == {"unet", "sam_decoder"}
    assert text.startswith(PARAMS_TEXT.split("\n\n", 1)[0] + "\n\n")  # the top comment
    assert entry_block(PARAMS_TEXT, "sam_decoder") in text
    assert entry_block(PARAMS_TEXT, "unet").rstrip("\n") in text  # then its new train keys
    assert (params_file.stat().st_mode & 0o777) == 0o640
    assert not list(tmp_path.glob(".params.yaml.*"))  # no temporary file left
    assert "train.lr: 0.001 -> 0.0001" in out
    assert out.rstrip().splitlines()[-1].startswith("next: dvc exp run --name small-study")
    assert f"git checkout {params_file}" in out
    # Applying it again changes nothing.
    main(["study", str(study), "--params", str(params_file)])
    assert "already holds it" in capsys.readouterr().out
    assert params_file.read_text() == text


def test_missing_files_are_warnings_and_the_params_are_still_shown_and_written(
    tmp_path, params_file, capsys
):
    """A checkpoint that is not on this machine does not stop the study (the pipeline's check
    stage does, where it runs); the same warning is given with --dry-run and when writing."""
    from segbench.cli import main

    study = write(
        tmp_path,
        "study: {name: vit-b}\n"
        "models: {sam_box: {variant: vit_b, checkpoint: nowhere/sam_vit_b_01ec64.pth}}\n",
    )
    warnings = []
    for dry in (["--dry-run"], []):
        main(["study", str(study), *dry, "--params", str(params_file)])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: ")
        assert "models.sam_box.checkpoint" in lines[0] and "nowhere/sam_vit_b" in lines[0]
        warnings.append(lines[0])
    assert warnings[0] == warnings[1]
    assert yaml.safe_load(params_file.read_text())["models"]["sam_box"]["variant"] == "vit_b"


BAD = {
    "not a mapping": ("- unet\n- sam_decoder\n", "expected a mapping"),
    "unknown section": ("study: {name: s}\ntrian: {lr: 0.1}\n", "unknown top-level section trian"),
    "no study section": ("train: {lr: 0.1}\n", "study: missing"),
    "study key": ("study: {name: s, kept: [unet]}\n", "study.kept: unknown key"),
    "bad name": ("study: {name: 'a b'}\n", "study.name"),
    "unknown key": ("study: {name: s}\ntrain: {lrr: 0.1}\n", "train.lrr: unknown key"),
    "bad value": ("study: {name: s}\ntrain: {lr: -1}\n", "train.lr: Input should be"),
    "unknown entry": ("study: {name: s, keep: [unet, unett]}\n", "unett: not an entry"),
    "ensemble": ("study: {name: s, keep: [ensemble, unet]}\n", "the ensemble ensemble averages"),
    "encoder": (
        "study: {name: s}\nmodels: {unet: {encoder_name: resnet181}}\n",
        "models.unet.encoder_name: unknown encoder",
    ),
    "empty": ("# only a comment\n", "empty"),
    "duplicate key": ("study: {name: s}\ntrain: {lr: 0.1}\ntrain: {lr: 0.2}\n", "given twice"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_with_exit_status_2_and_nothing_written(tmp_path, case):
    text, says = BAD[case]
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    write(tmp_path, text)
    proc = segbench("study", "study.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert params.read_text() == PARAMS_TEXT


def test_unknown_keep_lists_the_valid_names(tmp_path):
    write(tmp_path, "study: {name: s, keep: [unett]}\n")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = segbench("study", "study.yaml", "--dry-run", cwd=tmp_path)
    valid = proc.stderr.strip().rsplit("valid: ", 1)[1].split(", ")
    assert valid == [*real_params_raw()["models"], *real_params_raw()["ensembles"]]


def test_a_missing_study_file_is_one_line(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = segbench("study", "configs/study-nowhere.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "study-nowhere.yaml: no such study file" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_segbench_experiment_points_a_study_file_to_segbench_study():
    from segbench.commands.experiment import command

    study = REPO / "configs" / "study-unet-vs-attention-unet.yaml"
    with pytest.raises(SegbenchError, match=r"is a study file .* `segbench study "):
        command(str(REPO / "params.yaml"), str(study), [])
