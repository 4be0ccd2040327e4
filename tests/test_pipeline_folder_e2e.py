"""End to end on user data: `dvc exp run` with a folder of 16-bit TIFFs instead of the embedded set,
and only two models (no SAM, no ensemble, the sweep off).

Its own module so that pytest-xdist (`make test`) runs it beside the Prefect end-to-end test.
"""

import pytest
import yaml

from segbench.io import read_json
from tests.test_pipeline_e2e import dvc

pytestmark = pytest.mark.slow


def test_whole_pipeline_on_a_folder_of_16_bit_tiffs(repo_copy, tmp_path):
    from segbench.io import read_csv
    from tests.datasets import write_tiff_dataset

    data = write_tiff_dataset(tmp_path / "tiffs", 12, height=192, width=256)
    # The data path is what this test is about: two models (one trained) are enough.
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["models"] = {k: params["models"][k] for k in ("otsu", "unet")}
    params["ensembles"] = {}
    # The sweep is off, and its entry (sam_lora) is not among the models: nothing needs it.
    params["sweep"]["enabled"] = False
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    exp = dvc(
        repo_copy,
        "exp",
        "run",
        "-S",
        "data.source=folder",
        "-S",
        f"data.path={data}",
        "-S",
        "prepare.normalize.mode=percentile",
        "-S",
        "train.epochs=1",
    )
    assert "Running stage 'fetch'" in exp.stdout and "Running stage 'report'" in exp.stdout
    summary = read_json(repo_copy / "data" / "raw" / "summary.json")
    assert summary["n_images"] == 12 and summary["bit_depths"] == {"16": 12}
    tiles = read_csv(repo_copy / "data" / "tiles" / "manifest.csv")
    assert float(tiles[0]["hi"]) < 4200  # the 12-bit signal's own range
    metrics = read_json(repo_copy / "eval" / "unet" / "metrics.json")
    assert metrics["n_images"] == summary["splits"]["test"] and 0 <= metrics["dice"] <= 1
    html = (repo_copy / "reports" / "report.html").read_text()
    assert "unet" in html and "otsu" in html
