"""Bad files get a clear error naming them; failed stages leave no half-written output."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_image, read_mask, write_image, write_mask


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(SegbenchError, match=r"broken\.png: cannot decode image"):
        read_image(bad)
    with pytest.raises(SegbenchError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")


def test_masks_round_trip_as_0_255_and_read_back_as_0_1(tmp_path):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:5, 3:6] = 1
    write_mask(tmp_path / "m.png", mask)
    assert set(np.unique(read_image(tmp_path / "m.png"))) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    write_image(tmp_path / "i.png", mask * 7)
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), mask * 7)


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("stage crashed")
    assert (out / "a.txt").read_text() == "first"  # the good output survives
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial directory left


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_partial_output_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "models" / "unet"
    dead = tmp_path / "models" / f".unet.partial-{_dead_pid()}"  # kill -9: no clean-up ran
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "weights.pt").write_bytes(b"half")
    live = tmp_path / "models" / f".unet.partial-{os.getppid()}"  # another run, still going
    live.mkdir()
    # Another output's, in the same folder (its own stage may never run again: DVC restores a
    # stage it has run before from its run cache without running it).
    other = tmp_path / "models" / f".segformer.partial-{_dead_pid()}"
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "card.json").write_text("{}")
    assert not dead.exists() and live.is_dir() and not other.exists()
    assert (out / "card.json").is_file()


def test_a_kill_between_the_two_renames_is_finished_by_the_next_run(tmp_path):
    models, pid = tmp_path / "models", _dead_pid()
    # Killed after moving the old output aside, before moving the new one in:
    (models / f".unet.old-{pid}").mkdir(parents=True)
    (models / f".unet.old-{pid}" / "v").write_text("old")
    (models / f".unet.partial-{pid}").mkdir()
    (models / f".unet.partial-{pid}" / "v").write_text("new")
    # ... and an old copy whose new output did get in, left by another killed swap.
    (models / "segformer").mkdir()
    (models / "segformer" / "v").write_text("new")
    (models / f".segformer.old-{_dead_pid()}").mkdir()
    with atomic_dir(models / "otsu") as tmp:
        (tmp / "v").write_text("x")
    assert sorted(p.name for p in models.iterdir()) == ["otsu", "segformer", "unet"]
    assert (models / "unet" / "v").read_text() == "new"


def test_atomic_dir_replaces_by_renames_never_deleting_in_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    deleted = []
    real = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda p, **k: deleted.append(p) or real(p, **k))
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("2")
    assert (out / "a").read_text() == "2"
    assert out not in deleted  # the old output went aside first; only then was it deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_dvc_ignores_partial_outputs_and_resume_checkpoints(tmp_path):
    """A killed run's leftovers under models/ never enter the hash of `models` (the ensembles'
    dependency) or of an output; the project's .dvcignore says so to a real DVC repo."""
    from dvc.repo import Repo

    from tests.conftest import REPO

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    repo = Repo.init(str(tmp_path))
    models = tmp_path / "models"
    for path in ("unet/weights.pt", ".unet.partial-123/weights.pt", ".unet.resume/last.pt"):
        (models / path).parent.mkdir(parents=True, exist_ok=True)
        (models / path).write_bytes(b"x")
    ignore = repo.dvcignore
    assert not ignore.is_ignored_dir(str(models / "unet"))
    assert ignore.is_ignored_dir(str(models / ".unet.partial-123"))
    assert ignore.is_ignored_dir(str(models / ".unet.resume"))
    walked = {
        os.path.relpath(os.path.join(root, f), models)
        for root, _, files in ignore.walk(repo.fs, str(models))
        for f in files
    }
    assert walked == {"unet/weights.pt"}
    repo.close()
