"""Run a reference study (``configs/study-*.yaml``) shrunk, through ``segbench study`` and
``dvc repro`` in a copy of the repository: the helpers of the ``tests/test_study_run_*.py``
modules (one module per study, so that pytest-xdist spreads them over the workers).

The study file is applied exactly as a user applies it; the shrink is then applied by the test,
never by the file: the CPU-sized data of tests/conftest.py (SHRINK), one epoch, one process, the
tiny random-weight SAM at 64 px, a two-trial sweep. A dataset from the hub becomes the synthetic
stand-in of its kind, and every per-model training key is kept but made CPU-sized.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from segbench.io import read_json
from tests.conftest import REPO, SHRINK, deep_update, seeded_store, venv_env

# The synthetic stand-in of a study's hub or folder dataset (binary: ultrasound's lesions).
STAND_IN_DOMAIN = "ultrasound"


@dataclass
class StudyRun:
    repo: Path
    params: dict  # the params.yaml dvc repro ran with (the study's, shrunk)
    applied: str  # what `segbench study` printed
    stdout: str  # dvc repro's

    def metrics(self, name: str) -> dict:
        return read_json(self.repo / "eval" / name / "metrics.json")

    def html(self) -> str:
        return (self.repo / "reports" / "report.html").read_text()


def shrink(raw: dict) -> dict:
    """``raw`` (a study's merged params) made to run on 2 CPU cores in seconds."""
    small = {k: v for k, v in SHRINK.items() if k not in ("models", "sweep")}
    small["data"] = {k: v for k, v in SHRINK["data"].items() if k != "split"}  # the study's
    raw = deep_update(raw, small)
    data = raw["data"]
    if data["source"] != "synthetic":
        data.update(source="synthetic", path=None, classes=None, ignore_values=[])
        data["synthetic"]["domain"] = STAND_IN_DOMAIN
        data["mask"] = {"value": None, "threshold": None, "instances": "auto"}
    raw["prepare"].update(scale=0.5, tile_size=64, stride=64, overlap=None, random_crops=1)
    raw["prepare"]["augment"]["factor"] = 1
    raw["train"].update(
        epochs=1, batch_size=4, accumulate=1, devices=1, device="cpu", warmup_epochs=0
    )
    raw["evaluate"]["bootstrap_resamples"] = 1000
    for entry in raw["models"].values():
        if entry.get("train"):
            own = entry["train"]
            own.update({k: 1 for k in ("epochs", "devices") if k in own})
            own.update({k: min(v, 4) for k, v in own.items() if k == "batch_size"})
            own.update({k: "cpu" for k in ("device",) if k in own})
            own.pop("warmup_epochs", None)
        if "variant" in entry:  # SAM: the tiny random-weight one at the tiles' size
            entry.update(variant="tiny", checkpoint=None, sha256=None, image_size=64)
        for key in ("auto", "auto_compare"):
            if entry.get(key):
                entry[key].update(points_per_side=4, min_mask_region_area=4, crop_n_layers=0)
        if entry.get("encoder_weights"):
            entry["encoder_weights"] = None
    sweep = raw["sweep"]
    if sweep["enabled"]:
        space = sweep["space"]
        space["model"] = {k: v[:2] for k, v in (space.get("model") or {}).items()}
        space["train"] = {k: v[:1] for k, v in (space.get("train") or {}).items()}
        if "batch_size" in space["train"]:
            space["train"]["batch_size"] = [4]
        if "rank" in space["model"]:
            space["model"]["rank"] = [2, 4]
        sweep.update(epochs=1, resources={"cpu": 1, "gpu": 0}, storage=None, num_samples=1)
    return raw


def run_study(name: str, tmp_path: Path) -> StudyRun:
    """``configs/<name>.yaml`` applied with ``segbench study`` to a copy of the repository,
    shrunk, committed and run with ``dvc repro``; a failed step fails the test with its
    output."""
    from segbench.workspace import commit, copy_repository

    repo = copy_repository(REPO, tmp_path / "repo")
    env = venv_env() | {"MLFLOW_TRACKING_URI": seeded_store(tmp_path / "mlflow.db")}
    applied = _run(
        [sys.executable, "-m", "segbench.cli", "study", f"configs/{name}.yaml"], repo, env
    )
    raw = shrink(yaml.safe_load((repo / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    commit(repo, f"{name}, shrunk")
    out = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    return StudyRun(repo, raw, applied, out)


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd[2:])} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr
