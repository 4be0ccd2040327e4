"""The HTML report as a reader sees it: a real report (Otsu and a 1-epoch U-Net, trained and
evaluated on the tiny data) opened in headless Chromium. Its full-page screenshot is kept in
``test-artifacts/report.png`` (``SEGBENCH_TEST_ARTIFACTS`` moves it) for a human to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.browser import artifacts_dir, check_report_in_browser, overflow, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODELS = ("otsu", "unet")


@pytest.fixture(scope="module")
def seen(request, tmp_path_factory) -> dict:
    """What the browser saw in the real report (conftest's ``real_report``: Otsu and a 1-epoch
    U-Net, really trained and evaluated); its screenshot is copied to the artifacts directory."""
    require_browser()  # before the training: no browser, nothing to build
    reports, _ = request.getfixturevalue("real_report")
    shot = tmp_path_factory.mktemp("browser") / "report.png"
    result = check_report_in_browser(reports / "report.html", shot)
    dest = artifacts_dir() / "report.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}")  # another session may be reading it
    shutil.copyfile(shot, part)
    part.replace(dest)
    return result | {"screenshot": str(dest)}


def test_report_loads_without_errors_or_requests(seen):
    assert seen["console_errors"] == []
    assert seen["page_errors"] == []
    assert seen["failed_requests"] == []
    assert seen["requests"] == [], "the report must be self-contained"
    assert seen["title"]


def test_comparison_table_lists_both_models(seen):
    assert sorted(seen["models"]) == sorted(MODELS)


def test_comparison_table_fits_the_window(seen):
    assert seen["viewport"]["width"] == 1280
    assert overflow(seen, "comparison") == []  # every row: tests/test_report_layout.py


def test_every_gallery_image_is_embedded_decoded_and_visible(seen):
    assert sorted(g["model"] for g in seen["galleries"]) == sorted(MODELS)
    for gallery in seen["galleries"]:
        assert gallery["n_images"] >= 1, gallery["model"]
        assert gallery["n_decoded"] == gallery["n_images"], gallery
        for img in gallery["images"]:
            assert img["embedded"] and img["visible"] and img["width"] > 0, (gallery["model"], img)
    # ... and so is every other image (the plots).
    undecoded = [i for i in seen["images"] if not (i["decoded"] and i["embedded"])]
    assert undecoded == []


def test_full_page_screenshot_is_kept(seen):
    shot = Path(seen["screenshot"])
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert width >= 800
    assert height >= 900  # full page: longer than the viewport with two galleries


def test_the_checker_sees_errors_and_broken_images(tmp_path):
    """Not blind: a throwing script, a console error, a missing image, a non-embedded image and a
    hidden one are all reported."""
    require_browser()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "local.png")
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><head><title>broken</title></head><body>"
        '<table id="comparison"><tbody><tr data-model="m1"><td>1</td></tr></tbody></table>'
        '<section class="gallery" data-model="m1">'
        '<figure><img alt="missing" src="missing.png"></figure>'
        '<figure><img alt="local" src="local.png"></figure>'
        "</section>"
        '<section class="gallery" data-model="m2"><figure style="display:none">'
        '<img alt="hidden" src="data:image/png;base64,'
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
        '"></figure></section>'
        "<script>console.error('logged'); throw new Error('thrown by the page');</script>"
        "</body></html>"
    )
    seen = check_report_in_browser(page, tmp_path / "broken.png")
    assert any("thrown by the page" in e for e in seen["page_errors"])
    assert "logged" in seen["console_errors"]
    assert any("missing.png" in f for f in seen["failed_requests"])
    assert {Path(u).name for u in seen["requests"]} == {"missing.png", "local.png"}
    assert seen["models"] == ["m1"]
    m1, m2 = seen["galleries"]
    assert (m1["model"], m1["n_images"], m1["n_decoded"]) == ("m1", 2, 1)
    missing, local = m1["images"]
    assert not missing["decoded"] and local["decoded"] and not local["embedded"]
    assert m2["n_decoded"] == 1 and not m2["images"][0]["visible"]
    assert m2["images"][0]["embedded"] and m2["images"][0]["mime"] == "image/png"
    assert (tmp_path / "broken.png").stat().st_size > 0
