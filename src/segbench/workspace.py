"""Copies of the repository: for end-to-end tests and benchmarks that must not touch the
workspace (DVC outputs, MLflow store) of the checkout they run from."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_GIT = ["git", "-c", "user.name=segbench", "-c", "user.email=segbench@localhost"]


def copy_repository(src: str | Path, dest: str | Path) -> Path:
    """Copy the files of ``src`` that git would see (tracked, plus untracked but not ignored)
    into ``dest`` and commit them there as a fresh git repository; return ``dest``."""
    src, dest = Path(src), Path(dest)
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=src,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in filter(None, listing.split("\0")):
        if (src / rel).is_file():  # skips files deleted but not yet staged
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    commit(dest, "copy", init=True)
    return dest


def commit(repo: str | Path, message: str, *, init: bool = False) -> None:
    """Stage everything in ``repo`` and commit it (``init``: create the repository first)."""
    if init:
        subprocess.run([*_GIT, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*_GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*_GIT, "commit", "-qm", message], cwd=repo, check=True)
