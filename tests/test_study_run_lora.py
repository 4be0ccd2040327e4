"""configs/study-lora-sam-particles.yaml, shrunk, through `segbench study` and `dvc repro`
(tests/studies.py): the LoRA sweep on a local Ray, two single runs, and the automatic mask
generator on the base SAM and the LoRA-adapted one, side by side."""

from __future__ import annotations

import pytest

from segbench.evalextra import read_extra
from segbench.io import read_csv
from tests.studies import run_study

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long (tests/conftest.py)


def test_lora_study_runs_its_sweep_and_compares_sam_with_its_adapted_self(tmp_path):
    run = run_study("study-lora-sam-particles", tmp_path)
    assert list(run.params["models"]) == ["sam_auto", "sam_lora", "sam_lora_b8"]
    trials = read_csv(run.repo / "sweeps" / "trials.csv")
    assert len(trials) == 2 and all(int(t["params_trainable"]) > 0 for t in trials)
    compare = read_extra(run.repo / "eval" / "sam_lora")["auto_compare"]
    assert compare["settings"]["pred_iou_thresh"] == 0.90
    assert len(compare["rows"]) == run.metrics("sam_lora")["n_images"]
    assert read_extra(run.repo / "eval" / "sam_lora_b8")["auto_compare"] is None
    html = run.html()
    assert '<section class="auto-compare" data-entry="sam_lora">' in html
    assert all(f'<tr data-model="{m}"' in html for m in run.params["models"])
