"""Decoding users' files: bit depths, channels, mask conventions, and the errors for bad ones."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from segbench.decode import DecodeError, interpret_mask, read_any, to_gray


def test_16_bit_png_and_tiff_keep_their_bit_depth(tmp_path):
    image = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(image).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", image)
    for name in ("a.png", "a.tif"):
        out = to_gray(read_any(tmp_path / name))
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, image)


def test_rgb_and_rgba_become_luminance_at_the_same_depth(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    gray = to_gray(read_any(tmp_path / "red.png"))
    assert gray.dtype == np.uint8 and (gray == round(0.299 * 200)).all()
    rgba = np.dstack([np.full((8, 8, 3), 90, np.uint8), np.zeros((8, 8), np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "grey.png")
    assert (to_gray(read_any(tmp_path / "grey.png")) == 90).all()  # alpha ignored
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 1] = 60000
    tifffile.imwrite(tmp_path / "green.tif", rgb16, photometric="rgb")
    out = to_gray(read_any(tmp_path / "green.tif"))
    assert out.dtype == np.uint16 and (out == round(0.587 * 60000)).all()


def test_jpeg_images_decode(tmp_path):
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "a.jpg")
    assert to_gray(read_any(tmp_path / "a.jpg")).shape == (16, 16)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (np.array([[0, 1], [1, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 3], [17, 0]], np.uint16), [[0, 1], [1, 0]]),  # instance labels
        (np.array([[False, True], [True, False]]), [[0, 1], [1, 0]]),
        (np.array([[0.0, 2.0], [1.0, 0.0]], np.float32), [[0, 1], [1, 0]]),  # integral floats
    ],
)
def test_mask_conventions(stored, expected):
    np.testing.assert_array_equal(interpret_mask(stored), expected)


def test_mask_value_and_threshold():
    labels = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
    np.testing.assert_array_equal(interpret_mask(labels, value=2), [[0, 0, 1], [1, 1, 0]])
    lossy = np.array([[0, 3, 250], [255, 128, 12]], np.uint8)
    np.testing.assert_array_equal(interpret_mask(lossy, threshold=128), [[0, 0, 1], [1, 1, 0]])


def test_palette_masks_give_their_indices(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_any(tmp_path / "m.png", as_mask=True), [[0, 1], [2, 0]])


def test_lossy_mask_is_rejected_with_the_fix():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    rim = np.zeros_like(mask, bool)
    rim[7:25, 7:25] = True
    rim[9:23, 9:23] = False
    mask[rim] = rng.choice([1, 3, 9, 248, 252], rim.sum())  # JPEG-like ringing at the edge
    with pytest.raises(DecodeError, match=r"data\.mask\.threshold"):
        interpret_mask(mask)
    labels = rng.integers(0, 256, (32, 32)).astype(np.uint8)  # a busy label image is fine
    assert interpret_mask(labels).mean() > 0.9


def test_colour_and_fractional_masks_are_rejected():
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(DecodeError, match="colour mask"):
        interpret_mask(colour)
    with pytest.raises(DecodeError, match="non-integer"):
        interpret_mask(np.array([[0.0, 0.5]], np.float32))


def test_bad_files_raise_decode_errors(tmp_path):
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 8, 8), np.uint8))
    for name in ("truncated.jpg", "junk.png", "junk.tif"):
        with pytest.raises(DecodeError, match="cannot decode image"):
            read_any(tmp_path / name)
    with pytest.raises(DecodeError, match="one 2-D image per file"):
        read_any(tmp_path / "stack.tif")
    with pytest.raises(DecodeError, match="float32"):
        to_gray(np.zeros((4, 4), np.float32))
