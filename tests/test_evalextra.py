"""What evaluate measures beyond an entry's row (segbench.evalextra): the Dice-against-clicks
curve of a zero-shot SAM, and the automatic mask generator on SAM and its LoRA-adapted self."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segbench.errors import SegbenchError
from segbench.evalextra import read_extra, summarize_auto
from segbench.evaluate import evaluate
from segbench.io import read_csv, read_json
from segbench.sam.build import build_sam
from segbench.sam.zero_shot import ZeroShot
from segbench.training import train
from tests.conftest import raw_entry
from tests.test_sam_pipeline import _params

SMALL_AUTO = {"points_per_side": 4, "min_mask_region_area": 4, "points_per_batch": 16}


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 80 RGB image with two bright discs, and their (H, W) bool mask."""
    yy, xx = np.mgrid[:64, :80]
    mask = ((yy - 20) ** 2 + (xx - 20) ** 2 < 100) | ((yy - 44) ** 2 + (xx - 58) ** 2 < 144)
    rgb = np.repeat((40 + 180 * mask).astype(np.uint8)[:, :, None], 3, axis=2)
    return rgb, mask


def test_the_curves_last_point_is_the_k_point_mask_and_each_point_its_own_prompt():
    sam = build_sam("tiny", image_size=64, checkpoint=None, init_seed=0)
    rgb, mask = _blobs()
    zero_shot = ZeroShot(sam, k_points=4)
    zero_shot.set_image(rgb, image_id="blobs")
    curve = zero_shot.predict_points_curve(mask)
    assert len(curve) == 4 and all(m.shape == mask.shape and m.dtype == bool for m in curve)
    assert np.array_equal(curve[-1], zero_shot.predict("points", mask))
    # The j-point mask is the j-point entry's mask: points are a greedy, nested sequence.
    for j in (1, 2):
        alone = ZeroShot(sam, k_points=j)
        alone.set_image(rgb, image_id="blobs")
        assert np.array_equal(curve[j - 1], alone.predict("points", mask))


def test_points_curve_is_only_for_prompt_points():
    with pytest.raises(SegbenchError, match=r"models\.sam_box\.points_curve: only prompt: points"):
        _params({"sam_box": ("sam_box", {"points_curve": True})})


@pytest.fixture(scope="module")
def extras_run(tiny_data, tmp_path_factory):
    """A zero-shot SAM with its points curve, a LoRA SAM compared with its base on automatic
    masks and Otsu (no extra), trained, evaluated and reported: ``(params, root, metrics)``."""
    from segbench.report import report

    raw_dir, tiles, _ = tiny_data
    root = tmp_path_factory.mktemp("extras")
    auto = raw_entry("sam_auto")["auto"] | SMALL_AUTO
    curve = {"k_points": 3, "points_curve": True, "embedding_cache": None}
    params = _params(
        {
            "sam_points": ("sam_points", curve),
            "sam_lora": ("sam_lora", {"rank": 2, "auto_compare": auto}),
            "otsu": ("otsu", {}),
        },
        epochs=1,
    )
    metrics = {}
    for name in params.models:
        train(name, params, tiles, root / "models" / name)
        metrics[name] = evaluate(root / "models" / name, params, raw_dir, root / "eval" / name)
    report(params, raw_dir=raw_dir, eval_dir=root / "eval", out_dir=root / "reports")
    return params, root, metrics


@pytest.mark.slow
def test_evaluate_writes_the_points_curve_in_the_same_pass(extras_run):
    _, root, metrics = extras_run
    extra = read_extra(root / "eval" / "sam_points")
    curve = extra["points_curve"]
    assert [row["k"] for row in curve] == [1, 2, 3] and extra["auto_compare"] is None
    assert curve[-1]["dice"] == pytest.approx(metrics["sam_points"]["dice"])  # the row's end
    per_image = read_csv(root / "eval" / "sam_points" / "extra" / "points_curve_per_image.csv")
    tests = read_csv(root / "eval" / "sam_points" / "per_image.csv")
    assert [r["id"] for r in per_image] == [r["id"] for r in tests]
    assert list(per_image[0]) == ["id", "dice_1", "dice_2", "dice_3"]


@pytest.mark.slow
def test_an_entry_without_extras_says_so(extras_run):
    _, root, _ = extras_run
    index = read_json(root / "eval" / "otsu" / "extra" / "index.json")
    assert index == {"points_curve": False, "auto_compare": False}
    assert read_extra(root / "eval" / "otsu") == {"points_curve": None, "auto_compare": None}


@pytest.mark.slow
def test_lora_sam_against_its_base_with_the_automatic_mask_generator(extras_run):
    _, root, _ = extras_run
    compare = read_extra(root / "eval" / "sam_lora")["auto_compare"]
    tests = read_csv(root / "eval" / "sam_lora" / "per_image.csv")
    assert [r["id"] for r in compare["rows"]] == [r["id"] for r in tests]
    assert compare["settings"]["points_per_side"] == 4 and compare["random_init"] is True
    for kind in ("base", "adapted"):
        assert {p.stem for p in (compare["dir"] / kind).glob("*.png")} == {r["id"] for r in tests}
        assert 0.0 <= compare[kind]["dice"] <= 1.0 or math.isnan(compare[kind]["dice"])
    assert set(compare["difference"]) >= {"mean_diff", "p", "ci_low", "ci_high", "n_pairs"}


@pytest.mark.slow
def test_the_report_shows_the_curve_and_the_side_by_side(extras_run):
    _, root, _ = extras_run
    html = (root / "reports" / "report.html").read_text()
    assert 'id="points-curve"' in html and 'alt="test Dice against the number of point' in html
    assert '<tr data-entry="sam_points"><td>sam_points</td>' in html
    section = html.split('<section class="auto-compare" data-entry="sam_lora">')[1]
    assert "<strong>random weights</strong>: these numbers" in " ".join(section.split())
    assert "Adapted − base" in section and "(Wilcoxon signed-rank)" in section
    summary = (root / "reports" / "summary.md").read_text()
    assert "## Dice against the number of point prompts" in summary
    assert "| sam_points | " in summary and "## SAM against its LoRA-adapted self" in summary
    assert (root / "reports" / "figures" / "points_curve.png").is_file()


def test_the_paired_difference_is_adapted_minus_base():
    rows = [
        {"id": str(i), "dice_base": b, "dice_adapted": a, "iou_base": b, "iou_adapted": a}
        for i, (b, a) in enumerate([(0.5, 0.7), (0.4, 0.65), (0.6, 0.7), (0.3, 0.6), (0.5, 0.8)])
    ]
    summary = summarize_auto(rows, n_resamples=1000, seed=0)
    assert summary["difference"]["mean_diff"] == pytest.approx(0.23)
    assert 0 < summary["difference"]["ci_low"] <= summary["difference"]["ci_high"]
    assert summary["adapted"]["dice"] == pytest.approx(0.69)
    same = [r | {"dice_adapted": r["dice_base"]} for r in rows]
    assert summarize_auto(same, n_resamples=1000, seed=0)["difference"]["p"] == 1.0


def test_auto_compare_refused_on_several_classes():
    from segbench.config import parse_params
    from tests.conftest import SHRINK, deep_update, real_params_raw

    raw = deep_update(real_params_raw(), SHRINK)
    raw["data"]["synthetic"]["domain"] = "phases"
    raw["models"]["sam_lora"]["auto_compare"] = raw_entry("sam_auto")["auto"]
    with pytest.raises(SegbenchError, match=r"models\.sam_lora\.auto_compare: .*3 classes"):
        parse_params(raw)


def test_a_decoder_trained_from_scratch_is_noted_on_its_row_and_explained():
    from segbench.comparison import fmt
    from segbench.reporttext import banners

    params = _params(
        {
            "sam_decoder": ("sam_decoder", {}),
            "scratch": ("sam_decoder", {"decoder_init": "scratch"}),
        }
    )
    assert params.models["scratch"].notes()["scratch_decoder"] is True
    assert params.models["sam_decoder"].notes()["scratch_decoder"] is False
    row = {"model": "scratch", **params.models["scratch"].notes()}
    assert fmt("notes", row) == "random-init SAM, decoder from scratch"
    assert any(b.startswith("Mask decoder trained from scratch.") for b in banners([row]))
    assert not any("from scratch" in b for b in banners([{"model": "sam_decoder"}]))
