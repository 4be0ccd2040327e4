"""The comparison table's statistics, the galleries' choice of images, the Pareto front, and a
report built from real trained models with every section a reviewer needs."""

import csv

import numpy as np
import pytest

from segbench.comparison import comparison_rows, fmt, headline, pareto_front
from segbench.config import parse_params
from segbench.io import write_csv, write_json
from segbench.report import pick_examples
from tests.conftest import only_models
from tests.test_evalmetrics import example_metrics


def _model(root, name, dice, **extra):
    """A model's evaluation directory, as the evaluate stage writes it; its name."""
    rows = [{"id": f"img{i:02d}", "dice": d, "fp": 0} for i, d in enumerate(dice)]
    (root / "eval" / name).mkdir(parents=True)
    write_csv(root / "eval" / name / "per_image.csv", rows, ["id", "dice", "fp"])
    metrics = example_metrics(dice=float(np.nanmean(dice)), n_images=len(dice))
    write_json(root / "eval" / name / "metrics.json", metrics | extra)
    return name


def test_rows_are_compared_with_the_best_model_that_sees_the_image_alone(tmp_path):
    rng = np.random.default_rng(0)
    best = rng.uniform(0.85, 0.95, size=12)
    names = [
        _model(tmp_path, "oracle", best + 0.04, oracle_prompts=True),
        _model(tmp_path, "best", best),
        _model(tmp_path, "twin", best + rng.normal(0, 0.005, size=12)),
        _model(tmp_path, "weak", best - 0.3),
    ]
    rows = comparison_rows(names, tmp_path / "eval")
    by = {r["model"]: r for r in rows}
    assert rows[0]["model"] == "oracle"  # sorted by Dice ...
    assert by["best"]["reference"] and "reference" not in by["oracle"]  # ... reference is fair
    assert fmt("verdict", by["best"]) == "reference"
    assert by["twin"]["verdict"] == "not significantly different"
    assert by["weak"]["verdict"] == "significantly worse"
    assert fmt("verdict", by["weak"]).startswith("worse * (p=")
    assert by["oracle"]["verdict"] == "significantly better"  # an upper bound, labelled as such
    # Holm over the three comparisons: never smaller than the raw p.
    assert all(r["p_holm"] >= r["p"] for r in rows if "p" in r)
    text = headline(rows)
    assert text.startswith("Best test Dice: best (")
    assert "Not significantly different from it" in text and "twin" in text
    assert "oracle reaches" in text


def test_undefined_dice_is_left_out_of_the_pairs(tmp_path):
    names = [
        _model(tmp_path, "a", [0.9, np.nan, 0.8, 0.85]),
        _model(tmp_path, "b", [0.5, 0.6, np.nan, 0.4]),
    ]
    rows = {r["model"]: r for r in comparison_rows(names, tmp_path / "eval")}
    assert rows["b"]["n_pairs"] == 2


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
        {"model": "big", "dice": 0.93, "train_seconds": 300},
        {"model": "mid", "dice": 0.90, "train_seconds": 100},
        {"model": "slow_worse", "dice": 0.85, "train_seconds": 200},
        {"model": "free", "dice": 0.70, "train_seconds": 0},
        {"model": "oracle", "dice": 0.99, "train_seconds": 1, "oracle_prompts": True},
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
    assert "| model | Dice [95% CI] | vs best (Holm p) |" in summary
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
def test_sweep_results_add_their_plot(real_report, tiny_data, tmp_path):
    from segbench.report import report

    out, models = real_report
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
    assert text[0].split()[:3] == ["model", "Dice", "[95%"]
    assert {line.split()[0] for line in text[1:]} == set(models)
    assert sum("reference" in line for line in text) == 1
