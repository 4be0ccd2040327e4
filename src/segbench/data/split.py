"""Seeded train/val/test assignment of image ids."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(
    ids: list[str], *, train: float, val: float, test: float, seed: int
) -> dict[str, str]:
    """Map each id to ``"train"``, ``"val"`` or ``"test"`` with the given fractions.

    Counts are rounded (largest remainder) and every split gets at least one image, so a small
    dataset still has something to validate and test on. The assignment depends only on the
    sorted ids and the seed, not on the order the ids arrive in.
    """
    n = len(ids)
    if n < len(SPLITS):
        raise ValueError(f"need at least {len(SPLITS)} images to split, got {n}")
    fractions = np.array([train, val, test], dtype=float)
    raw = fractions / fractions.sum() * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(len(SPLITS)):  # take from the largest split for any empty one
        if counts[i] == 0:
            counts[i] = 1
            counts[int(np.argmax(counts))] -= 1
    order = np.random.default_rng(seed).permutation(sorted(ids))
    bounds = np.cumsum(counts)[:-1]
    return {
        str(i): split
        for split, chunk in zip(SPLITS, np.split(order, bounds), strict=True)
        for i in chunk
    }
