"""fetch and prepare on a shrunk copy of the real params."""

import numpy as np

from segbench.io import read_csv, read_image, read_json, read_mask


def test_fetch_writes_images_masks_and_a_7_2_1_manifest(tiny_data):
    raw, _, params = tiny_data
    rows = read_csv(raw / "manifest.csv")
    syn = params.data.synthetic
    assert len(rows) == syn.n_images
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert sum(r["split"] == "train" for r in rows) == 7
    for r in rows[:3]:
        image, mask = read_image(raw / r["image"]), read_mask(raw / r["mask"])
        assert image.shape == mask.shape == (syn.height, syn.width)
        assert float(r["foreground_fraction"]) == round(float(mask.mean()), 6)
    assert read_json(raw / "summary.json")["n_images"] == syn.n_images


def test_prepare_tiles_train_and_val_only(tiny_data):
    raw, tiles, params = tiny_data
    manifest = read_csv(tiles / "manifest.csv")
    sources = {r["id"]: r["split"] for r in read_csv(raw / "manifest.csv")}
    assert {r["split"] for r in manifest} == {"train", "val"}
    assert all(sources[r["source"]] == r["split"] for r in manifest)  # no split leakage
    train_crops = [r for r in manifest if r["split"] == "train" and r["kind"] == "crop"]
    assert len(train_crops) == 7 * params.prepare.random_crops
    assert not [r for r in manifest if r["split"] == "val" and r["kind"] == "crop"]
    t = params.prepare.tile_size
    first = manifest[0]
    image = read_image(tiles / first["split"] / "images" / f"{first['tile']}.png")
    assert image.shape == (t, t)
    assert len(read_json(tiles / "summary.json")["data_version"]) == 16


def test_prepare_is_reproducible(tiny_data, tmp_path):
    from segbench.prepare import prepare

    raw, tiles, params = tiny_data
    again = prepare(params.prepare, raw, tmp_path / "tiles")
    assert again["data_version"] == read_json(tiles / "summary.json")["data_version"]
    row = next(r for r in read_csv(tiles / "manifest.csv") if r["kind"] == "crop")
    a = read_mask(tiles / row["split"] / "masks" / f"{row['tile']}.png")
    b = read_mask(tmp_path / "tiles" / row["split"] / "masks" / f"{row['tile']}.png")
    np.testing.assert_array_equal(a, b)
