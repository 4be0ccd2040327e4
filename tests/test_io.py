"""Bad files get a clear error naming them; failed stages leave no half-written output."""

import numpy as np
import pytest

from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_image, read_mask, write_image, write_mask


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(SegbenchError, match=r"broken\.png: cannot decode image"):
        read_image(bad)
    with pytest.raises(SegbenchError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")


def test_masks_round_trip_as_0_255_and_read_back_as_0_1(tmp_path):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:5, 3:6] = 1
    write_mask(tmp_path / "m.png", mask)
    assert set(np.unique(read_image(tmp_path / "m.png"))) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    write_image(tmp_path / "i.png", mask * 7)
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), mask * 7)


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("stage crashed")
    assert (out / "a.txt").read_text() == "first"  # the good output survives
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial directory left
