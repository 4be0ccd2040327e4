"""Splits: seeded 7:2:1 within one image, stratified, grouped, stable, order independent."""

import numpy as np
import pytest

from segbench.data.split import SPLITS, assign_splits, group_key

FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}


def dataset(n, seed=0, empty=0.2, prefix="img"):
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    fg = [0.0 if rng.random() < empty else float(rng.uniform(0.01, 0.6)) for _ in ids]
    return ids, fg


def counts(assignment):
    return {s: sum(v == s for v in assignment.values()) for s in SPLITS}


@pytest.mark.parametrize("n", [10, 11, 13, 17, 30, 47, 101, 243])
def test_fractions_within_one_image_of_target(n):
    ids, fg = dataset(n, seed=n)
    got = counts(assign_splits(ids, **FRACTIONS, seed=0, foreground=fg))
    for split, fraction in FRACTIONS.items():
        assert abs(got[split] - fraction * n) < 1, (n, got)


def test_deterministic_seeded_and_order_independent():
    ids, fg = dataset(60)
    a = assign_splits(ids, **FRACTIONS, seed=3, foreground=fg)
    perm = np.random.default_rng(1).permutation(len(ids))
    b = assign_splits([ids[i] for i in perm], **FRACTIONS, seed=3, foreground=[fg[i] for i in perm])
    assert a == b
    assert a != assign_splits(ids, **FRACTIONS, seed=4, foreground=fg)


def test_stratified_by_empty_and_foreground_fraction():
    ids, fg = dataset(200, empty=0.3)
    a = assign_splits(ids, **FRACTIONS, seed=0, foreground=fg)
    fg_of = dict(zip(ids, fg, strict=True))
    empty_share = {s: np.mean([fg_of[i] == 0 for i in ids if a[i] == s]) for s in SPLITS}
    overall = np.mean(np.array(fg) == 0)
    for split in SPLITS:  # the empty share per split follows the whole set, to one image
        n_split = sum(a[i] == split for i in ids)
        assert abs(empty_share[split] - overall) * n_split <= 1.5, empty_share
    medians = {s: np.median([fg_of[i] for i in ids if a[i] == s and fg_of[i] > 0]) for s in SPLITS}
    assert max(medians.values()) - min(medians.values()) < 0.1, medians


def test_stable_when_images_are_added_or_removed():
    ids, fg = dataset(300)
    before = assign_splits(ids, **FRACTIONS, seed=0, foreground=fg)
    more_ids, more_fg = dataset(30, seed=9, prefix="new")
    after = assign_splits(ids + more_ids, **FRACTIONS, seed=0, foreground=fg + more_fg)
    moved = sum(before[i] != after[i] for i in ids)
    assert moved <= 0.05 * len(ids), moved  # a reshuffle would move about half
    fewer = assign_splits(ids[30:], **FRACTIONS, seed=0, foreground=fg[30:])
    moved = sum(before[i] != fewer[i] for i in ids[30:])
    assert moved <= 0.05 * len(ids), moved


def test_groups_never_cross_and_totals_stay_close():
    rng = np.random.default_rng(0)
    ids, groups, fg = [], [], []
    for patient in range(40):
        for view in range(int(rng.integers(1, 5))):
            ids.append(f"P{patient:02d}_v{view}")
            groups.append(f"P{patient:02d}")
            fg.append(float(rng.uniform(0, 0.5)))
    a = assign_splits(ids, **FRACTIONS, seed=0, foreground=fg, groups=groups)
    splits_of = {}
    for i, g in zip(ids, groups, strict=True):
        splits_of.setdefault(g, set()).add(a[i])
    assert all(len(s) == 1 for s in splits_of.values())
    got = counts(a)
    for split, fraction in FRACTIONS.items():  # groups of up to 4 images: within one group
        assert abs(got[split] - fraction * len(ids)) <= 4, got


def test_every_split_gets_an_image_and_too_few_is_an_error():
    a = assign_splits(["a", "b", "c", "d"], **FRACTIONS, seed=0)
    assert set(a.values()) == set(SPLITS)
    with pytest.raises(ValueError, match="at least 3"):
        assign_splits(["a", "b"], **FRACTIONS, seed=0)


def test_group_key():
    assert group_key("P12_left_3", r"^(P\d+)_") == "P12"
    assert group_key("case-7", r"case-\d+") == "case-7"
    assert group_key("anything", None) == "anything"
    assert group_key("x", r"^(P\d+)") is None
