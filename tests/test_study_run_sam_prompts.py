"""configs/study-sam-prompts-decoder.yaml, shrunk, through `segbench study` and `dvc repro`
(tests/studies.py): the prompt modes, the Dice-against-clicks curve and a mask decoder trained
from scratch beside the fine-tuned one."""

from __future__ import annotations

import pytest

from segbench.evalextra import read_extra
from segbench.modelcard import ModelCard
from tests.studies import run_study

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long (tests/conftest.py)


def test_sam_prompt_study_runs_with_its_curve_and_a_scratch_decoder(tmp_path):
    run = run_study("study-sam-prompts-decoder", tmp_path)
    kept = ["sam_point", "sam_points", "sam_box", "sam_decoder", "sam_decoder_scratch"]
    assert list(run.params["models"]) == kept
    curve = read_extra(run.repo / "eval" / "sam_points")["points_curve"]
    assert [r["k"] for r in curve] == list(range(1, 10))  # k_points: 9
    assert curve[-1]["dice"] == pytest.approx(run.metrics("sam_points")["dice"], nan_ok=True)
    scratch = ModelCard.read(run.repo / "models" / "sam_decoder_scratch")
    assert scratch.entry.decoder_init == "scratch"
    assert ModelCard.read(run.repo / "models" / "sam_decoder").entry.decoder_init == "checkpoint"
    html = run.html()
    assert 'id="points-curve"' in html and '<tr data-entry="sam_points">' in html
    assert all(f'<tr data-model="{m}"' in html for m in kept)
    assert "decoder from scratch" in html and "Mask decoder trained from scratch." in html
    assert run.metrics("sam_decoder_scratch")["scratch_decoder"] is True
