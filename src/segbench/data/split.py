"""Seeded, stratified, grouped and stable train/val/test assignment.

The unit of assignment is a **group** (by default each image is its own group; with
``data.split.group`` a regex over the file name, e.g. a patient id, makes every image of one
patient one group), so no group ever crosses splits.

Groups are **stratified**: empty-mask groups form one stratum and the others are binned by their
median foreground fraction into ``strata`` equal-count bins, so every split sees the same mix of
empty, small-object and large-object images. With several classes, groups are first divided by
the rarest class they contain (``presence``), and each part is binned as above, so a rare class
reaches every split in proportion.

Inside a stratum every group gets a position from a hash of (seed, group key), which does not
depend on the other groups, and the split boundaries are cut along that order. Adding or
removing images therefore only moves groups that sit next to a boundary; all others keep their
split. Split sizes are apportioned with error diffusion across strata, so each split's total is
within one image of its target fraction (with singleton groups).

**Folds** (``data.split.folds``: k-fold cross-validation, as nnU-Net does): the train and val
images together are dealt into k folds by :func:`assign_folds`, stratified the same way and
grouped the same way; fold 0 is the validation split and the others train, so everything that
knows one split sees fold 0, and the fold-``f`` model of a network trains on the other folds
and is validated on fold ``f``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def group_key(name: str, pattern: str | None) -> str | None:
    """The group of a file ``name``: the regex's first group, else its whole match.

    Returns ``name`` itself when there is no pattern, and None when the pattern does not match.
    """
    if pattern is None:
        return name
    match = re.search(pattern, name)
    if match is None:
        return None
    return match.group(1) if match.groups() and match.group(1) is not None else match.group(0)


def _position(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, key) alone."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _apportion(exact: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to ``total``, each within one of ``exact`` (largest
    remainder)."""
    counts = np.floor(np.clip(exact, 0, None)).astype(int)
    while counts.sum() < total:
        counts[int(np.argmax(exact - counts))] += 1
    while counts.sum() > total:
        over = np.where(counts > 0, exact - counts, np.inf)
        counts[int(np.argmin(over))] -= 1
    return counts


def _strata(keys: list[str], empty: dict, fg: dict, n_bins: int) -> list[list[str]]:
    """Groups per stratum: empty groups first, then equal-count bins of foreground fraction."""
    empties = [k for k in keys if empty[k]]
    full = sorted((k for k in keys if not empty[k]), key=lambda k: (fg[k], k))
    n_bins = max(1, min(n_bins, len(full) // 5))  # a bin needs a few groups to be worth it
    bins = [list(chunk) for chunk in np.array_split(np.array(full, dtype=object), n_bins)]
    return [s for s in [empties, *bins] if len(s)]


def _grouped(ids, foreground, groups, presence, strata):
    """``(ids as text, group of each id, images per group, strata)``: the groups of ``ids``
    (each image its own without ``groups``) and the strata they are dealt from, in order
    (rarest class first with ``presence``; within it empty groups, then foreground bins)."""
    ids = [str(i) for i in ids]
    n = len(ids)
    fg_of = dict(zip(ids, foreground if foreground is not None else [0.5] * n, strict=True))
    group_of = dict(zip(ids, groups if groups is not None else ids, strict=True))
    members: dict[str, list[str]] = {}
    for i in sorted(ids):
        members.setdefault(group_of[i], []).append(i)
    keys = sorted(members)
    sizes = {k: len(members[k]) for k in keys}
    fg = {k: float(np.median([fg_of[i] for i in members[k]])) for k in keys}
    empty = {k: sum(fg_of[i] == 0 for i in members[k]) * 2 > sizes[k] for k in keys}
    parts = [keys]
    if presence is not None:
        parts = _by_rarest_class(keys, members, dict(zip(ids, presence, strict=True)))
    stratified = [s for part in parts for s in _strata(part, empty, fg, strata)]
    return ids, group_of, sizes, stratified


def assign_splits(
    ids: Sequence[str],
    *,
    train: float,
    val: float,
    test: float,
    seed: int,
    foreground: Sequence[float] | None = None,
    groups: Sequence[str] | None = None,
    strata: int = 3,
    presence: Sequence[Sequence[int]] | None = None,
) -> dict[str, str]:
    """Map every id to ``"train"``, ``"val"`` or ``"test"``.

    ``foreground`` is each image's mask foreground fraction (0 = empty mask); ``groups`` each
    image's group key (default: its id). The result depends only on the set of
    (id, group, foreground) records and the seed, never on their order. With at least three
    groups every split gets at least one. ``presence`` (several classes) is each image's
    foreground classes present; groups are stratified on the rarest of them first.
    """
    ids, group_of, sizes, stratified = _grouped(ids, foreground, groups, presence, strata)
    if len(sizes) < len(SPLITS):
        raise ValueError(
            f"need at least {len(SPLITS)} images (or groups) to split, got {len(sizes)}"
        )
    fractions = np.array([train, val, test], dtype=float)
    fractions /= fractions.sum()
    assigned: dict[str, int] = {}
    carry = np.zeros(len(SPLITS))
    for stratum in stratified:
        stratum = sorted(stratum, key=lambda k: (_position(seed, k), k))
        total = sum(sizes[k] for k in stratum)
        exact = fractions * total + carry
        cuts = np.cumsum(_apportion(exact, total))
        got = np.zeros(len(SPLITS))
        start = 0
        for k in stratum:
            middle = start + sizes[k] / 2  # a group goes where its middle image falls
            split = int(np.searchsorted(cuts, middle, side="right"))
            split = min(split, len(SPLITS) - 1)
            assigned[k] = split
            got[split] += sizes[k]
            start += sizes[k]
        carry = exact - got  # the next stratum makes up for this one's rounding

    _fill_empty_splits(assigned, sizes, seed)
    return {i: SPLITS[assigned[group_of[i]]] for i in ids}


def _by_rarest_class(
    keys: list[str], members: dict[str, list[str]], present: dict[str, Sequence[int]]
) -> list[list[str]]:
    """Groups divided by the rarest class (fewest images holding it) any of their images holds;
    groups with no foreground class form one part. Rarest parts first."""
    images_with: dict[int, int] = {}
    for classes in present.values():
        for c in set(classes):
            images_with[c] = images_with.get(c, 0) + 1
    rank = {c: (n, c) for c, n in images_with.items()}
    part_of: dict[str, tuple] = {}
    for k in keys:
        held = {c for i in members[k] for c in present[i]}
        part_of[k] = min((rank[c] for c in held), default=(float("inf"), -1))
    order = sorted(set(part_of.values()))
    return [[k for k in keys if part_of[k] == p] for p in order]


def _fill_empty_splits(assigned: dict[str, int], sizes: dict[str, int], seed: int) -> None:
    """Give an empty split the last-positioned smallest group of the largest split (tiny data)."""
    for split in range(len(SPLITS)):
        if split in assigned.values():
            continue
        totals = [sum(sizes[k] for k, s in assigned.items() if s == j) for j in range(len(SPLITS))]
        donor = int(np.argmax(totals))
        candidates = [k for k, s in assigned.items() if s == donor]
        chosen = max(candidates, key=lambda k: (-sizes[k], _position(seed, k), k))
        assigned[chosen] = split


def assign_folds(
    ids: Sequence[str],
    k: int,
    *,
    seed: int,
    foreground: Sequence[float] | None = None,
    groups: Sequence[str] | None = None,
    strata: int = 3,
    presence: Sequence[Sequence[int]] | None = None,
) -> dict[str, int]:
    """Map every id (the train and val images) to a fold in ``0 .. k-1``; a group never
    crosses folds. Stratified as :func:`assign_splits` is: within each stratum the groups are
    taken in their seeded position order and each goes to the fold with the fewest images so
    far (ties: the lowest fold), so every fold sees the same mix and the fold sizes differ by
    at most one group. Raises ``ValueError`` with fewer than ``k`` groups."""
    ids, group_of, sizes, stratified = _grouped(ids, foreground, groups, presence, strata)
    if len(sizes) < k:
        raise ValueError(
            f"{k} folds need at least {k} groups of train and val images, got {len(sizes)}"
        )
    totals = [0] * k
    fold_of: dict[str, int] = {}
    for stratum in stratified:
        for g in sorted(stratum, key=lambda g: (_position(seed, g), g)):
            fold = min(range(k), key=lambda f: (totals[f], f))
            fold_of[g] = fold
            totals[fold] += sizes[g]
    return {i: fold_of[group_of[i]] for i in ids}
