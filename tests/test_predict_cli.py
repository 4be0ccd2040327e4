"""``segbench predict MODEL_DIR INPUT_DIR OUTPUT_DIR``: a folder of user images -> binary masks.

Real trained models throughout: an Otsu model (fitted in a second; its per-image threshold puts
the mask where the bright objects are, which the tests can check) and a one-epoch U-Net (a
sliding-window torch model, the case where a size that is not a multiple of the tile matters).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from segbench.io import read_json
from segbench.predict_folder import predict_folder
from segbench.training import train
from tests.conftest import run_cli, seeded_store

# The module's tests share its trained models: on one xdist worker they are trained once.
pytestmark = pytest.mark.xdist_group("predict_models")


@pytest.fixture(scope="module")
def models(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """``{"otsu": dir, "unet": dir}``, both trained on the shrunk synthetic tiles."""
    from segbench.config import parse_params
    from tests.conftest import SHRINK, deep_update, real_params_raw

    _, tiles, _ = tiny_data
    one_epoch = parse_params(deep_update(deep_update(real_params_raw(), SHRINK), ONE_EPOCH))
    root = tmp_path_factory.mktemp("predict_models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", seeded_store(root / "mlflow.db"))
        for name in ("otsu", "unet"):
            train(name, one_epoch, tiles, root / name)
    return {"otsu": root / "otsu", "unet": root / "unet"}


# One epoch of a three-level U-Net: the shipped one's code, a fraction of its time.
ONE_EPOCH = {
    "train": {"epochs": 1},
    "models": {"unet": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}},
}
BINARY = {0, 255}


def disc_image(height: int, width: int, centre, radius: float, *, bright: bool) -> np.ndarray:
    """(H, W) uint8: one disc on a noisy background, brighter or darker than it."""
    rng = np.random.default_rng(height * width)
    yy, xx = np.mgrid[:height, :width]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    fg, bg = (200, 40) if bright else (40, 200)
    image = np.where(inside, fg, bg) + rng.normal(0, 6, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def disc_of(height: int, width: int, centre, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def write_formats(folder: Path, *, bright: bool = True) -> dict[str, tuple[int, int]]:
    """An 8-bit grey PNG, a 16-bit TIFF, an RGB JPEG and an RGBA PNG (upper-case suffix), none a
    multiple of the 64-px tile, each with one disc centred at (0.6 H, 0.65 W); ``{stem: (H, W)}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {"gray8": (203, 317), "gray16": (150, 97), "rgb": (121, 250), "rgba": (64, 65)}
    images = {
        stem: disc_image(h, w, (0.6 * h, 0.65 * w), 0.2 * min(h, w), bright=bright)
        for stem, (h, w) in shapes.items()
    }
    cv2.imwrite(str(folder / "gray8.png"), images["gray8"])
    tifffile.imwrite(folder / "gray16.tif", images["gray16"].astype(np.uint16) * 257)
    tint = np.array([1.0, 0.8, 0.6])  # channels differ, so it really is a colour image
    rgb = (images["rgb"][..., None] * tint).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=95)
    alpha = np.full(shapes["rgba"], 255, dtype=np.uint8)
    Image.fromarray(np.dstack([images["rgba"]] * 3 + [alpha])).save(folder / "rgba.PNG")
    return shapes


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable PNG"
    return image


def test_unet_masks_are_binary_at_each_images_own_size(models, tmp_path, capsys):
    shapes = write_formats(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "nested").mkdir()  # not recursive: a sub-folder is left alone
    cv2.imwrite(str(tmp_path / "in" / "nested" / "deep.png"), np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"

    code, stdout, _ = run_cli(
        ["predict", str(models["unet"]), str(tmp_path / "in"), str(out)], capsys
    )

    assert code == 0
    assert "wrote 4 masks" in stdout and "ignored 1 files" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.png" for s in shapes)
    for stem, shape in shapes.items():
        mask = read_png(out / f"{stem}.png")
        assert mask.dtype == np.uint8 and mask.shape == shape, stem
        assert set(np.unique(mask)) <= BINARY, stem


def test_otsu_masks_sit_on_the_objects_at_full_size(models, tmp_path, capsys):
    assert read_json(models["otsu"] / "state.json")["polarity"] == "bright"  # the data's objects
    shapes = write_formats(tmp_path / "in")

    code, _, _ = run_cli(
        ["predict", str(models["otsu"]), str(tmp_path / "in"), str(tmp_path / "o")], capsys
    )

    assert code == 0
    for stem, (h, w) in shapes.items():
        mask = read_png(tmp_path / "o" / f"{stem}.png") > 0
        truth = disc_of(h, w, (0.6 * h, 0.65 * w), 0.2 * min(h, w))
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dice > 0.9, (stem, dice)  # misplaced or mis-scaled masks would miss the disc


def test_corrupt_images_are_skipped_and_the_rest_kept(models, tmp_path, capsys):
    write_formats(tmp_path / "in")
    good = (tmp_path / "in" / "gray8.png").read_bytes()
    (tmp_path / "in" / "cut.png").write_bytes(good[: len(good) // 2])  # a truncated download
    (tmp_path / "in" / "junk.tif").write_bytes(b"this is no TIFF")

    summary = predict_folder(models["otsu"], tmp_path / "in", tmp_path / "out")

    assert summary["written"] == 4
    assert summary["skipped"] == [str(tmp_path / "in" / n) for n in ("cut.png", "junk.tif")]
    assert "cannot decode image" in summary["reasons"][str(tmp_path / "in" / "cut.png")]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["gray16.png", "gray8.png", "rgb.png", "rgba.png"]  # no temporary left
    err = capsys.readouterr().err
    assert f"warning: skipped {tmp_path / 'in' / 'cut.png'}: cannot decode image" in err


@pytest.mark.slow  # a fresh process importing torch (~2 s)
def test_cli_exits_2_naming_skipped_files_without_traceback(models, tmp_path):
    """As a real process: the masks of the good images stay, the status says something failed."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), disc_image(90, 130, (45, 60), 20, bright=True))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    out = tmp_path / "out"

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segbench.cli",
            "predict",
            str(models["otsu"]),
            str(folder),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"warning: skipped {folder / 'broken.jpg'}: cannot decode image" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 image(s) skipped") and str(folder / "broken.jpg") in last
    assert "wrote 1 masks" in proc.stdout
    assert read_png(out / "good.png").shape == (90, 130)
    assert not (out / "broken.png").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such directory"),
        (lambda d: d.write_text("x"), "not a directory"),
        (
            lambda d: d.mkdir(),
            "no image files (it is empty); accepted suffixes: png/jpg/jpeg/tif/tiff",
        ),
        (
            lambda d: (d.mkdir(), (d / "a.txt").write_text("x"), (d / "b.TXT").write_text("y")),
            "no image files (it holds 2 other files); accepted suffixes: png/jpg/jpeg/tif/tiff",
        ),
    ],
    ids=["missing", "a-file", "empty", "only-txt"],
)
def test_bad_input_folder_is_a_clear_error(models, tmp_path, capsys, setup, message):
    setup(tmp_path / "in")

    code, _, err = run_cli(
        ["predict", str(models["otsu"]), str(tmp_path / "in"), str(tmp_path / "o")], capsys
    )

    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'in'}: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _without(name):
    return lambda model: (model / name).unlink()


def _truncate(model: Path) -> None:
    weights = model / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:1000])


def _save_instead(obj):
    def damage(model: Path) -> None:
        torch.save(obj, model / "weights.pt")

    return damage


@pytest.mark.parametrize(
    ("damage", "names", "message"),
    [
        (_without("card.json"), "card.json", "not a trained segbench model (no card.json)"),
        (_without("weights.pt"), "weights.pt", "missing; re-run its train stage"),
        (_truncate, "weights.pt", "unreadable as a weights-only torch file"),
        (_save_instead([1, 2, 3]), "weights.pt", "holds a list, not a state dict"),
        # An object weights_only refuses to build: its code never runs.
        (_save_instead(argparse.Namespace(a=1)), "weights.pt", "unreadable as a weights-only"),
        (_save_instead({"nope": torch.zeros(1)}), "weights.pt", "does not fit the model"),
        (shutil.rmtree, "unet", "no such model directory"),
    ],
    ids=["no-config", "no-weights", "truncated", "a-list", "an-object", "other-keys", "no-dir"],
)
def test_incomplete_model_dir_is_a_clear_error(models, tmp_path, capsys, damage, names, message):
    model = tmp_path / "unet"
    shutil.copytree(models["unet"], model)
    damage(model)
    write_formats(tmp_path / "in")

    code, _, err = run_cli(
        ["predict", str(model), str(tmp_path / "in"), str(tmp_path / "o")], capsys
    )

    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert names in err and message in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("where", "says"),
    [
        (lambda tmp: tmp / "a-file" / "masks", "Not a directory"),
        (lambda tmp: Path("/proc/segbench-masks"), "No such file or directory"),  # pseudo fs
    ],
    ids=["under-a-file", "proc"],
)
def test_an_output_folder_that_cannot_be_written_is_refused_first(tmp_path, capsys, where, says):
    (tmp_path / "a-file").write_text("")
    write_formats(tmp_path / "in")
    out = where(tmp_path)
    # The model directory does not exist: the output folder is checked before the model loads.
    code, _, err = run_cli(["predict", str(tmp_path / "no-model"), str(tmp_path / "in"), str(out)],
                           capsys)  # fmt: skip
    assert code == 2 and err == (
        f"error: {out}: cannot write there ({says}); choose another folder or fix its permissions\n"
    )


def test_a_refused_model_leaves_no_new_output_folder(tmp_path, capsys):
    write_formats(tmp_path / "in")
    out = tmp_path / "new" / "masks"
    code, _, err = run_cli(["predict", str(tmp_path / "no-model"), str(tmp_path / "in"), str(out)],
                           capsys)  # fmt: skip
    assert code == 2 and "no-model" in err
    assert not (tmp_path / "new").exists()  # both folders it made are gone again


def test_overlays_are_rgb_at_image_size_with_the_mask_tinted(models, tmp_path, capsys):
    shapes = write_formats(tmp_path / "in")
    out = tmp_path / "out"

    code, stdout, _ = run_cli(
        ["predict", str(models["otsu"]), str(tmp_path / "in"), str(out), "--overlays"], capsys
    )

    assert code == 0 and f"overlays in {out / 'overlays'}" in stdout
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(
        f"{s}.png" for s in shapes
    )
    for stem, shape in shapes.items():
        bgr = read_png(out / "overlays" / f"{stem}.png")
        assert bgr.dtype == np.uint8 and bgr.shape == (*shape, 3), stem
        mask = read_png(out / f"{stem}.png") > 0
        b, g, r = (bgr[..., i].astype(int) for i in range(3))
        assert (r[mask] > g[mask] + 40).all() and (r[mask] > b[mask] + 40).all(), stem  # red
        if stem != "rgb":  # a colour image is shown in its colours (the grey model saw grey)
            assert (r[~mask] == g[~mask]).all() and (g[~mask] == b[~mask]).all(), stem  # grey


def test_min_area_removes_only_the_small_components(models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    image = disc_image(160, 220, (80, 120), 30, bright=True)
    for centre in ((20, 20), (25, 190), (140, 30), (135, 200)):
        image[disc_of(160, 220, centre, 5)] = 200  # specks of ~80 px
    cv2.imwrite(str(folder / "specks.png"), image)
    args = ["predict", str(models["otsu"]), str(folder)]

    assert run_cli([*args, str(tmp_path / "all")], capsys)[0] == 0
    assert run_cli([*args, str(tmp_path / "big"), "--min-area", "400"], capsys)[0] == 0

    everything = read_png(tmp_path / "all" / "specks.png") > 0
    kept = read_png(tmp_path / "big" / "specks.png") > 0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        everything.astype(np.uint8), connectivity=8
    )
    areas = stats[1:, cv2.CC_STAT_AREA]
    assert n - 1 == 5 and (areas < 400).sum() == 4  # the specks were found without --min-area
    big = labels == 1 + int(np.argmax(areas))
    assert np.array_equal(kept, big)  # the disc exactly as before, the specks gone


def test_two_images_with_one_stem_are_refused(models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), disc_image(50, 60, (25, 30), 10, bright=True))
    tifffile.imwrite(folder / "a.tif", disc_image(50, 60, (25, 30), 10, bright=True))

    code, _, err = run_cli(
        ["predict", str(models["otsu"]), str(folder), str(tmp_path / "o")], capsys
    )

    assert code == 2
    assert str(folder / "a.png") in err and str(folder / "a.tif") in err and "a.png;" in err
    assert not (tmp_path / "o").exists()


def test_output_folder_may_not_be_the_input_folder(models, tmp_path, capsys):
    write_formats(tmp_path / "in")
    before = (tmp_path / "in" / "gray8.png").read_bytes()

    code, _, err = run_cli(
        ["predict", str(models["otsu"]), str(tmp_path / "in"), str(tmp_path / "in")], capsys
    )

    assert code == 2 and "the output folder is the input folder" in err
    assert (tmp_path / "in" / "gray8.png").read_bytes() == before


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--threshold", "1.5", "--threshold must be between 0 and 1"),
        ("--min-area", "-1", "--min-area must be 0 or more"),
        ("--overlap", "1", "--overlap must be in [0, 1)"),
        ("--batch-size", "0", "--batch-size must be 1 or more"),
    ],
)
def test_bad_options_are_clear_errors(models, tmp_path, capsys, flag, value, message):
    write_formats(tmp_path / "in")

    argv = ["predict", str(models["otsu"]), str(tmp_path / "in"), str(tmp_path / "o"), flag, value]
    code, _, err = run_cli(argv, capsys)

    assert code == 2 and message in err
    assert not (tmp_path / "o").exists()


def test_oracle_model_is_refused_before_writing(tiny_data, tmp_path, capsys):
    """A SAM prompted from reference masks has nothing to go on in unlabelled images."""
    _, tiles, params = tiny_data
    train("sam_box", params, tiles, tmp_path / "sam_box")  # zero-shot: nothing is optimised
    write_formats(tmp_path / "in")

    argv = ["predict", str(tmp_path / "sam_box"), str(tmp_path / "in"), str(tmp_path / "o")]
    code, _, err = run_cli(argv, capsys)

    assert code == 2 and "oracle prompts" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_tta_output_is_invariant_to_a_flip_of_the_input(models):
    """The views form a group: predicting a flipped image averages the same predictions as the
    image itself, mapped back, so the result is the flipped result (up to float rounding).
    Without TTA the sliding window sees other pixels together, and it is not."""
    from segbench.predict import load_predictor

    image = disc_image(203, 317, (90, 140), 40, bright=True)
    plain = load_predictor(models["unet"])
    flips = load_predictor(models["unet"], tta="flips")
    d4 = load_predictor(models["unet"], tta="d4")
    for flip in (np.fliplr, np.flipud):
        np.testing.assert_allclose(
            flips.predict_proba(flip(image).copy()), flip(flips.predict_proba(image)), atol=1e-5
        )
    np.testing.assert_allclose(
        d4.predict_proba(np.rot90(image).copy()), np.rot90(d4.predict_proba(image)), atol=1e-5
    )
    mirrored = plain.predict_proba(np.fliplr(image).copy())
    assert np.abs(mirrored - np.fliplr(plain.predict_proba(image))).max() > 1e-4
    # The average is of probabilities: still in [0, 1], and not the plain prediction.
    averaged = flips.predict_proba(image)
    assert averaged.min() >= 0 and averaged.max() <= 1
    assert np.abs(averaged - plain.predict_proba(image)).max() > 1e-4


def test_predict_with_tta_writes_the_same_kind_of_masks(models, tmp_path, capsys):
    shapes = write_formats(tmp_path / "in")
    code, stdout, _ = run_cli(
        [
            "predict",
            str(models["unet"]),
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--tta",
            "d4",
        ],
        capsys,
    )
    assert code == 0 and "wrote 4 masks" in stdout
    for stem, shape in shapes.items():
        mask = read_png(tmp_path / "out" / f"{stem}.png")
        assert mask.shape == shape and set(np.unique(mask)) <= BINARY


def _particles(folder: Path) -> None:
    """One 160x240 image: a lone disc and two touching discs (a figure eight), bright."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    inside = disc_of(160, 240, (50, 50), 20) | disc_of(160, 240, (100, 150), 25)
    inside |= disc_of(160, 240, (100, 195), 25)
    image = np.where(inside, 200, 40) + rng.normal(0, 4, inside.shape)
    cv2.imwrite(str(folder / "particles.png"), np.clip(image, 0, 255).astype(np.uint8))


def test_objects_are_labelled_measured_and_split_where_they_touch(models, tmp_path, capsys):
    from segbench.objects import read_instances

    _particles(tmp_path / "in")
    counts = {}
    for split in ("none", "watershed"):
        out = tmp_path / split
        code, stdout, _ = run_cli(
            [
                "predict",
                str(models["otsu"]),
                str(tmp_path / "in"),
                str(out),
                "--objects",
                "--split",
                split,
                "--min-distance",
                "15",
            ],
            capsys,
        )
        assert code == 0 and "objects, labels and tables in" in stdout
        labels = read_instances(out / "objects" / "particles.tif")
        mask = read_png(out / "particles.png")
        assert labels.shape == mask.shape and np.array_equal(labels > 0, mask > 0)
        with (out / "objects" / "particles.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [int(r["id"]) for r in rows] == sorted(set(np.unique(labels)) - {0})
        for r in rows:
            area = int(np.sum(labels == int(r["id"])))
            assert int(r["area"]) == area
            assert float(r["diameter"]) == pytest.approx(np.sqrt(4 * area / np.pi), rel=1e-6)
        with (out / "objects" / "summary.csv").open() as f:
            [summary] = list(csv.DictReader(f))
        counts[split] = int(summary["count"])
        assert counts[split] == len(rows)
    # The figure eight is one component, and two objects once the watershed splits it.
    assert counts == {"none": 2, "watershed": 3}


def test_objects_of_a_model_of_several_classes_are_refused_before_anything_is_written(
    models, tmp_path, capsys
):
    model = tmp_path / "otsu3"
    shutil.copytree(models["otsu"], model)
    card = read_json(model / "card.json")
    card["classes"] = ["background", "grain", "pore"]
    (model / "card.json").write_text(json.dumps(card))
    _particles(tmp_path / "in")
    code, _, err = run_cli(
        ["predict", str(model), str(tmp_path / "in"), str(tmp_path / "out"), "--objects"], capsys
    )
    assert code == 2 and "--objects counts the objects of a two-class model" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
