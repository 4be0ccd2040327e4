"""Classes and channels as data: the class list in params, mask interpretation at fetch (index,
palette and colour masks), the channels kept through prepare and the Dataset, and every refusal
(one line naming the key or the file, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segbench.classes import IGNORE, read_channels, read_classes
from segbench.config import not_applicable, parse_params
from segbench.data.resize import resize_mask
from segbench.data.split import assign_splits
from segbench.errors import SegbenchError
from segbench.fetch import DataProblems, fetch
from segbench.io import read_csv, read_image, read_json, read_mask
from tests.conftest import deep_update, real_params_raw
from tests.datasets import (
    PARKING_COLORS,
    parking_classes,
    particle_pair,
    write_parking_palette_dataset,
    write_png_dataset,
)


def params_for(**data):
    return parse_params(deep_update(real_params_raw(), {"data": data}))


def folder(path, **data):
    return params_for(source="folder", path=str(path), **data)


# --- the class list in params ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "extra", "says"),
    [
        (["background"], {}, "at least two entries"),
        (["background", "a", "a"], {}, "appear more than once"),
        (
            [
                {"name": "bg", "values": [0]},
                {"name": "a", "values": [1]},
                {"name": "b", "values": [1]},
            ],
            {},
            "the value 1 is claimed by both a and b",
        ),
        (
            [{"name": "bg", "values": [0]}, {"name": "a", "color": [255, 0, 0]}],
            {},
            "either every class names a color",
        ),
        (
            [{"name": "bg", "color": [0, 0, 0]}, {"name": "a", "color": [0, 0, 0]}],
            {},
            "share one color",
        ),
        (["background", "a", "b"], {"mask": {"value": 3, "threshold": None}}, "data.mask"),
        (None, {"ignore_values": [255]}, "ignore_values: needs a class list"),
    ],
)
def test_impossible_class_lists_are_refused_at_load(tmp_path, classes, extra, says):
    with pytest.raises(SegbenchError, match=says) as err:
        folder(tmp_path, classes=classes, **extra)
    assert "data.classes" in str(err.value) or "data.ignore_values" in str(err.value)
    assert "\n" not in str(err.value)


def test_synthetic_domains_bring_their_classes_and_names_must_match():
    assert params_for(synthetic={"domain": "phases"}).data.class_spec().names == (
        "substrate",
        "phase_a",
        "phase_b",
    )
    assert params_for(synthetic={"domain": "particles"}).data.class_spec().binary
    renamed = params_for(synthetic={"domain": "phases"}, classes=["matrix", "alpha", "beta"])
    assert renamed.data.class_spec().names == ("matrix", "alpha", "beta")
    with pytest.raises(SegbenchError, match="has 3 classes"):
        params_for(synthetic={"domain": "phases"}, classes=["a", "b"])


def test_class_weights_need_one_per_class_and_a_loss_that_can_use_them():
    raw = deep_update(real_params_raw(), {"data": {"synthetic": {"domain": "phases"}}})
    with pytest.raises(SegbenchError, match=r"train.class_weights: 2 weight\(s\) for 3 classes"):
        parse_params(deep_update(raw, {"train": {"class_weights": [1.0, 2.0]}}))
    parse_params(deep_update(raw, {"train": {"class_weights": [0.5, 1.0, 2.0]}}))
    binary = deep_update(real_params_raw(), {"train": {"class_weights": [1.0, 3.0]}})
    with pytest.raises(SegbenchError, match="nothing to weight"):
        parse_params(binary)  # loss: dice in params.yaml
    parse_params(deep_update(binary, {"train": {"loss": "dice_bce"}}))


def test_zero_shot_sam_is_not_applicable_to_several_classes_and_box_prompts_are_refused():
    params = params_for(synthetic={"domain": "phases"})
    skipped = not_applicable(params)
    zero_shot = {m for m, e in params.models.items() if e.model == "sam_zero_shot"}
    edges = {m for m, e in params.models.items() if e.model in ("sobel", "canny")}
    assert set(skipped) == zero_shot | edges  # edge baselines: tests/test_edges.py
    assert all("one class" in skipped[m] for m in zero_shot)
    assert not not_applicable(params_for())  # binary: everything runs
    raw = deep_update(real_params_raw(), {"data": {"synthetic": {"domain": "phases"}}})
    raw["models"]["sam_decoder"]["prompt"] = "box"
    raw["models"]["sam_decoder"]["box_jitter"] = 0
    with pytest.raises(SegbenchError, match=r"models\.sam_decoder\.prompt: box prompts"):
        parse_params(raw)


# --- fetch: masks of several classes ---------------------------------------------------------


def test_rgb_images_with_palette_masks(tmp_path):
    root = write_parking_palette_dataset(tmp_path / "in", 10)
    summary = fetch(folder(root, classes=parking_classes()), tmp_path / "raw")
    raw = tmp_path / "raw"
    spec = read_classes(raw)
    assert spec.names == tuple(PARKING_COLORS) and read_channels(raw) == "rgb"
    assert summary["input_channels"] == "rgb"
    assert [c["name"] for c in summary["classes"]] == list(PARKING_COLORS)
    assert abs(sum(c["pixel_share"] for c in summary["classes"]) - 1) < 1e-4
    row = read_csv(raw / "manifest.csv")[0]
    image = read_image(raw / row["image"], "rgb")
    mask = read_mask(raw / row["mask"], 3)
    source = np.asarray(Image.open(root / "images" / f"{row['name']}.png"))
    np.testing.assert_array_equal(image, source)  # the colour is kept
    np.testing.assert_array_equal(
        mask, np.asarray(Image.open(root / "masks" / f"{row['name']}.png"))
    )
    assert set(np.unique(mask)) <= {0, 1, 2} and row["classes_present"]


def test_a_palette_that_differs_from_the_class_list_names_file_and_colour(tmp_path):
    root = write_parking_palette_dataset(tmp_path / "in", 10, palette_extra=(7, (0, 128, 255)))
    with pytest.raises(DataProblems, match=r"lot_000\.png.*\(0, 128, 255\).*no class") as err:
        fetch(folder(root, classes=parking_classes()), tmp_path / "raw")
    assert "asphalt=(0, 0, 0)" in str(err.value)
    assert not (tmp_path / "raw").exists()


def test_index_masks_with_an_unclaimed_value_name_it(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10, mask_255=False)
    mask_path = root / "masks" / "img_004.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:3, :3] = 5
    Image.fromarray(mask).save(mask_path)
    with pytest.raises(DataProblems, match=r"img_004\.png: holds value\(s\) 5 that no class"):
        fetch(folder(root, classes=["background", "particle", "other"]), tmp_path / "raw")
    # Declared as not annotated, the same value is kept out of training and scoring.
    fetch(
        folder(root, classes=["background", "particle", "other"], ignore_values=[5]),
        tmp_path / "raw",
    )
    stored = read_mask(tmp_path / "raw" / "masks" / "img_004.png", 3)
    assert (stored[:3, :3] == IGNORE).all()


def test_colour_masks_with_an_unknown_colour_name_it(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10)
    for path in (root / "masks").iterdir():
        m = np.asarray(Image.open(path)) > 0
        rgb = np.zeros((*m.shape, 3), np.uint8)
        rgb[m] = (255, 0, 0)
        if path.stem == "img_002":
            rgb[0, 0] = (1, 2, 3)
        Image.fromarray(rgb).save(path)
    classes = [{"name": "bg", "color": [0, 0, 0]}, {"name": "particle", "color": [255, 0, 0]}]
    with pytest.raises(DataProblems, match=r"img_002\.png: holds colour\(s\) \(1, 2, 3\)"):
        fetch(folder(root, classes=classes), tmp_path / "raw")


def test_a_mixed_folder_becomes_rgb_and_gray_can_be_asked_for(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10)
    colour = np.zeros((96, 128, 3), np.uint8)
    colour[..., 0] = particle_pair(200)[0]
    Image.fromarray(colour).save(root / "images" / "img_000.png")
    fetch(folder(root), tmp_path / "raw")
    raw = tmp_path / "raw"
    assert read_channels(raw) == "rgb"
    for row in read_csv(raw / "manifest.csv"):
        assert read_image(raw / row["image"]).shape == (96, 128, 3)  # grey ones replicated
    fetch(folder(root, channels="gray"), tmp_path / "grey")
    assert read_channels(tmp_path / "grey") == "gray"
    assert read_image(tmp_path / "grey" / "images" / "img_000.png").ndim == 2


# --- splits, resizing, tiles and the Dataset ---------------------------------------------------


def test_splits_stratify_on_the_rarest_class_present():
    ids = [f"i{k:02d}" for k in range(40)]
    # class 2 (rare) in 8 images, class 1 in all of them
    presence = [[1, 2] if k % 5 == 0 else [1] for k in range(40)]
    splits = assign_splits(ids, train=0.6, val=0.15, test=0.25, seed=3, presence=presence)
    rare = [splits[i] for i, p in zip(ids, presence, strict=True) if 2 in p]
    assert rare.count("test") == 2 and rare.count("val") >= 1 and rare.count("train") >= 4


def test_resizing_a_mask_of_several_classes_keeps_labels_and_ignore():
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 2
    mask[10:20, 10:30] = 1
    mask[0:4, 0:4] = IGNORE
    small = resize_mask(mask, (20, 20), num_classes=3)
    assert set(np.unique(small)) == {0, 1, 2, IGNORE}
    assert small[15, 5] == 0 and small[15, 15] == 2 and small[7, 10] == 1 and small[0, 0] == IGNORE


def test_rgb_tiles_and_index_targets_reach_the_model(tmp_path):
    from segbench.data.dataset import TileDataset
    from segbench.prepare import prepare

    root = write_parking_palette_dataset(tmp_path / "in", 10, height=128, width=160)
    params = folder(root, classes=parking_classes())
    params = params.with_overrides(
        {"prepare.scale": 0.5, "prepare.tile_size": 64, "prepare.stride": 64}
    )
    fetch(params, tmp_path / "raw")
    prepare(params.prepare, tmp_path / "raw", tmp_path / "tiles")
    assert read_classes(tmp_path / "tiles").num_classes == 3
    ds = TileDataset.from_dir(tmp_path / "tiles", "train")
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype.is_floating_point
    assert y.shape == (64, 64) and str(y.dtype) == "torch.int64" and int(y.max()) <= 2
    assert read_json(tmp_path / "tiles" / "summary.json")["tiles"]["train"] == len(ds)


def test_a_saved_hub_dataset_takes_a_class_list_too(tmp_path):
    import datasets

    from segbench.data.parking import generate_parking
    from segbench.data.synthetic import sample_seed

    rows = {"image": [], "label": []}
    for i in range(10):
        image, mask = generate_parking(sample_seed(3, i), height=96, width=128, noise=1.0)
        rows["image"].append(Image.fromarray(image))
        rows["label"].append(Image.fromarray(mask * 10))  # stored values 0, 10, 20
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
    classes = [
        {"name": "asphalt", "values": [0]},
        {"name": "car", "values": [10]},
        {"name": "marking", "values": [20]},
    ]
    summary = fetch(
        params_for(source="hf", path=str(tmp_path / "hf"), classes=classes), tmp_path / "raw"
    )
    assert [c["name"] for c in summary["classes"]] == ["asphalt", "car", "marking"]
    assert summary["input_channels"] == "rgb"
    row = read_csv(tmp_path / "raw" / "manifest.csv")[0]
    np.testing.assert_array_equal(
        read_mask(tmp_path / "raw" / row["mask"], 3) * 10,
        np.asarray(rows["label"][int(row["name"].split("_")[-1])]),
    )


def test_zero_shot_sam_sees_colour_images_in_colour():
    from segbench.sam.zero_shot import to_sam_rgb

    unit = np.random.default_rng(0).random((8, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_sam_rgb(unit), np.rint(unit * 255).astype(np.uint8))
    grey = to_sam_rgb(unit[..., 0])
    assert grey.shape == (8, 9, 3) and (grey[..., 0] == grey[..., 2]).all()


def test_a_model_of_other_classes_is_refused_by_evaluate(tiny_data, tmp_path):
    from segbench.evaluate import evaluate
    from segbench.training import train

    _, tiles, params = tiny_data  # binary particles
    train("otsu", params, tiles, tmp_path / "otsu")
    phases = params.with_overrides({"data.synthetic.domain": "phases"})
    fetch(phases, tmp_path / "raw3")
    with pytest.raises(SegbenchError, match="trained for the classes background, particle"):
        evaluate(tmp_path / "otsu", phases, tmp_path / "raw3", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_ignore_values_need_three_classes():
    classes = [{"name": "bg", "values": [0]}, {"name": "fg", "values": [1]}]
    with pytest.raises(SegbenchError, match="ignore_values: needs three or more classes"):
        params_for(source="folder", path=".", classes=classes, ignore_values=[255])
