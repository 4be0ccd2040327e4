"""configs/study-unet-vs-attention-unet.yaml, shrunk, through `segbench study` and `dvc repro`
(tests/studies.py)."""

from __future__ import annotations

import pytest

from tests.studies import run_study

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long (tests/conftest.py)


def test_unet_against_attention_unet_runs_with_its_split_and_baselines(tmp_path):
    run = run_study("study-unet-vs-attention-unet", tmp_path)
    kept = ["otsu", "sobel", "canny", "unet", "attention_unet"]
    assert list(run.params["models"]) == kept and run.params["ensembles"] == {}
    split = run.params["data"]["split"]
    assert (split["train"], split["val"], split["test"]) == (0.8, 0.1, 0.1)
    html = run.html()
    for name in kept:
        assert 0.0 <= run.metrics(name)["dice"] <= 1.0
        assert f'<tr data-model="{name}"' in html
    assert '<tr data-model="segformer"' not in html and "sam_" not in run.stdout
    assert run.params["models"]["unet"]["decoder_channels"] == [256, 128, 64, 32, 16]
