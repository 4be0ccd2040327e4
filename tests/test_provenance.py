"""Provenance: the dirty-tree flag from real git repositories, and the test/val split hashes."""

import subprocess
from pathlib import Path

import pytest

from segbench.config import parse_params
from segbench.datahash import split_hash
from segbench.errors import SegbenchError
from segbench.fetch import fetch
from segbench.io import read_csv, read_json, write_csv
from segbench.tracking import git_state, run_tags
from tests.conftest import deep_update, real_params_raw
from tests.datasets import write_png_dataset

COMMITTED = {
    "src/segbench/model.py": "weights = 1\n",
    "params.yaml": "lr: 0.001\n",
    "dvc.lock": "stages: {}\n",
    "README.md": "# readme\n",
    ".gitignore": "*.log\n",
}


@pytest.fixture
def git_env(monkeypatch, tmp_path):
    """No user or system git config (a global excludesfile would change what is untracked),
    and no repository above ``tmp_path`` to fall back on."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    out = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path, git_env) -> Path:
    """A repository with one commit of :data:`COMMITTED` and a clean tree."""
    root = tmp_path / "repo"
    for name, text in COMMITTED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_clean_tree_names_its_commit(repo):
    assert git_state(repo) == {"git_commit": git(repo, "rev-parse", "HEAD"), "git_dirty": "false"}


@pytest.mark.parametrize(
    ("path", "text", "dirty"),
    [
        ("src/segbench/model.py", "weights = 2\n", "true"),  # edited code
        ("params.yaml", "lr: 0.1\n", "true"),  # edited config
        ("src/segbench/new.py", "x = 1\n", "true"),  # untracked code runs too
        ("stages/extra.py", "x = 1\n", "true"),
        ("src/segbench/debug.log", "ignored\n", "false"),  # .gitignore'd
        ("dvc.lock", "stages: {a: 1}\n", "false"),  # the pipeline rewrites it
        ("README.md", "# edited\n", "false"),  # changes no number
        ("notes.txt", "scratch\n", "false"),  # untracked, outside the run's inputs
    ],
)
def test_dirty_means_the_code_or_config_that_ran_differs(repo, path, text, dirty):
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    state = git_state(repo)
    assert state["git_dirty"] == dirty, path
    assert state["git_commit"] == git(repo, "rev-parse", "HEAD")


def test_staged_and_deleted_files_are_dirty(repo):
    (repo / "params.yaml").write_text("lr: 0.1\n")
    git(repo, "add", "params.yaml")
    assert git_state(repo)["git_dirty"] == "true"
    git(repo, "commit", "-q", "-m", "second")
    assert git_state(repo)["git_dirty"] == "false"
    (repo / "src/segbench/model.py").unlink()
    assert git_state(repo)["git_dirty"] == "true"


def test_from_a_subdirectory_the_whole_repository_counts(repo):
    (repo / "params.yaml").write_text("lr: 0.1\n")  # outside the working directory below
    assert git_state(repo / "src" / "segbench")["git_dirty"] == "true"


def test_outside_a_repository_or_without_git_is_unknown(tmp_path, git_env, monkeypatch):
    outside = tmp_path / "plain"
    outside.mkdir()
    unknown = {"git_commit": "unknown", "git_dirty": "unknown"}
    assert git_state(outside) == unknown
    assert git_state(tmp_path / "missing") == unknown  # cwd that does not exist
    monkeypatch.setenv("PATH", str(outside))  # no git executable at all
    assert git_state(outside) == unknown


def test_repository_without_a_commit(tmp_path, git_env):
    git(tmp_path, "init", "-q")
    assert git_state(tmp_path)["git_commit"] == "unknown"


def test_run_tags_carry_the_dirty_flag_and_the_test_hash(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    (repo / "src/segbench/model.py").write_text("weights = 3\n")
    tags = run_tags(stage="evaluate@unet", data_version="abc", device="cpu", test_data_hash="f0")
    assert tags["git_dirty"] == "true" and tags["test_data_hash"] == "f0"
    assert tags["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["dvc_stage"] == "evaluate@unet" and tags["data_version"] == "abc"
    assert all(isinstance(v, str) for v in tags.values())
    untagged = run_tags(stage="train@unet", data_version="abc", device="cpu")
    assert "test_data_hash" not in untagged and untagged["git_dirty"] == "true"


def raw_split(root: Path) -> Path:
    """A hand-written ``data/raw``: two test, one val and one train pair, listed out of order."""
    rows = []
    for i, split in [(3, "test"), (1, "test"), (2, "val"), (0, "train")]:
        image, mask = f"images/{i}.png", f"masks/{i}.png"
        for name, payload in ((image, b"image%d" % i), (mask, b"\x00\xff%d" % i)):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(payload)
        rows.append({"id": str(i), "image": image, "mask": mask, "split": split})
    write_csv(root / "manifest.csv", rows, ["id", "image", "mask", "split"])
    return root


def test_split_hash_follows_its_split_only(tmp_path):
    raw = raw_split(tmp_path / "raw")
    test, val = split_hash(raw, "test"), split_hash(raw, "val")
    assert len(test) == 64 and test != val
    (raw / "images/0.png").write_bytes(b"another train image")
    assert split_hash(raw, "test") == test and split_hash(raw, "val") == val
    mask = bytearray((raw / "masks/1.png").read_bytes())
    mask[0] ^= 1  # one byte of one test mask
    (raw / "masks/1.png").write_bytes(bytes(mask))
    assert split_hash(raw, "test") != test and split_hash(raw, "val") == val


def test_split_hash_ignores_manifest_order_but_not_ids(tmp_path):
    raw = raw_split(tmp_path / "raw")
    test = split_hash(raw, "test")
    rows = read_csv(raw / "manifest.csv")
    write_csv(raw / "manifest.csv", rows[::-1], list(rows[0]))
    assert split_hash(raw, "test") == test
    for row in rows:
        row["id"] = "x" + row["id"]  # same files under other ids: other data
    write_csv(raw / "manifest.csv", rows, list(rows[0]))
    assert split_hash(raw, "test") != test


def test_split_hash_names_a_missing_file(tmp_path):
    raw = raw_split(tmp_path / "raw")
    (raw / "masks/3.png").unlink()
    with pytest.raises(SegbenchError, match=r"masks/3\.png.*mask of '3'.*re-run the fetch"):
        split_hash(raw, "test")


def test_fetch_writes_the_test_and_val_hashes(tmp_path):
    root = write_png_dataset(tmp_path / "in", 8)
    params = parse_params(
        deep_update(real_params_raw(), {"data": {"source": "folder", "path": str(root)}})
    )
    summary = fetch(params, tmp_path / "raw")
    stored = read_json(tmp_path / "raw" / "summary.json")
    for split in ("test", "val"):
        assert stored[f"{split}_data_hash"] == split_hash(tmp_path / "raw", split)
        assert summary[f"{split}_data_hash"] == stored[f"{split}_data_hash"]
    assert stored["test_data_hash"] != stored["val_data_hash"]
