"""The comparison table's statistics, the galleries' choice of images, the Pareto front, and a
report built from real trained models with every section a reviewer needs."""

import csv

import numpy as np
import pytest

from segbench.comparison import comparison_rows, fmt, pareto_front
from segbench.config import parse_params
from segbench.io import write_csv, write_json
from segbench.report import pick_examples
from segbench.reporttext import headline
from tests.conftest import only_models
from tests.test_evalmetrics import example_metrics


def _model(root, name, dice, val=0.8, **extra):
    """A model's evaluation directory, as the evaluate stage writes it (per-image ``score``
    = Dice here: no empty reference; validation score ``val``); its name."""
    rows = [{"id": f"img{i:02d}", "score": d, "dice": d, "fp": 0} for i, d in enumerate(dice)]
    (root / "eval" / name).mkdir(parents=True)
    write_csv(root / "eval" / name / "per_image.csv", rows, ["id", "score", "dice", "fp"])
    mean = float(np.nanmean(dice))
    metrics = example_metrics(dice=mean, score=mean, val_score=val, n_images=len(dice))
    write_json(root / "eval" / name / "metrics.json", metrics | extra)
    return name


def test_the_reference_is_chosen_on_validation_and_every_row_is_compared_with_it(tmp_path):
    rng = np.random.default_rng(0)
    best = rng.uniform(0.85, 0.95, size=12)
    names = [
        _model(tmp_path, "oracle", best + 0.04, val=0.99, oracle_prompts=True),
        _model(tmp_path, "best", best, val=0.90),
        # Best on the test set, but not on validation: choosing it would be choosing on test.
        _model(tmp_path, "lucky", best + 0.02, val=0.85),
        _model(tmp_path, "twin", best + rng.normal(0, 0.005, size=12), val=0.89),
        _model(tmp_path, "weak", best - 0.3, val=0.5),
    ]
    rows = comparison_rows(names, tmp_path / "eval")
    by = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows[:3]] == ["oracle", "lucky", "best"]  # sorted by test score
    assert by["best"]["reference"] and "reference" not in by["lucky"]  # ... reference on val
    assert fmt("verdict", by["best"]) == "reference"
    assert by["lucky"]["verdict"] == "significantly better"
    assert by["lucky"]["mean_diff"] == pytest.approx(0.02)
    assert fmt("diff", by["lucky"]).startswith("+0.020 [+0.020, +0.020]")
    assert fmt("pairs", by["lucky"]) == "12"
    assert by["twin"]["verdict"] == "not significantly different"
    low, high = by["twin"]["diff_ci_low"], by["twin"]["diff_ci_high"]
    assert low <= by["twin"]["mean_diff"] <= high
    assert by["weak"]["verdict"] == "significantly worse"
    assert fmt("verdict", by["weak"]).startswith("worse * (p=")
    assert by["oracle"]["verdict"] == "significantly better"  # an upper bound, labelled as such
    # Holm over the comparisons: never smaller than the raw p.
    assert all(r["p_holm"] >= r["p"] for r in rows if "p" in r)
    text = headline(rows)
    assert text.startswith("Reference: best, the best validation Dice (all images) (0.900)")
    assert "chosen before the test set was opened" in text
    assert "Better than it" in text and "lucky" in text
    assert "Not significantly different from it" in text and "twin" in text
    assert "oracle reaches" in text


def test_direction_follows_the_signed_rank_statistic_not_the_mean(tmp_path):
    """Better on 13 of 14 images, much worse on one: the mean difference is negative, but the
    signed-rank test does not call it worse."""
    ref = np.full(14, 0.8)
    other = ref + 0.02
    other[0] = 0.2
    names = [_model(tmp_path, "ref", ref, val=0.9), _model(tmp_path, "other", other, val=0.7)]
    rows = {r["model"]: r for r in comparison_rows(names, tmp_path / "eval")}
    assert rows["other"]["mean_diff"] < 0
    assert rows["other"]["verdict"] != "significantly worse"


def test_tied_and_undefined_pairs_are_counted_apart(tmp_path):
    names = [
        _model(tmp_path, "a", [0.9, np.nan, 0.8, 0.85, 0.7], val=0.9),
        _model(tmp_path, "b", [0.5, 0.6, np.nan, 0.4, 0.7], val=0.5),
    ]
    rows = {r["model"]: r for r in comparison_rows(names, tmp_path / "eval")}
    assert rows["b"]["n_pairs"] == 3 and rows["b"]["n_usable"] == 2
    assert fmt("pairs", rows["b"]) == "3 (1 tied)"


def test_too_few_pairs_is_said_in_the_row_and_a_powerless_family_gets_a_banner(tmp_path):
    from segbench.reporttext import banners

    names = [
        _model(tmp_path, "a", [0.9, 0.8, 0.7, 0.6], val=0.9),
        _model(tmp_path, "b", [0.8, 0.8, 0.7, 0.6], val=0.5),  # one untied pair
        _model(tmp_path, "c", [0.5, 0.4, 0.3, 0.2], val=0.4),  # four: p >= 0.125 at best
    ]
    rows = {r["model"]: r for r in comparison_rows(names, tmp_path / "eval")}
    assert rows["b"]["verdict"] == "too few pairs"
    assert fmt("verdict", rows["b"]) == "too few pairs (1 untied)"
    said = " ".join(banners(list(rows.values())))
    assert "Too few pairs to tell models apart. No comparison can reach significance" in said


def test_without_validation_scores_there_is_no_reference_and_no_test(tmp_path):
    from segbench.reporttext import banners

    names = [
        _model(tmp_path, "a", [0.9] * 12, val=None),
        _model(tmp_path, "b", [0.5] * 12, val=None),
    ]
    rows = comparison_rows(names, tmp_path / "eval")
    assert not any(r.get("reference") for r in rows) and not any("p" in r for r in rows)
    assert any(b.startswith("No reference.") for b in banners(rows))
    assert headline(rows).startswith("No reference")


def test_an_ensemble_that_collapsed_onto_one_member_has_no_row(tmp_path):
    names = [
        _model(tmp_path, "unet", [0.8] * 12, val=0.9),
        _model(tmp_path, "segformer", [0.6] * 12, val=0.7),
        _model(tmp_path, "ensemble", [0.8] * 12, val=0.9, ensemble_collapsed_to="unet"),
    ]
    rows = comparison_rows(names, tmp_path / "eval", ensembles=["ensemble"])
    assert [r["model"] for r in rows] == ["unet", "segformer"]
    assert rows[1]["family_size"] == 1  # the ensemble is not a comparison of its own


def test_galleries_take_the_best_and_worst_never_twice_and_empty_references_apart():
    rows = [{"id": f"i{k}", "dice": d, "fp": 0} for k, d in enumerate([0.9, 0.2, 0.5])]
    rows += [{"id": "e1", "dice": np.nan, "fp": 40}, {"id": "e2", "dice": np.nan, "fp": 3}]
    picks = pick_examples(rows, 2)
    assert [r["id"] for r in picks["best"]] == ["i0", "i2"]
    assert [r["id"] for r in picks["worst"]] == ["i1"]  # i2 is already among the best
    assert [r["id"] for r in picks["empty reference"]] == ["e1", "e2"]  # most FP first
    many = [{"id": f"i{k}", "dice": k / 20, "fp": 0} for k in range(20)]
    picks = pick_examples(many, 5)
    assert [r["id"] for r in picks["best"]] == ["i19", "i18", "i17", "i16", "i15"]
    assert [r["id"] for r in picks["worst"]] == ["i0", "i1", "i2", "i3", "i4"]


def test_pareto_front_keeps_only_models_nothing_beats_on_both():
    rows = [
        {"model": "big", "score": 0.93, "train_seconds": 300},
        {"model": "mid", "score": 0.90, "train_seconds": 100},
        {"model": "slow_worse", "score": 0.85, "train_seconds": 200},
        {"model": "free", "score": 0.70, "train_seconds": 0},
        {"model": "oracle", "score": 0.99, "train_seconds": 1, "oracle_prompts": True},
    ]
    assert pareto_front(rows, "train_seconds") == ["free", "mid", "big"]


@pytest.mark.slow
def test_the_report_has_every_section(real_report):
    out, models = real_report
    html = (out / "report.html").read_text()
    for section in ("comparison", "definitions", "pareto", "training", "dataset", "galleries"):
        assert f'id="{section}"' in html or f'id="{section}-plot"' in html, section
    assert 'id="thresholds"' in html  # the U-Net's threshold was tuned on validation
    assert 'src="data:image/png;base64,' in html and "http" not in html.split("<body>")[1]
    for m in models:
        assert f'<section class="gallery" data-model="{m}">' in html
    assert "Small test set." in html and "Synthetic data." in html
    summary = (out / "summary.md").read_text()
    assert (
        "| model | Dice, all images [95% CI] | Dice, empty refs left out | val. score | "
        "Δ vs reference [95% CI] | vs reference (Holm p) | pairs | seed spread |"
    ) in summary
    assert "chosen before any test figure is read" in summary
    with open(out / "comparison.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {r["model"] for r in table} == set(models)
    assert any(r["verdict"] == "reference" for r in table)
    # DVC plots data: one history per trained network, the tuned threshold curve, the Pareto.
    assert (out / "plots" / "history" / "unet.csv").is_file()
    assert (out / "plots" / "threshold" / "unet.csv").is_file()
    assert not (out / "plots" / "threshold" / "otsu.csv").exists()  # Otsu outputs a mask
    assert (out / "plots" / "pareto.csv").is_file()


@pytest.mark.slow
def test_sweep_results_add_their_plot(real_report, tiny_data, tmp_path, monkeypatch):
    from segbench.report import report

    out, models = real_report
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out.parent / 'mlflow.db'}")
    raw, _, params = tiny_data
    trials = [
        {"rank": r, "lr": lr, "batch_size": b, "val_dice": 0.5 + r / 100}
        for r, lr, b in [(4, 1e-4, 2), (8, 3e-4, 4), (16, 1e-3, 2)]
    ]
    (tmp_path / "sweeps").mkdir()
    write_csv(tmp_path / "sweeps" / "trials.csv", trials, list(trials[0]))
    root = out.parent
    report(
        parse_params(only_models(params.model_dump(mode="json"), models)),
        raw_dir=raw,
        eval_dir=root / "eval",
        out_dir=tmp_path / "rep",
        sweeps_dir=tmp_path / "sweeps",
    )
    assert 'id="sweep"' in (tmp_path / "rep" / "report.html").read_text()
    assert (tmp_path / "rep" / "figures" / "sweep.png").is_file()
    assert 'id="sweep"' not in (out / "report.html").read_text()  # no sweep, no section


@pytest.mark.slow
def test_the_terminal_summary_reads_back_the_csv(real_report):
    from segbench.comparison import rows_from_csv, terminal_table
    from segbench.io import read_csv

    out, models = real_report
    rows = rows_from_csv(read_csv(out / "comparison.csv"))
    assert [type(r["dice"]) for r in rows] == [float] * len(models)
    text = terminal_table(rows).splitlines()
    assert text[0].split()[:4] == ["model", "Dice,", "all", "images"]
    assert {line.split()[0] for line in text[1:]} == set(models)
    assert sum(" reference " in f" {line} " for line in text[1:]) == 1
