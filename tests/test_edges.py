"""The edge baselines (sobel, canny): a threshold chosen on the validation tiles by the mean
per-tile Dice over all tiles, edges turned into filled regions, state as JSON, colour as
luminance, two classes only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segbench.config import ENTRY_CLASSES, load_params, not_applicable, parse_params
from segbench.errors import SegbenchError
from segbench.metrics import binary_metrics
from segbench.models import build_model
from segbench.models.edges import edges_to_regions
from segbench.training import fit as fitting
from tests.conftest import REPO, deep_update, real_params_raw, shipped_entry
from tests.datasets import particle_pair

EDGES = ["sobel", "canny"]


def unit_set(seeds, *, contrast: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic particle images as unit images (N, 96, 128) float32 in [0, 1], contrast scaled
    about mid-grey, and their (N, 96, 128) {0, 1} masks."""
    images, masks = [], []
    for seed in seeds:
        image, mask = particle_pair(seed)
        images.append(0.5 + (image.astype(np.float32) / 255 - 0.5) * contrast)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def pooled_dice(preds, masks) -> float:
    inter = sum(float((p * m).sum()) for p, m in zip(preds, masks, strict=True))
    total = sum(float(p.sum() + m.sum()) for p, m in zip(preds, masks, strict=True))
    return 2 * inter / total


@pytest.fixture(scope="module")
def val_test():
    return unit_set(range(6)), unit_set(range(10, 16))


@pytest.mark.parametrize("name", EDGES)
def test_fit_picks_an_inner_threshold_that_beats_trivial_masks_on_held_out_images(name, val_test):
    (images, masks), (test_images, test_masks) = val_test
    model = build_model(shipped_entry(name))
    scores = model.fit(images, masks)
    assert len(scores) == 2 * len(model.grid)  # every threshold, inside and outside
    assert scores[f"{model.region}_{model.threshold:g}"] == max(scores.values())
    assert model.region == "inside"  # particles are closed contours
    assert model.grid[2] <= model.threshold <= model.grid[-3]  # not stuck at a grid end
    preds = [model.predict(x) for x in test_images]
    assert all(p.dtype == np.float32 and set(np.unique(p)) <= {0.0, 1.0} for p in preds)
    dice = pooled_dice(preds, test_masks)
    everything = pooled_dice([np.ones_like(x) for x in test_images], test_masks)
    assert dice > 0.55 and dice > everything + 0.3  # all background scores 0


def test_pixels_not_annotated_count_for_nothing(val_test):
    (images, masks), _ = val_test
    masks = masks.copy()
    masks[..., :64] = 255  # the left half is not annotated
    model = build_model(shipped_entry("sobel"))
    scores = model.fit(images, masks)
    preds = [model.predict(x)[:, 64:] for x in images]
    per_tile = [
        binary_metrics(p > 0, m)["dice_all"] for p, m in zip(preds, masks[..., 64:], strict=True)
    ]
    assert scores[f"inside_{model.threshold:g}"] == pytest.approx(np.mean(per_tile))


def test_edges_become_filled_regions_with_objects_cut_by_the_frame():
    edges = np.zeros((40, 40), dtype=bool)
    edges[5, 5:16] = edges[15, 5:16] = edges[5:16, 5] = edges[5:16, 15] = True  # a closed box
    edges[25:40, 20] = edges[25, 20:31] = edges[25:40, 30] = True  # open at the bottom frame
    edges[30:38, 2] = True  # a fragment that encloses nothing
    regions = edges_to_regions(edges, 1)
    assert regions[10, 10] and regions[35, 25]  # both objects filled
    assert not regions[33, 2] and not regions[2, 35]  # fragment opened away, background kept


@pytest.mark.parametrize("name", EDGES)
def test_the_threshold_is_chosen_on_the_validation_tiles(name, monkeypatch):
    """The training tiles hold the same scenes at a fifth of the contrast: their best threshold
    is several grid steps lower, so fitting on them would give another state."""
    from segbench.training.fit import model_card

    splits = {"val": unit_set(range(6)), "train": unit_set(range(6), contrast=0.2)}
    asked = []

    def fake_tiles(tiles_dir, split):
        asked.append(split)
        images, masks = splits[split]
        stored = np.round(images * 255).astype(np.uint8)  # as prepare writes them
        return stored, masks, np.tile([0.0, 255.0], (len(masks), 1))

    monkeypatch.setattr(fitting, "load_tiles", fake_tiles)
    card = model_card(name, load_params(REPO / "params.yaml"), "v0")
    files, _, outcome = fitting._fit_classical(card, "unused")
    on = {s: build_model(shipped_entry(name)) for s in splits}
    scores = {split: model.fit(*splits[split]) for split, model in on.items()}
    assert asked == ["val"]
    assert on["val"].threshold > on["train"].threshold
    assert files["state.json"]["threshold"] == on["val"].threshold
    assert outcome["fit_scores"] == pytest.approx(scores["val"], abs=1e-3)
    otsu = model_card("otsu", load_params(REPO / "params.yaml"), "v0")
    fitting._fit_classical(otsu, "unused")
    assert asked[-1] == "train"  # Otsu keeps fitting its polarity on the training tiles


def test_train_and_evaluate_through_the_pipeline_functions(tiny_data, tmp_path):
    """train() fits on the prepared val tiles and writes state.json; evaluate() predicts the
    full-size test images through the Predictor, which scales them as the tiles were."""
    from segbench.evaluate import evaluate
    from segbench.io import read_json
    from segbench.training import train

    raw, tiles, params = tiny_data
    for name in EDGES:
        metrics = train(name, params, tiles, tmp_path / name)
        state = read_json(tmp_path / name / "state.json")
        assert state["threshold"] in build_model(shipped_entry(name)).grid
        assert metrics["params_total"] == 0
        assert metrics[f"fit_dice_{state['region']}_{state['threshold']:g}"] > 0.3
        result = evaluate(tmp_path / name, params, raw, tmp_path / f"eval_{name}")
        assert 0.3 < result["dice"] < 1


@pytest.mark.parametrize("name", EDGES)
def test_state_round_trips_as_json(name, val_test):
    (images, masks), (test_images, _) = val_test
    model = build_model(shipped_entry(name))
    with pytest.raises(SegbenchError, match="not fitted"):
        model.predict(test_images[0])
    model.fit(images, masks)
    state = json.loads(json.dumps(model.state_dict()))
    assert state["model"] == name and state["region"] == "inside"
    clone = build_model(shipped_entry(name, close_radius=5))  # the state's settings win
    clone.load_state_dict(state)
    assert clone.state_dict() == model.state_dict()
    np.testing.assert_array_equal(clone.predict(test_images[0]), model.predict(test_images[0]))
    for damaged in ({**state, "threshold": None}, {**state, "region": "left"}, {"model": name}):
        with pytest.raises(SegbenchError, match=name):
            clone.load_state_dict(damaged)
    other = "canny" if name == "sobel" else "sobel"
    with pytest.raises(SegbenchError, match="re-run its train stage"):
        build_model(shipped_entry(other)).load_state_dict(state)


@pytest.mark.parametrize("name", EDGES)
def test_rgb_input_is_reduced_to_luminance(name, val_test):
    (images, masks), (test_images, _) = val_test
    tint = np.array([0.9, 1.0, 1.2], dtype=np.float32)  # BT.601 weights these to ~1.0
    rgb = np.clip(images[..., None] * tint, 0, 1)
    grey = build_model(shipped_entry(name))
    colour = build_model(shipped_entry(name), in_channels=3)
    grey.fit(images, masks)
    colour.fit(rgb, masks)
    assert colour.threshold == grey.threshold
    pred = colour.predict(np.clip(test_images[0][..., None] * tint, 0, 1))
    assert pred.shape == test_images[0].shape
    assert (pred == grey.predict(test_images[0])).mean() > 0.99


def test_several_classes_skip_the_edge_baselines():
    params = parse_params(
        deep_update(real_params_raw(), {"data": {"synthetic": {"domain": "phases"}}})
    )
    skipped = not_applicable(params)
    for name in EDGES:
        assert "edge baseline" in skipped[name] and "3 classes" in skipped[name]
    assert "otsu" not in skipped
    with pytest.raises(SegbenchError, match="one foreground"):
        build_model(shipped_entry("sobel"), num_classes=3)


def test_params_yaml_entries_validate():
    params = load_params(REPO / "params.yaml")
    assert [n for n in params.models if params.models[n].kind == "classical"][:3] == [
        "otsu",
        *EDGES,
    ]
    for name in EDGES:
        entry = params.models[name]
        assert isinstance(entry, ENTRY_CLASSES[name]) and entry.kind == "classical"
    assert params.models["canny"].low_ratio < 1
    for name, key, value in [
        ("sobel", "close_radius", -1),
        ("sobel", "smooth_sigma", -0.5),
        ("canny", "low_ratio", 1.5),
        ("canny", "sigma", 0.0),
        ("canny", "smooth_sigma", 1.0),  # sobel's key, not canny's
    ]:
        raw = deep_update(real_params_raw(), {"models": {name: {key: value}}})
        with pytest.raises(SegbenchError, match=rf"models\.{name}\.{key}"):
            parse_params(raw)


def test_the_train_command_prints_the_fit_in_one_short_line(
    tiny_data, small_params_raw, tmp_path, capsys
):
    """Sixty-odd candidate thresholds go to MLflow, not to the terminal: the stage's line says
    how many were tried."""
    import re

    import yaml

    from segbench.commands.train import main

    _, tiles, _ = tiny_data  # made from the same shrunk params
    raw = tmp_path / "params.yaml"
    raw.write_text(yaml.safe_dump(small_params_raw, sort_keys=False))
    main(["canny", "--tiles", str(tiles), "--out", str(tmp_path / "canny"), "--params", str(raw)])
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("train@canny: ")]
    shown = json.loads(line.split(": ", 1)[1])
    assert "fit_candidates" in shown and shown["fit_candidates"] > 10
    assert not [k for k in shown if re.match(r"fit_dice_", k)] and len(line) < 400
