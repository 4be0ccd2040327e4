"""The report's tables at the width of an ordinary browser window (1280 x 800): the main
comparison must fit without scrolling sideways with every row of the real pipeline (thirteen),
their long names, confidence intervals, verdicts and notes.

The report is built by :func:`segbench.report.report` from the pipeline's own outputs: Otsu,
Sobel, Canny, a one-epoch U-Net and the three zero-shot SAMs (oracle prompts, no checkpoint)
are really trained and evaluated on shrunk synthetic data with ten test images (so every Dice
has its interval and every verdict its p-value); the other models of ``params.yaml``
(attention_unet, segformer, sam_auto, sam_decoder, sam_lora and the ensemble) are copies of
those directories under their own names, configs and notes, with their per-image Dice moved so
that the verdicts differ. The
comparison table as the window shows it is kept in ``test-artifacts/report_1280_comparison.png``
for a human to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.io import read_csv, read_json, write_csv, write_json
from tests.browser import (
    artifacts_dir,
    check_report_in_browser,
    overflow,
    require_browser,
    table_layout,
)
from tests.conftest import SHRINK, deep_update, real_params_raw, seeded_store

# ~30 s on 2 cores (every model trained or copied, then a browser): make test-long. make test
# opens a report in the browser in tests/test_report_browser.py and tests/test_pipeline_e2e.py.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.long]

WINDOW = (1280, 800)
ROWS = 13  # every model and ensemble of params.yaml: build_report checks it
# Ten test images (the shrunk data has one): enough for bootstrap intervals and p-values.
TEN_TEST_IMAGES = {
    "data": {"synthetic": {"n_images": 16}, "split": {"train": 0.25, "val": 0.125, "test": 0.625}},
    "train": {"epochs": 1},
}
TRAINED = ("otsu", "sobel", "canny", "unet", "sam_point", "sam_points", "sam_box")
# name: (the trained model it copies, shift of its per-image Dice, its cost figures). The costs
# include a long multi-GPU run, so the cells are as wide as a full-scale report's.
COPIES = {
    "attention_unet": ("unet", 0.01, {"params_total": 12_622_393, "train_seconds": 61.3}),
    "segformer": ("unet", -0.04, {"params_total": 3_714_658, "train_seconds": 48.0}),
    "sam_auto": ("sam_box", -0.03, {}),
    "sam_decoder": (
        "unet",
        -0.12,
        {"params_total": 205_452, "params_trainable": 136_753, "train_seconds": 402.7},
    ),
    "sam_lora": (
        "unet",
        -0.08,
        {
            "params_total": 93_735_472,
            "params_trainable": 4_058_340,
            "train_seconds": 12_604.5,
            "device": "cuda",
            "device_count": 4,
        },
    ),
    "ensemble": ("unet", 0.02, {"params_total": 16_166_411, "params_trainable": 0}),
}


def _shifted_dice(eval_dir: Path, shift: float, seed: int, params) -> dict:
    """Move every defined per-image Dice of ``eval_dir/per_image.csv`` by ``shift`` (plus a
    little seeded noise, kept in [0, 1]); return the Dice summary its metrics.json holds."""
    from segbench.stats import bootstrap_ci

    rng = np.random.default_rng(seed)
    rows = read_csv(eval_dir / "per_image.csv")
    for row in rows:
        if row["dice"] not in ("", "nan"):
            moved = float(row["dice"]) + shift + rng.normal(0.0, 0.02)
            row["dice"] = repr(float(np.clip(moved, 0.0, 1.0)))
    write_csv(eval_dir / "per_image.csv", rows, list(rows[0]))
    dice = np.array([float(r["dice"]) for r in rows if r["dice"] not in ("", "nan")])
    low, high = bootstrap_ci(
        dice, n_resamples=params.evaluate.bootstrap_resamples, seed=params.evaluate.seed
    )
    return {
        "dice": float(dice.mean()),
        "dice_std": float(dice.std()),
        "dice_n": len(dice),
        "dice_ci_low": low,
        "dice_ci_high": high,
    }


def copy_model(root: Path, params, name: str, source: str, shift: float, cost: dict) -> None:
    """``eval/<source>`` copied as entry ``name`` of ``params`` (a model or an ensemble), as
    evaluate would have written it for that entry: its own model card and notes, ``cost`` in
    its metrics, its Dice moved by ``shift``. Masks and other per-image metrics stay the
    source's. (The report reads evaluation directories only.)"""
    from segbench.modelcard import EnsembleFit, ModelCard

    eval_dir = root / "eval" / name
    shutil.copytree(root / "eval" / source, eval_dir)
    card = ModelCard.read(eval_dir)
    training = card.training.model_copy(
        update={"seconds": cost.get("train_seconds", card.training.seconds)}
        | {k: v for k, v in cost.items() if k in ("params_total", "params_trainable")}
        | {k: v for k, v in cost.items() if k in ("device", "device_count")}
    )
    if name in params.ensembles:
        entry = params.ensembles[name]
        members = {m: ModelCard.read(root / "eval" / source) for m in entry.members}
        members = {
            m: c.model_copy(update={"name": m, "entry": params.models[m]})
            for m, c in members.items()
        }
        fit = EnsembleFit(
            weights=dict(zip(entry.members, (0.6, 0.4), strict=True)),
            val_dice=0.31,
            member_val_dice={m: 0.3 - 0.02 * i for i, m in enumerate(entry.members)},
            n_val_images=2,
            weights_tried=11,
            fit_seconds=3.2,
        )
        card = card.model_copy(
            update={
                "name": name,
                "entry": entry,
                "train": None,
                "members": members,
                "ensemble": fit,
            }
        )
    else:
        card = card.model_copy(update={"name": name, "entry": params.models[name]})
    card.model_copy(update={"training": training}).write(eval_dir)
    metrics = read_json(eval_dir / "metrics.json")
    metrics |= {k: v for k, v in cost.items() if k != "device"}
    metrics |= {"train_device": training.device}
    metrics |= card.notes()
    metrics |= _shifted_dice(eval_dir, shift, zlib.crc32(name.encode()), params)
    write_json(eval_dir / "metrics.json", metrics)


def write_sweep(sweeps_dir: Path) -> None:
    """A finished sweep of sam_lora (rank x lr x batch size, ASHA), as the sweep stage writes
    ``trials.csv`` and ``best.json``: the report's sweep table."""
    grid = [(rank, lr, batch) for rank in (4, 16) for lr in (3e-4, 1e-3) for batch in (2, 8)]
    trials = []
    for i, (rank, lr, batch) in enumerate(grid):
        stopped = i in (1, 4, 6)  # ASHA stops the trailing trials
        trials.append(
            {
                "trial": f"5f3ab_{i:05d}",
                "status": "stopped early" if stopped else "completed",
                "rank": rank,
                "lr": lr,
                "batch_size": batch,
                "epochs_run": 2 if stopped else 8,
                "val_dice": 0.41 + 0.03 * i - 0.1 * stopped,
                "best_val_dice": 0.42 + 0.03 * i - 0.1 * stopped,
                "best_epoch": 2 if stopped else 7,
                "attempts": 1 + (i == 5),
                "train_seconds": 312.4 + 40 * i,
            }
        )
    sweeps_dir.mkdir()
    write_csv(sweeps_dir / "trials.csv", trials, list(trials[0]))
    best = max(trials, key=lambda t: t["best_val_dice"])
    columns = {"model.rank": "rank", "train.lr": "lr", "train.batch_size": "batch_size"}
    write_json(
        sweeps_dir / "best.json",
        {
            "model": "sam_lora",
            "metric": "best_val_dice",
            "value": best["best_val_dice"],
            "trial": best["trial"],
            "status": best["status"],
            "config": {key: best[col] for key, col in columns.items()},
            "columns": columns,
            "epochs": 8,
            "trials": len(trials),
        },
    )


def build_report(root: Path) -> Path:
    """Train, evaluate and copy (see the module docstring) every model and ensemble of
    ``params.yaml`` under ``root``, write their report; return its ``report.html``."""
    from segbench.config import parse_params
    from segbench.evaluate import evaluate
    from segbench.fetch import fetch
    from segbench.prepare import prepare
    from segbench.report import report
    from segbench.training import train

    params = parse_params(deep_update(deep_update(real_params_raw(), SHRINK), TEN_TEST_IMAGES))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(root / "mlflow.db"))
        mp.setenv("DVC_ROOT", str(root))
        fetch(params, root / "raw")
        prepare(params.prepare, root / "raw", root / "tiles")
        for m in TRAINED:
            train(m, params, root / "tiles", root / "models" / m)
            evaluate(root / "models" / m, params, root / "raw", root / "eval" / m)
    for name, (source, shift, cost) in COPIES.items():
        copy_model(root, params, name, source, shift, cost)
    assert sorted([*TRAINED, *COPIES]) == sorted([*params.models, *params.ensembles])
    assert len(TRAINED) + len(COPIES) == ROWS
    write_sweep(root / "sweeps")
    with pytest.MonkeyPatch.context() as mp:  # the store the reference is registered in
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(root / "mlflow.db"))
        report(
            params,
            raw_dir=root / "raw",
            eval_dir=root / "eval",
            sweeps_dir=root / "sweeps",
            out_dir=root / "reports",
        )
    return root / "reports" / "report.html"


@pytest.fixture(scope="module")
def every_model(tmp_path_factory) -> Path:
    """``report.html`` with every model and ensemble of ``params.yaml``: thirteen rows."""
    require_browser()  # before the training: no browser, nothing to build
    return build_report(tmp_path_factory.mktemp("every_model"))


@pytest.fixture(scope="module")
def seen(every_model, tmp_path_factory) -> dict:
    """The thirteen-row report as a 1280 x 800 window shows it. The comparison table, cut out of
    the full-page screenshot as the window shows it, is kept in the artifacts directory."""
    shot = tmp_path_factory.mktemp("layout") / "report_1280.png"
    result = check_report_in_browser(every_model, shot, viewport=WINDOW)
    table = table_layout(result, "comparison")
    dest = artifacts_dir() / "report_1280_comparison.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}")  # another session may be reading it
    with Image.open(shot) as page:
        box = (0, max(0, int(table["top"]) - 60), WINDOW[0], int(table["bottom"]) + 10)
        page.crop(box).save(part, format="PNG")
    part.replace(dest)
    return result


def test_the_report_has_every_model_and_their_long_cells(seen, every_model):
    assert seen["page_errors"] == seen["console_errors"] == seen["requests"] == []
    assert len(seen["models"]) == ROWS and {"attention_unet", "sam_points"} <= set(seen["models"])
    table = every_model.read_text().split('id="comparison"')[1].split("</table>")[0]
    # The longest notes, the Dice with its interval, a verdict with its p-value.
    assert "<span>oracle prompts,</span> <span>random-init SAM</span>" in table
    assert re.search(r"<span>0\.\d{3}</span> <span>\[0\.\d{3}, 0\.\d{3}\]</span></td>", table)
    verdict = r"<span>(n\.s\.|worse \*|better \*)</span> <span>\(p=0\."
    assert re.search(verdict, table)


def test_the_comparison_table_fits_a_1280_px_window(seen):
    assert seen["viewport"]["width"] == WINDOW[0]
    assert overflow(seen, "comparison") == []
    table = table_layout(seen, "comparison")
    assert table["rows"] == ROWS


def test_the_other_tables_are_readable_without_widening_the_page(seen):
    """They may scroll inside their own box, but never cut a cell's text or widen the page."""
    assert seen["page_width"] <= seen["viewport"]["width"]
    for table in seen["tables"]:
        assert table["clipped_cells"] == [], table["id"] or table["class"]
        if table["cells_out_of_view"]:
            assert table["container"] == "div.scroll", table


def test_the_width_check_sees_a_table_too_wide_for_the_window(every_model, tmp_path):
    """Not blind: the same report with every cell and header kept on one line (as they were
    before the table was made to fit) overflows, and so do hand-made pages with a wide table in
    a scrolling box, a wide table that widens the page, and a cell that hides its text."""
    html = every_model.read_text()
    nowrap = "<style>#comparison :is(th, td) { white-space: nowrap !important; }</style>"
    page = tmp_path / "nowrap.html"
    page.write_text(html.replace("</head>", nowrap + "</head>", 1))
    seen = check_report_in_browser(page, tmp_path / "nowrap.png", viewport=WINDOW)
    problems = overflow(seen, "comparison")
    assert any(p.startswith("#comparison is ") for p in problems), problems

    cells = "".join(f"<td>cell {i} of a long row</td>" for i in range(40))
    page = tmp_path / "wide.html"
    page.write_text(
        "<!doctype html><html><head><title>wide</title></head><body>"
        f'<div class="scroll" style="overflow-x: auto"><table id="boxed"><tr>{cells}</tr>'
        "</table></div>"
        f'<table id="loose"><tr>{cells}</tr></table>'
        '<table id="cut" style="table-layout: fixed; width: 200px"><tr>'
        '<td style="overflow: hidden; white-space: nowrap">a note far too long to show</td>'
        "</tr></table></body></html>"
    )
    seen = check_report_in_browser(page, tmp_path / "wide.png", viewport=WINDOW)
    boxed, loose, cut = (table_layout(seen, t) for t in ("boxed", "loose", "cut"))
    assert boxed["scroll_width"] > boxed["container_client_width"]
    assert boxed["container"] == "div.scroll" and boxed["cells_out_of_view"]
    assert any("window" in p for p in overflow(seen, "loose"))
    assert loose["cells_out_of_view"] and seen["page_width"] > WINDOW[0]
    assert [c["text"] for c in cut["clipped_cells"]] == ["a note far too long to show"]
    assert overflow(seen, "cut") != []
