"""End to end on user data nobody here made: `dvc exp run` on a folder of 16-bit RGB TIFFs (a
12-bit signal) with palette PNG masks of three classes (a user's class list, by colour), a
zero-shot SAM entry the pipeline skips, then `segbench predict` on new images, grey and colour,
with the trained model. (Binary folders go through the same code: tests/test_fetch.py; the
embedded binary pipeline: tests/test_pipeline_e2e.py.)

Its own module so that pytest-xdist (`make test`) runs it beside the other end-to-end tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from segbench.cli import main as cli_main
from segbench.io import read_csv, read_json, read_mask
from tests.datasets import PARKING_COLORS, parking_classes, write_parking_palette_dataset
from tests.test_pipeline_e2e import dvc

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long (tests/conftest.py)


def test_16_bit_rgb_folder_with_palette_masks_through_dvc_and_predict(repo_copy, tmp_path, capsys):
    data = write_parking_palette_dataset(
        tmp_path / "lots", 12, height=192, width=256, tiff_16_bit=True
    )
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["models"] = {k: params["models"][k] for k in ("otsu", "unet", "sam_point")}
    params["ensembles"] = {}
    params["sweep"]["enabled"] = False
    params["data"].update(source="folder", path=str(data), classes=parking_classes())
    params["train"]["epochs"] = 1
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    exp = dvc(repo_copy, "exp", "run", "-S", "prepare.normalize.mode=percentile")

    assert "Running stage 'fetch'" in exp.stdout and "Running stage 'report'" in exp.stdout
    assert "models.sam_point is skipped on this data" in exp.stdout + exp.stderr
    raw = read_json(repo_copy / "data" / "raw" / "summary.json")
    assert raw["input_channels"] == "rgb" and raw["bit_depths"] == {"16": 12}
    tiles = read_csv(repo_copy / "data" / "tiles" / "manifest.csv")
    assert float(tiles[0]["hi"]) < 4200  # the 12-bit signal's own range
    assert [c["name"] for c in raw["classes"]] == list(PARKING_COLORS)
    card = read_json(repo_copy / "models" / "unet" / "card.json")
    assert card["in_channels"] == 3 and card["classes"] == list(PARKING_COLORS)
    metrics = read_json(repo_copy / "eval" / "unet" / "metrics.json")
    assert metrics["num_classes"] == 3 and len(metrics["class_iou"]) == 3
    assert 0 <= metrics["miou"] <= 1 and metrics["test_loss"] > 0
    confusion = read_csv(repo_copy / "eval" / "unet" / "confusion.csv")
    assert [r["reference"] for r in confusion] == list(PARKING_COLORS)
    pixels = sum(int(v) for r in confusion for k, v in r.items() if k != "reference")
    assert pixels == 192 * 256 * metrics["n_images"]
    assert read_json(repo_copy / "eval" / "sam_point" / "metrics.json") == {
        "skipped": read_json(repo_copy / "models" / "sam_point" / "skipped.json")["skipped"]
    }
    otsu = read_json(repo_copy / "eval" / "otsu" / "metrics.json")
    assert otsu["num_classes"] == 3 and "test_loss" not in otsu
    assert (repo_copy / "reports" / "report.html").is_file()

    # Predicting new images: an index PNG at each image's own size, colour overlays, and a
    # grey image converted (said once) for the colour model.
    new = tmp_path / "new"
    new.mkdir()
    lot = (tifffile.imread(data / "images" / "lot_000.tif") // 16).astype(np.uint8)
    Image.fromarray(lot[:100, :150]).save(new / "colour.png")
    Image.fromarray(lot[:120, :90].mean(axis=2).astype(np.uint8)).save(new / "grey.png")
    out = tmp_path / "pred"
    argv = ["predict", str(repo_copy / "models" / "unet"), str(new), str(out), "--overlays"]
    assert _cli(argv) == 0
    err = capsys.readouterr().err
    assert err.count("takes rgb images; gray images are replicated") == 1
    for stem, shape in (("colour", (100, 150)), ("grey", (120, 90))):
        mask = read_mask(out / f"{stem}.png", 3)
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 1, 2}
        overlay = np.asarray(Image.open(out / "overlays" / f"{stem}.png"))
        assert overlay.shape == (*shape, 3)

    # A model of three classes is not what a caller expecting two gets: refused, nothing written.
    argv = ["predict", str(repo_copy / "models" / "unet"), str(new), str(tmp_path / "x")]
    assert _cli([*argv, "--classes", "background,foreground"]) == 2
    assert "trained for 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    # Naming the skipped zero-shot entry directly is an error with the reason.
    code = _cli(
        [
            "train",
            "sam_point",
            "--tiles",
            str(repo_copy / "data" / "tiles"),
            "--out",
            str(tmp_path / "sp"),
            "--params",
            str(repo_copy / "params.yaml"),
        ]
    )
    assert code == 2 and "segments one class" in capsys.readouterr().err


def _cli(argv: list[str]) -> int:
    try:
        cli_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
