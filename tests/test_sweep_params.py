"""Each sweep trial's model size (trials.csv's params_trainable / params_total), counted from its
values without Ray or training, and the sweep plot's panel against it. The real sweeps of
tests/test_sweep.py check the same columns in trials.csv."""

from __future__ import annotations

import pytest
from PIL import Image

import segbench.sweep.size as size
from segbench import figures
from segbench.classes import BINARY, write_classes
from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.io import write_csv, write_json
from segbench.reportsweep import sweep_figure
from segbench.sam.build import get_variant


def lora_sweep(raw: dict):
    raw["sweep"] = {
        **raw["sweep"],
        "model": "sam_lora",
        "space": {"model": {"rank": [2, 4]}, "train": {"lr": [0.003, 0.001]}},
    }
    return parse_params(raw)


def test_a_lora_rank_changes_the_trainable_parameters_by_its_adapters(
    small_params_raw, tmp_path, monkeypatch
):
    params = lora_sweep(small_params_raw)
    built = []
    real = size.model_size
    monkeypatch.setattr(size, "model_size", lambda *a: built.append(a) or real(*a))
    configs = [
        {"model.rank": 2, "train.lr": 0.003},
        {"model.rank": 4, "train.lr": 0.003},
        {"model.rank": 2, "train.lr": 0.001},
    ]
    r2, r4, r2_again = size.trial_sizes(params, configs, tmp_path)
    assert len(built) == 2  # the learning rate never changes the model: built once per rank
    assert r2 == r2_again and set(r2) == set(size.SIZE_FIELDS)
    assert 0 < r2["params_trainable"] < r4["params_trainable"] < r4["params_total"]
    # Every adapter is trained: ranks 2 -> 4 add A (r x width) and B (width x r) to q and v of
    # each encoder block, and nothing else.
    entry, tiny = params.entry("sam_lora"), get_variant("tiny")
    added = 2 * tiny.encoder_embed_dim * (4 - 2) * len(entry.targets) * tiny.encoder_depth
    assert r4["params_trainable"] - r2["params_trainable"] == added
    assert r4["params_total"] - r2["params_total"] == added


def test_the_size_is_the_model_train_builds_for_the_tiles(small_params, tmp_path):
    grey = size.model_size(small_params, "unet", tmp_path)  # no classes.json: binary, grey
    assert grey["params_total"] == grey["params_trainable"] > 0
    write_classes(tmp_path, BINARY, channels="rgb")
    rgb = size.model_size(small_params, "unet", tmp_path)
    # Two more input channels of the ResNet stem's 7 x 7 x 64 convolution.
    assert rgb["params_total"] - grey["params_total"] == 2 * 7 * 7 * 64


def test_a_model_that_cannot_be_built_leaves_its_trials_blank(
    small_params_raw, tmp_path, monkeypatch, capsys
):
    params = lora_sweep(small_params_raw)
    real = size.build_model

    def refuse_rank_4(entry, **kw):
        if entry.rank == 4:
            raise SegbenchError("sam_vit_b.pth: no such file")
        return real(entry, **kw)

    monkeypatch.setattr(size, "build_model", refuse_rank_4)
    ok, blank = size.trial_sizes(params, [{"model.rank": 2}, {"model.rank": 4}], tmp_path)
    assert ok["params_trainable"] > 0 and blank == {}
    line = capsys.readouterr().out
    assert "sweep@sam_lora: no parameter count for the trials with {'model.rank': 4}" in line
    assert "sam_vit_b.pth: no such file" in line


def trials(sized: bool) -> list[dict]:
    rows = []
    for i, (rank, lr) in enumerate([(4, 3e-4), (4, 1e-3), (16, 3e-4), (16, 1e-3)]):
        row = {"trial": f"t{i}", "status": "stopped early" if i == 1 else "completed"}
        row |= {"rank": rank, "lr": lr, "best_val_dice": 0.5 + 0.1 * i}
        if sized:
            row |= {"params_trainable": 42_656 if rank == 4 else 48_800, "params_total": 217_228}
        rows.append(row)
    return rows


def panels(path) -> int:
    """Panels of a sweep figure: each is 4 inches at 80 dpi."""
    width = Image.open(path).size[0]
    assert width % 320 == 0, width
    return width // 320


@pytest.mark.parametrize("sized", [True, False])
def test_the_sweep_plot_adds_a_panel_against_trainable_parameters(tmp_path, sized):
    path = figures.sweep_scatter(
        trials(sized), ["rank", "lr"], tmp_path / "sweep.png", metric="best_val_dice"
    )
    assert panels(path) == 2 + sized  # the knobs' panels stay; sizes add one


def test_the_sweep_plot_skips_sizes_no_plotted_trial_has(tmp_path):
    failed = {"trial": "t9", "status": "failed", "rank": 16, "best_val_dice": 0.3}
    rows = [*trials(sized=False), failed | {"params_trainable": 48_800}]  # failed: not plotted
    path = figures.sweep_scatter(rows, ["rank"], tmp_path / "sweep.png", metric="best_val_dice")
    assert panels(path) == 1


def test_the_report_plots_the_sizes_trials_csv_holds(tmp_path):
    """trials.csv as the sweep writes it (strings read back), through the report's sweep
    figure."""
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    rows = trials(sized=True)
    write_csv(sweeps / "trials.csv", rows, list(rows[0]))
    columns = {"model.rank": "rank", "train.lr": "lr"}
    write_json(sweeps / "best.json", {"model": "sam_lora", "columns": columns, "config": {}})
    assert panels(sweep_figure(sweeps, tmp_path)) == 3
