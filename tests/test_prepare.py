"""prepare: tiles cover every pixel, augmentation counts, crops, bit depth, workers, errors."""

import numpy as np
import pytest
from PIL import Image

from segbench.config import parse_params
from segbench.data.normalize import intensity_range
from segbench.data.resize import resize_image, scaled_shape
from segbench.fetch import fetch
from segbench.io import read_csv, read_image, read_json, read_mask
from segbench.prepare import prepare
from tests.conftest import deep_update, real_params_raw
from tests.datasets import particle_pair, write_png_dataset, write_tiff_dataset

SMALL = {"scale": 1.0, "tile_size": 64, "stride": 48, "random_crops": 2, "workers": 1}


@pytest.fixture(scope="module")
def raw16(tmp_path_factory):
    root = tmp_path_factory.mktemp("p16")
    write_tiff_dataset(root / "in", 10, height=100, width=150)
    params = parse_params(
        deep_update(
            real_params_raw(),
            # 7 of the 10 images in train: enough crops for the foreground statistics below.
            {
                "data": {
                    "source": "folder",
                    "path": str(root / "in"),
                    "split": {"train": 0.7, "val": 0.2, "test": 0.1},
                }
            },
        )
    )
    fetch(params, root / "raw")
    return root / "raw"


def prep_cfg(**overrides):
    raw = deep_update(real_params_raw(), {"prepare": deep_update(SMALL, overrides)})
    return parse_params(raw).prepare


def test_windows_cover_every_pixel_of_every_val_image(raw16, tmp_path):
    cfg = prep_cfg(edges="shift")
    prepare(cfg, raw16, tmp_path / "t")
    rows = read_csv(tmp_path / "t" / "manifest.csv")
    for rec in (r for r in read_csv(raw16 / "manifest.csv") if r["split"] == "val"):
        image = read_image(raw16 / rec["image"])
        rebuilt = np.zeros_like(image)
        covered = np.zeros(image.shape, bool)
        for r in (r for r in rows if r["source"] == rec["id"]):
            y, x = int(r["y"]), int(r["x"])
            rebuilt[y : y + 64, x : x + 64] = read_image(
                tmp_path / "t" / "val" / "images" / f"{r['tile']}.png"
            )
            covered[y : y + 64, x : x + 64] = True
        assert covered.all()
        np.testing.assert_array_equal(rebuilt, image)  # 16-bit values survive tiling


def test_tiles_keep_16_bits_and_record_the_intensity_range(raw16, tmp_path):
    cfg = prep_cfg(normalize={"mode": "percentile", "percentiles": [1, 99]})
    prepare(cfg, raw16, tmp_path / "t")
    row = read_csv(tmp_path / "t" / "manifest.csv")[0]
    tile = read_image(tmp_path / "t" / row["split"] / "images" / f"{row['tile']}.png")
    assert tile.dtype == np.uint16 and tile.max() > 255
    source = read_image(raw16 / f"images/{row['source']}.png")
    lo, hi = intensity_range(source, cfg.normalize)
    assert (float(row["lo"]), float(row["hi"])) == pytest.approx((lo, hi))
    assert hi < 4096 + 16  # the 12-bit signal's range, not 65535


def test_offline_factor_keep_original_and_online_counts(raw16, tmp_path):
    base = prepare(prep_cfg(augment={"mode": "none"}), raw16, tmp_path / "none")
    n_train = base["tiles"]["train"]
    factor = prepare(
        prep_cfg(augment={"factor": 3, "keep_original": True, "rotate": {"p": 1.0}}),
        raw16,
        tmp_path / "x3",
    )
    assert factor["tiles"]["train"] == 4 * n_train
    assert factor["tiles"]["val"] == base["tiles"]["val"]  # val is never augmented
    copies = {int(r["copy"]) for r in read_csv(tmp_path / "x3" / "manifest.csv")}
    assert copies == {0, 1, 2, 3}
    online = prepare(prep_cfg(augment={"mode": "online"}), raw16, tmp_path / "online")
    assert online["data_version"] == base["data_version"]  # plain tiles, augmented later


def test_random_crops_respect_the_minimum_foreground(raw16, tmp_path):
    prepare(
        prep_cfg(random_crops=6, crop_min_foreground=0.05, augment={"mode": "none"}),
        raw16,
        tmp_path / "t",
    )
    crops = [r for r in read_csv(tmp_path / "t" / "manifest.csv") if r["kind"] == "crop"]
    assert crops and np.mean([float(r["foreground_fraction"]) >= 0.05 for r in crops]) > 0.95
    for r in crops[:5]:  # the crop really is the image at its recorded position
        image = read_image(raw16 / f"images/{r['source']}.png")
        tile = read_image(tmp_path / "t" / "train" / "images" / f"{r['tile']}.png")
        y, x = int(r["y"]), int(r["x"])
        np.testing.assert_array_equal(tile, image[y : y + 64, x : x + 64])


def test_same_output_for_any_number_of_workers(raw16, tmp_path):
    one = prepare(prep_cfg(workers=1), raw16, tmp_path / "w1")
    two = prepare(prep_cfg(workers=2), raw16, tmp_path / "w2")
    assert one["data_version"] == two["data_version"]
    a = read_csv(tmp_path / "w1" / "manifest.csv")
    assert a == read_csv(tmp_path / "w2" / "manifest.csv")
    r = next(r for r in a if r["kind"] == "crop")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "w1" / "train" / "masks" / f"{r['tile']}.png"),
        read_mask(tmp_path / "w2" / "train" / "masks" / f"{r['tile']}.png"),
    )


def test_an_image_tiles_the_same_when_others_are_removed(raw16, tmp_path):
    prepare(prep_cfg(), raw16, tmp_path / "all")
    rows = read_csv(raw16 / "manifest.csv")
    keep = [r for r in rows if r["split"] == "train"][:2]
    (tmp_path / "subset").mkdir()
    import shutil

    for sub in ("images", "masks"):
        shutil.copytree(raw16 / sub, tmp_path / "subset" / sub)
    from segbench.io import write_csv

    write_csv(tmp_path / "subset" / "manifest.csv", keep, list(rows[0]))
    prepare(prep_cfg(), tmp_path / "subset", tmp_path / "some")
    some = read_csv(tmp_path / "some" / "manifest.csv")
    full = {r["tile"]: r for r in read_csv(tmp_path / "all" / "manifest.csv")}
    for r in some:
        assert full[r["tile"]] == r
        np.testing.assert_array_equal(
            read_image(tmp_path / "some" / "train" / "images" / f"{r['tile']}.png"),
            read_image(tmp_path / "all" / "train" / "images" / f"{r['tile']}.png"),
        )


def test_images_smaller_than_a_tile_are_padded(tmp_path, capsys):
    root = tmp_path / "in"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(
            root / "images" / f"s{i}.png"
        )
        Image.fromarray((rng.random((40, 50)) > 0.5).astype(np.uint8) * 255).save(
            root / "masks" / f"s{i}.png"
        )
    params = parse_params(
        deep_update(
            real_params_raw(), {"data": {"source": "folder", "path": str(root)}, "prepare": SMALL}
        )
    )
    fetch(params, tmp_path / "raw")
    capsys.readouterr()
    summary = prepare(params.prepare, tmp_path / "raw", tmp_path / "t")
    assert summary["tiles"]["val"] == summary["images"]["val"]  # one padded window each
    assert summary["padded_images"] == summary["images"]  # every train/val image, counted
    assert read_json(tmp_path / "t" / "summary.json")["padded_images"] == summary["images"]
    n = sum(summary["images"].values())
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warning.startswith(f"warning: prepare: {n} of {n} train/val images (")
    assert "prepare.tile_size=64 after prepare.scale=1 (smallest 40x50)" in warning
    assert warning.endswith("prepare.tile_size: 32 or less would tile every image without padding")


def test_a_tile_larger_than_synthetic_images_pads_them_all_and_says_so(tmp_path, capsys):
    """The same rule as for any source: generated images smaller than a tile are padded, not
    refused (96x128 at scale 0.5 is 48x64, under the 64 px tile)."""
    params = parse_params(
        deep_update(
            real_params_raw(),
            {
                "data": {"synthetic": {"n_images": 10, "height": 96, "width": 128}},
                "prepare": SMALL | {"scale": 0.5},
            },
        )
    )
    fetch(params, tmp_path / "raw")
    capsys.readouterr()
    summary = prepare(params.prepare, tmp_path / "raw", tmp_path / "t")
    tiled = [r for r in read_csv(tmp_path / "raw" / "manifest.csv") if r["split"] != "test"]
    assert sum(summary["padded_images"].values()) == len(tiled) > 0
    assert read_json(tmp_path / "t" / "summary.json")["padded_images"] == summary["images"]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert f"warning: prepare: {len(tiled)} of {len(tiled)} train/val images (" in err
    assert "smaller than prepare.tile_size=64 after prepare.scale=0.5 (smallest 48x64)" in err


def test_one_small_image_among_large_ones_is_the_one_counted(tmp_path, capsys):
    root = write_png_dataset(tmp_path / "in", 9)  # 96 x 128: at least one 64 px tile
    image, mask = particle_pair(7, height=96, width=128)
    Image.fromarray(image[:40, :50]).save(root / "images" / "small.png")
    Image.fromarray(mask[:40, :50] * 255).save(root / "masks" / "small.png")
    params = parse_params(
        deep_update(
            real_params_raw(), {"data": {"source": "folder", "path": str(root)}, "prepare": SMALL}
        )
    )
    fetch(params, tmp_path / "raw")
    split = next(
        r["split"] for r in read_csv(tmp_path / "raw" / "manifest.csv") if r["id"] == "small"
    )
    assert split in ("train", "val")  # the seeded split tiles it
    capsys.readouterr()
    summary = prepare(params.prepare, tmp_path / "raw", tmp_path / "t")
    assert summary["padded_images"] == {"train": 0, "val": 0} | {split: 1}
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert f"1 of {sum(summary['images'].values())} train/val images (1 {split})" in warning
    assert "(smallest 40x50)" in warning


def test_images_at_least_a_tile_are_not_padded_and_nothing_is_said(raw16, tmp_path, capsys):
    summary = prepare(prep_cfg(), raw16, tmp_path / "t")  # 100 x 150 images, 64 px tiles
    assert summary["padded_images"] == {"train": 0, "val": 0}
    assert "warning" not in capsys.readouterr().err


def test_bad_prepare_params_name_the_key():
    from segbench.errors import SegbenchError

    for overrides, key in [
        ({"stride": 32, "overlap": 0.5}, "prepare.overlap"),
        ({"stride": 128}, "prepare.stride"),
        ({"augment": {"rotate": {"limit": 400}}}, "prepare.augment.rotate.limit"),
        ({"normalize": {"percentiles": [99, 1]}}, "prepare.normalize.percentiles"),
        ({"augment": {"mode": "sometimes"}}, "prepare.augment.mode"),
    ]:
        with pytest.raises(SegbenchError, match=key.replace(".", r"\.")):
            prep_cfg(**overrides)


def test_overlap_sets_the_stride():
    assert prep_cfg(stride=None, overlap=0.25).step == 48


def test_scale_applies_before_tiling(raw16, tmp_path):
    prepare(prep_cfg(scale=0.5, tile_size=32, stride=32), raw16, tmp_path / "t")
    rec = next(r for r in read_csv(raw16 / "manifest.csv") if r["split"] == "val")
    image = read_image(raw16 / rec["image"])
    small = resize_image(image, scaled_shape(*image.shape, 0.5))
    row = next(r for r in read_csv(tmp_path / "t" / "manifest.csv") if r["source"] == rec["id"])
    tile = read_image(tmp_path / "t" / "val" / "images" / f"{row['tile']}.png")
    np.testing.assert_array_equal(tile, small[:32, :32])
    assert read_json(tmp_path / "t" / "summary.json")["scale"] == 0.5
