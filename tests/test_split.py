"""Seeded 7:2:1 split."""

import pytest

from segbench.data.split import assign_splits


def test_fractions_and_determinism():
    ids = [f"img_{i:03d}" for i in range(30)]
    a = assign_splits(ids, train=0.7, val=0.2, test=0.1, seed=3)
    b = assign_splits(list(reversed(ids)), train=0.7, val=0.2, test=0.1, seed=3)
    assert a == b  # independent of input order
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 21, "val": 6, "test": 3}
    c = assign_splits(ids, train=0.7, val=0.2, test=0.1, seed=4)
    assert a != c


def test_every_split_gets_an_image():
    a = assign_splits(["a", "b", "c", "d"], train=0.7, val=0.2, test=0.1, seed=0)
    assert set(a.values()) == {"train", "val", "test"}
    with pytest.raises(ValueError):
        assign_splits(["a", "b"], train=0.7, val=0.2, test=0.1, seed=0)
