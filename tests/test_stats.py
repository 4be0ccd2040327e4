"""Bootstrap intervals, the Wilcoxon signed-rank test and Holm's correction on known values."""

import math

import numpy as np
import pytest

from segbench.stats import bootstrap_ci, compare_to_best, holm, wilcoxon_paired


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    x = np.random.default_rng(3).uniform(0.6, 0.95, size=25)
    lo, hi = bootstrap_ci(x, seed=7)
    assert (lo, hi) == bootstrap_ci(x, seed=7)
    assert lo < x.mean() < hi
    assert bootstrap_ci(x, seed=8) != (lo, hi)  # a different seed is a different resample
    # Four times the images (the same spread): about half as wide.
    lo4, hi4 = bootstrap_ci(np.tile(x, 4), seed=7)
    assert 0.35 < (hi4 - lo4) / (hi - lo) < 0.65


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([0.9]))
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan, 0.8]))  # NaN dropped: one left
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7)


def test_wilcoxon_exact_p_by_hand():
    # Five pairs, all in favour of a: the exact two-sided p is 2 / 2**5.
    a, b = [0.9, 0.8, 0.85, 0.7, 0.95], [0.5, 0.6, 0.55, 0.65, 0.52]
    r = wilcoxon_paired(a, b)
    assert r["p"] == pytest.approx(2 / 32) and r["n_pairs"] == 5
    assert r["mean_diff"] > 0 and r["median_diff"] == pytest.approx(0.3)


def test_wilcoxon_drops_undefined_pairs_and_handles_ties():
    r = wilcoxon_paired([0.9, math.nan, 0.5], [0.9, 0.4, 0.5])
    assert r["n_pairs"] == 2 and r["p"] == 1.0  # identical where both are defined
    assert math.isnan(wilcoxon_paired([math.nan], [0.3])["p"])
    with pytest.raises(ValueError, match="differ in length"):
        wilcoxon_paired([0.1, 0.2], [0.1])


def test_holm_by_hand():
    # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept at 0.06.
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = holm([0.5, math.nan, 0.4])
    assert got[0] == pytest.approx(0.8) and math.isnan(got[1]) and got[2] == pytest.approx(0.8)
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_compare_to_best_says_not_significantly_different_when_it_is_not():
    rng = np.random.default_rng(0)
    best = rng.uniform(0.8, 0.9, size=12)
    scores = {
        "best": best,
        "same": best.copy(),
        "noisy": best + rng.normal(0, 0.01, size=12),
        "worse": best - 0.2 - rng.uniform(0, 0.05, size=12),
    }
    out = compare_to_best(scores, "best")
    assert set(out) == {"same", "noisy", "worse"}
    assert out["same"]["verdict"] == "not significantly different" and out["same"]["p"] == 1.0
    assert out["worse"]["verdict"] == "significantly worse" and out["worse"]["significant"]
    # Exact p for 12 one-sided pairs is 2 / 4096; Holm over 3 tests at most triples it.
    assert out["worse"]["p_holm"] <= 3 * 2 / 4096 + 1e-12
    assert out["noisy"]["p_holm"] >= out["noisy"]["p"]


def test_three_images_can_never_be_significant():
    # The smallest two-sided p with 3 pairs is 2 / 8 = 0.25: why the report warns on small sets.
    out = compare_to_best({"a": [0.9, 0.9, 0.9], "b": [0.1, 0.2, 0.3]}, "a")
    assert out["b"]["p"] == pytest.approx(0.25)
    assert out["b"]["verdict"] == "not significantly different"
