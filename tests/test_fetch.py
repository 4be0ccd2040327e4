"""fetch on every source: real files, a saved Hugging Face dataset, and every validation rule."""

import subprocess
import sys

import datasets
import numpy as np
import pytest
import tifffile
from PIL import Image

from segbench.config import parse_params
from segbench.errors import SegbenchError
from segbench.fetch import DataProblems, fetch
from segbench.io import read_csv, read_image, read_json, read_mask
from segbench.objects import read_instances
from tests.conftest import REPO, deep_update, real_params_raw
from tests.datasets import particle_pair, to_12_in_16, write_png_dataset, write_tiff_dataset


def params_for(**data):
    return parse_params(deep_update(real_params_raw(), {"data": data}))


def test_folder_of_16_bit_tiffs_with_instance_labels(tmp_path):
    root = write_tiff_dataset(tmp_path / "in", 12)
    summary = fetch(params_for(source="folder", path=str(root)), tmp_path / "raw")
    rows = read_csv(tmp_path / "raw" / "manifest.csv")
    assert len(rows) == 12 and summary["bit_depths"] == {16: 12}
    fractions = real_params_raw()["data"]["split"]  # the real params.yaml's split
    assert all(abs(summary["splits"][s] - 12 * fractions[s]) < 1 for s in ("train", "val", "test"))
    row = next(r for r in rows if r["name"] == "sample_003")
    image = read_image(tmp_path / "raw" / row["image"])
    expected, mask = particle_pair(103)
    np.testing.assert_array_equal(image, to_12_in_16(expected))  # all 16 bits kept
    np.testing.assert_array_equal(read_mask(tmp_path / "raw" / row["mask"]), mask)
    assert float(row["foreground_fraction"]) == round(float(mask.mean()), 6)
    stored = read_json(tmp_path / "raw" / "summary.json")
    assert stored["foreground_fraction"]["median"] > 0 and stored["empty_masks"] == 0


def test_folder_rgb_pngs_with_mask_suffix(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10, rgb=True, mask_255=False)
    for path in (root / "masks").iterdir():
        path.rename(path.with_name(path.stem + "_mask.png"))
    params = params_for(source="folder", path=str(root), folder={"mask_suffix": "_mask"})
    summary = fetch(params, tmp_path / "raw")
    assert summary["channels"] == {"rgb": 10} and summary["bit_depths"] == {8: 10}


def test_one_chosen_label_value(tmp_path):
    root = write_tiff_dataset(tmp_path / "in", 10)
    summary = fetch(
        params_for(source="folder", path=str(root), mask={"value": 1}), tmp_path / "raw"
    )
    all_labels = fetch(params_for(source="folder", path=str(root)), tmp_path / "raw2")
    assert 0 < summary["foreground_fraction"]["mean"] < all_labels["foreground_fraction"]["mean"]
    with pytest.raises(SegbenchError, match=r"data\.mask\.value: no mask .* label 999"):
        fetch(params_for(source="folder", path=str(root), mask={"value": 999}), tmp_path / "r3")


def test_every_problem_is_reported_and_nothing_is_written(tmp_path):
    root = write_png_dataset(tmp_path / "in", 12)
    # A corrupt image, a mask of another size, a colour mask, an image without a mask, a mask
    # without an image, two images sharing a stem and a stray text file: all in one report.
    (root / "images" / "img_000.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "img_001.png")
    colour = np.zeros((96, 128, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(root / "masks" / "img_002.png")
    (root / "masks" / "img_003.png").unlink()
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(root / "masks" / "orphan.png")
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(root / "images" / "img_004.jpg")
    (root / "images" / "notes.txt").write_text("hello")
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("previous good output")
    with pytest.raises(DataProblems) as info:
        fetch(params_for(source="folder", path=str(root)), out)
    text = str(info.value)
    expected = [
        ("img_000.png", "cannot decode image"),
        ("img_001.png", "10x10"),
        ("img_002.png", "colour mask"),
        ("img_003.png", "no mask named img_003"),
        ("orphan.png", "no image for this mask"),
        ("img_004", "share the stem"),
        ("notes.txt", "not a png/jpg/jpeg/tif/tiff file"),
    ]
    for name, why in expected:
        assert any(name in line and why in line for line in text.splitlines()), (name, text)
    assert len(info.value.problems) == len(expected)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # untouched
    assert not list(tmp_path.glob(".raw.partial*"))


def test_empty_folder_and_missing_folders(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(DataProblems, match="holds no image/mask pairs"):
        fetch(params_for(source="folder", path=str(tmp_path / "empty")), tmp_path / "raw")
    with pytest.raises(DataProblems, match="no such folder"):
        fetch(params_for(source="folder", path=str(tmp_path / "nowhere")), tmp_path / "raw")


def test_group_regex_must_match_every_file(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10)
    params = params_for(source="folder", path=str(root), split={"group": r"^patient(\d+)"})
    with pytest.raises(DataProblems, match=r"data\.split\.group .* does not match"):
        fetch(params, tmp_path / "raw")


def test_groups_never_cross_splits(tmp_path):
    root = tmp_path / "in"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for patient in range(12):
        for view in range(3):
            image, mask = particle_pair(patient * 10 + view)
            name = f"P{patient:02d}_view{view}.png"
            Image.fromarray(image).save(root / "images" / name)
            Image.fromarray(mask * 255).save(root / "masks" / name)
    params = params_for(source="folder", path=str(root), split={"group": r"^(P\d+)_"})
    summary = fetch(params, tmp_path / "raw")
    rows = read_csv(tmp_path / "raw" / "manifest.csv")
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert len(by_group) == 12 and all(len(s) == 1 for s in by_group.values())
    assert summary["n_groups"] == 12


def test_synthetic_ultrasound_has_empty_references(tmp_path):
    small = {"domain": "ultrasound", "n_images": 20, "height": 256, "width": 320}
    # At full scale: the shipped 128-px tiles must fit the small frames.
    raw = deep_update(real_params_raw(), {"data": {"synthetic": small}, "prepare": {"scale": 1.0}})
    params = parse_params(raw)
    summary = fetch(params, tmp_path / "raw")
    assert 0 < summary["empty_masks"] < 20
    assert summary["sizes"] == {"320x256": 20}


def _save_hf(path, n=10, *, split_names=("train", "test")):
    images, masks = [], []
    for i in range(n):
        image, mask = particle_pair(300 + i)
        images.append(Image.fromarray(np.repeat(image[..., None], 3, axis=2)))
        masks.append(Image.fromarray(mask * 255))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    half = n // 2
    parts = {
        split_names[0]: datasets.Dataset.from_dict(
            {"image": images[:half], "label": masks[:half]}, features=features
        ),
        split_names[1]: datasets.Dataset.from_dict(
            {"image": images[half:], "label": masks[half:]}, features=features
        ),
    }
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


def test_hf_dataset_saved_to_disk(tmp_path):
    path = _save_hf(tmp_path / "hf", 12)
    summary = fetch(params_for(source="hf", path=str(path)), tmp_path / "raw")
    rows = read_csv(tmp_path / "raw" / "manifest.csv")
    assert summary["n_images"] == 12 and summary["channels"] == {"rgb": 12}
    assert {r["name"] for r in rows} >= {"train_00000", "test_00005"}
    row = next(r for r in rows if r["name"] == "test_00000")
    np.testing.assert_array_equal(read_mask(tmp_path / "raw" / row["mask"]), particle_pair(306)[1])
    only = fetch(params_for(source="hf", path=str(path), hf={"split": "train"}), tmp_path / "r2")
    assert only["n_images"] == 6


def test_hf_bad_column_split_and_unreachable_hub(tmp_path, monkeypatch):
    path = _save_hf(tmp_path / "hf", 10)
    with pytest.raises(DataProblems, match=r"data\.hf\.mask_column: .* no column 'mask'.*label"):
        fetch(params_for(source="hf", path=str(path), hf={"mask_column": "mask"}), tmp_path / "r")
    with pytest.raises(SegbenchError, match=r"data\.hf\.split: .* valid: test, train"):
        fetch(params_for(source="hf", path=str(path), hf={"split": "dev"}), tmp_path / "r")
    with pytest.raises(SegbenchError, match="not a dataset saved with `datasets`"):
        fetch(params_for(source="hf", path=str(tmp_path)), tmp_path / "r")
    # No network here; offline mode makes the hub lookup fail at once instead of timing out.
    # The libraries read these settings at import, so patch the loaded constants too.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(SegbenchError, match=r"data\.hf\.name: cannot load 'nobody/no-such-set'"):
        fetch(params_for(source="hf", hf={"name": "nobody/no-such-set"}), tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"split": {"train": 0.6, "val": 0.2, "test": 0.1}}, "data.split.train"),
        ({"source": "kaggle"}, "data.source"),
        ({"source": "folder"}, "data.path"),
        ({"source": "hf"}, "data.hf.name"),
        ({"split": {"group": "(unclosed"}}, "data.split.group"),
        ({"mask": {"value": 1, "threshold": 128}}, "data.mask.value"),
        ({"mask": {"instances": True, "value": 1}}, "data.mask.instances"),
        ({"mask": {"instances": True, "threshold": 128}}, "data.mask.instances"),
        ({"mask": {"instances": 1}}, "data.mask.instances"),
        ({"mask": {"instances": "yes"}}, "data.mask.instances"),
        (
            {
                "mask": {"instances": True},
                "classes": [{"name": "bg", "values": [0]}, {"name": "cell", "values": [1]}],
            },
            "data.mask.instances",
        ),
        ({"mask": {"instances": True}, "synthetic": {"domain": "phases"}}, "data.mask.instances"),
    ],
)
def test_bad_data_params_name_the_key(overrides, key):
    with pytest.raises(SegbenchError, match=key.replace(".", r"\.")):
        params_for(**overrides)


def test_cli_reports_bad_data_without_a_traceback(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10)
    (root / "images" / "img_000.png").write_bytes(b"garbage")
    raw = deep_update(real_params_raw(), {"data": {"source": "folder", "path": str(root)}})
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "fetch.py"), "--out", "data/raw"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "img_000.png: cannot decode image" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "data" / "raw").exists()


def test_tiff_written_by_other_tools_reads(tmp_path):
    # ImageJ-style TIFF with a single page and a compression codec.
    root = write_tiff_dataset(tmp_path / "in", 10)
    image = tifffile.imread(root / "images" / "sample_000.tif")
    tifffile.imwrite(root / "images" / "sample_000.tif", image, compression="zlib", imagej=True)
    summary = fetch(params_for(source="folder", path=str(root)), tmp_path / "raw")
    assert summary["n_images"] == 10


# --- instance labels (data.mask.instances) --------------------------------------------------


def _instances_of(raw, rows):
    """{id: (instance labels or None, binary mask)} of a fetched ``raw`` folder."""
    return {
        r["id"]: (
            read_instances(raw / r["instances"]) if r["instances"] else None,
            read_mask(raw / r["mask"]),
        )
        for r in rows
    }


def test_instance_label_masks_are_kept_beside_the_binary_mask(tmp_path):
    root = write_tiff_dataset(tmp_path / "in", 10)  # uint16 masks, one label per particle
    summary = fetch(params_for(source="folder", path=str(root)), tmp_path / "raw")
    rows = read_csv(tmp_path / "raw" / "manifest.csv")
    kept = 0
    for row in rows:
        stored = tifffile.imread(root / "masks" / f"{row['name']}.tif")
        labels, mask = _instances_of(tmp_path / "raw", [row])[row["id"]]
        if len(np.unique(stored[stored > 0])) < 2:  # auto: one value is a plain mask
            assert row["instances"] == "" and labels is None
            continue
        kept += 1
        assert row["instances"] == f"instances/{row['id']}.tif"
        np.testing.assert_array_equal(labels > 0, mask)
        # the same objects, numbered 1..N
        assert set(np.unique(labels).tolist()) == set(range(labels.max() + 1))
        pairs = {(int(a), int(b)) for a, b in zip(stored[mask > 0], labels[mask > 0], strict=True)}
        assert len(pairs) == labels.max() == len({a for a, _ in pairs})
    assert kept >= 8 and summary["instance_masks"] == kept
    never = fetch(
        params_for(source="folder", path=str(root), mask={"instances": False}), tmp_path / "r2"
    )
    assert never["instance_masks"] == 0 and not (tmp_path / "r2" / "instances").exists()
    assert all(r["instances"] == "" for r in read_csv(tmp_path / "r2" / "manifest.csv"))
    # the binary masks do not depend on the setting; the test split's hash covers the instance
    # labels too (they are what objects are scored against), so it does
    for r in rows:
        assert (tmp_path / "raw" / r["mask"]).read_bytes() == (
            tmp_path / "r2" / r["mask"]
        ).read_bytes()
    assert summary["test_data_hash"] != never["test_data_hash"]


def test_plain_binary_masks_hold_no_instances_unless_asked(tmp_path):
    root = write_png_dataset(tmp_path / "in", 10)  # {0, 255}
    summary = fetch(params_for(source="folder", path=str(root)), tmp_path / "raw")
    assert summary["instance_masks"] == 0 and not (tmp_path / "raw" / "instances").exists()
    assert all(r["instances"] == "" for r in read_csv(tmp_path / "raw" / "manifest.csv"))
    # true: every mask is an instance label image, its one value one object
    every = fetch(
        params_for(source="folder", path=str(root), mask={"instances": True}), tmp_path / "r2"
    )
    rows = read_csv(tmp_path / "r2" / "manifest.csv")
    assert every["instance_masks"] == 10
    for labels, mask in _instances_of(tmp_path / "r2", rows).values():
        assert labels.max() == 1 and np.array_equal(labels, mask)


def test_synthetic_particles_carry_instance_labels(tmp_path):
    # 6 to 12 particles per 96x128 frame (n_particles is per 1024x768)
    small = {"n_images": 10, "height": 96, "width": 128, "n_particles": [400, 800]}
    small |= {"radius": [3.0, 12.0]}
    summary = fetch(params_for(synthetic=small), tmp_path / "raw")
    rows = read_csv(tmp_path / "raw" / "manifest.csv")
    assert summary["instance_masks"] == 10
    for labels, mask in _instances_of(tmp_path / "raw", rows).values():
        np.testing.assert_array_equal(labels > 0, mask)  # their union is the binary mask
        assert labels.max() >= 2
    # other domains, and a value rule, store no instances
    ultrasound = {**small, "domain": "ultrasound", "height": 128}
    assert fetch(params_for(synthetic=ultrasound), tmp_path / "r2")["instance_masks"] == 0
    one_value = fetch(params_for(synthetic=small, mask={"value": 1}), tmp_path / "r3")
    assert one_value["instance_masks"] == 0
    assert one_value["foreground_fraction"] == summary["foreground_fraction"]
