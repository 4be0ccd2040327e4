"""Bootstrap intervals, the Wilcoxon signed-rank test, Holm's correction, effect sizes and the
minimum attainable p on known values. The simulated studies are in test_stats_sim.py."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

import segbench.stats as st
from segbench.stats import (
    bootstrap_ci,
    compare_to_best,
    compare_to_reference,
    hodges_lehmann,
    holm,
    min_attainable_p,
    paired_difference,
    power_banner,
    wilcoxon_paired,
)


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
    # Identical on every image: no usable pair, so no test (and no seat in Holm's family).
    assert out["same"]["verdict"] == "too few pairs" and out["same"]["p"] == 1.0
    assert out["same"]["n_pairs"] == 12 and out["same"]["n_usable"] == 0
    assert out["noisy"]["verdict"] == "not significantly different"
    assert out["worse"]["verdict"] == "significantly worse" and out["worse"]["significant"]
    # Exact p for 12 one-sided pairs is 2 / 4096; Holm over the 2 tested rows at most doubles it.
    assert out["worse"]["family_size"] == 2
    assert out["worse"]["p_holm"] == pytest.approx(2 * 2 / 4096)
    assert out["noisy"]["p_holm"] >= out["noisy"]["p"]


def test_three_images_can_never_be_significant():
    # The smallest two-sided p with 3 pairs is 2 / 8 = 0.25: why the report warns on small sets.
    out = compare_to_best({"a": [0.9, 0.9, 0.9], "b": [0.1, 0.2, 0.3]}, "a")
    assert out["b"]["p"] == pytest.approx(0.25)
    assert out["b"]["verdict"] == "not significantly different"


def test_bca_interval_brackets_the_mean_and_differs_from_percentile():
    # Left-skewed like per-image Dice: most images good, two failures.
    x = np.random.default_rng(5).beta(8, 1.5, size=25)
    x[:2] = [0.1, 0.2]
    bca = bootstrap_ci(x, seed=1)
    pct = bootstrap_ci(x, seed=1, method="percentile")
    assert bca[0] < x.mean() < bca[1] and pct[0] < x.mean() < pct[1]
    # BCa corrects towards the long (low) tail that the percentile interval under-covers.
    assert bca[0] < pct[0] and bca[1] < pct[1]
    with pytest.raises(ValueError, match="BCa"):
        bootstrap_ci(x, method="studentized")


def test_bca_small_samples_give_finite_intervals_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping to the caller fails the test
        for x in ([0.4, 0.9], [0.5, 0.5, 0.7], [0.0, 1.0, 1.0]):
            lo, hi = bootstrap_ci(x)
            assert math.isfinite(lo) and math.isfinite(hi) and lo <= np.mean(x) <= hi
        assert bootstrap_ci([0.8, 0.8, 0.8, 0.8]) == (0.8, 0.8)


def test_degenerate_bca_falls_back_to_percentile_silently(monkeypatch):
    # For the mean, scipy's BCa degenerates only where the jackknife means are all equal
    # (caught before it) or the bias correction is infinite; stand in for scipy here.
    calls = []

    def fake(x, method, *args):
        calls.append(method)
        if method == "BCa":
            warnings.warn("BCa cannot be calculated", sps.DegenerateDataWarning, stacklevel=1)
            return math.nan, math.nan
        return 0.1, 0.2

    monkeypatch.setattr(st, "_bootstrap", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_ci([0.3, 0.5, 0.9]) == (0.1, 0.2)
    assert calls == ["BCa", "percentile"]


def test_hodges_lehmann_by_hand():
    # Walsh averages of [1, 2, 9]: 1, 1.5, 5, 2, 5.5, 9 -> sorted 1, 1.5, 2, 5, 5.5, 9: median 3.5.
    assert hodges_lehmann([1.0, 2.0, 9.0]) == pytest.approx(3.5)
    assert hodges_lehmann([1.0, math.nan, 2.0, 9.0]) == pytest.approx(3.5)  # NaN dropped
    assert hodges_lehmann([4.0]) == 4.0
    assert math.isnan(hodges_lehmann([])) and math.isnan(hodges_lehmann([math.nan]))


def test_hodges_lehmann_sampled_for_large_n_stays_close(monkeypatch):
    d = np.random.default_rng(2).normal(0.03, 0.1, size=300)
    exact = hodges_lehmann(d)
    monkeypatch.setattr(st, "_WALSH_EXACT_MAX", 100)
    monkeypatch.setattr(st, "_WALSH_SAMPLE", 200_000)
    assert hodges_lehmann(d) == pytest.approx(exact, abs=0.003)


def test_min_attainable_p():
    assert min_attainable_p(0) == 1.0 and min_attainable_p(1) == 1.0
    assert min_attainable_p(3) == 0.25 and min_attainable_p(10) == 2 / 1024
    # Beyond 50 pairs scipy uses the normal approximation: the same p as the test gives.
    for n in (50, 51, 80):
        p = wilcoxon_paired(np.arange(1.0, n + 1), np.zeros(n))["p"]
        assert min_attainable_p(n) == pytest.approx(p, rel=1e-9)


def test_better_on_13_of_14_images_is_not_called_worse():
    # Better by 0.02 on 13 images, worse by 0.5 on one: the mean says worse, the ranks better.
    ref = np.linspace(0.6, 0.85, 14)
    model = ref + np.array([0.02] * 13 + [-0.5])
    r = paired_difference(model, ref, n_resamples=999)
    assert r["mean_diff"] < 0 and r["hl_diff"] == pytest.approx(0.02)
    assert r["direction"] == "better" and r["n_usable"] == 14
    out = compare_to_reference({"ref": ref, "model": model}, "ref", n_resamples=999)
    assert out["model"]["verdict"] != "significantly worse"
    assert out["model"]["verdict"] == "significantly better"  # p ~ 0.008 with one comparison


def test_paired_difference_counts_usable_pairs_and_brackets_the_mean():
    a = [0.9, 0.8, math.nan, 0.7, 1.0, 0.6, 0.75, 0.85]
    b = [0.8, 0.8, 0.5, 0.6, 1.0, 0.55, math.nan, 0.7]
    r = paired_difference(a, b, n_resamples=999)
    # 8 images; 2 with a NaN (dropped); of the 6 pairs, 2 tie (0.8 = 0.8, 1.0 = 1.0).
    assert r["n_pairs"] == 6 and r["n_usable"] == 4 and r["direction"] == "better"
    assert r["diff_ci_low"] <= r["mean_diff"] <= r["diff_ci_high"]
    assert r["min_p"] == min_attainable_p(4) == 2 / 16
    assert set(r) >= {"median_diff", "hl_diff", "p"}
    # Zeros are left out before the test, so it stays exact: 15 positive of 20 pairs.
    d = np.r_[np.zeros(5), np.linspace(0.01, 0.15, 15)]
    assert paired_difference(0.5 + d, np.full(20, 0.5))["p"] == pytest.approx(2 / 2**15)
    one = paired_difference([0.9, 0.5], [0.8, math.nan])
    assert one["n_pairs"] == 1 and math.isnan(one["diff_ci_low"]) and one["min_p"] == 1.0
    none = paired_difference([math.nan], [0.3])
    assert none["n_pairs"] == 0 and math.isnan(none["p"]) and none["direction"] == "none"


def test_too_few_pairs_is_a_verdict_and_leaves_holm_family():
    ref = np.linspace(0.5, 0.9, 10)
    scores = {
        "ref": ref,
        "worse": ref - np.linspace(0.1, 0.2, 10),
        "one": np.r_[ref[:9], ref[9] - 0.1],  # differs on one image only
        "nan": np.r_[ref[:1] + 0.2, np.full(9, math.nan)],  # one defined pair
    }
    out = compare_to_reference(scores, "ref", n_resamples=999)
    assert out["one"]["verdict"] == out["nan"]["verdict"] == "too few pairs"
    assert out["one"]["n_usable"] == 1 and not out["one"]["significant"]
    assert math.isnan(out["one"]["p_holm"]) and not out["one"]["can_reach"]
    # A family of one: Holm leaves the p as it is.
    assert out["worse"]["family_size"] == 1 and out["worse"]["p_holm"] == out["worse"]["p"]
    assert out["worse"]["verdict"] == "significantly worse" and out["worse"]["p"] == 2 / 1024
    with pytest.raises(ValueError, match="reference model 'best'"):
        compare_to_reference(scores, "best")


def _family(n_images: int, n_models: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.5, 0.8, size=n_images)
    return {"ref": ref} | {f"m{k}": ref + rng.uniform(0.05, 0.1, n_images) for k in range(n_models)}


def test_power_banner_when_no_comparison_can_reach_significance():
    # 8 usable pairs: min p 2 / 256 = 0.0078; with Holm over 10 rows 0.078 > 0.05, even for
    # models better on every image.
    out = compare_to_reference(_family(8, 10), "ref", n_resamples=999)
    assert all(r["family_size"] == 10 and not r["can_reach"] for r in out.values())
    assert not any(r["significant"] for r in out.values())
    text = power_banner(out, 0.05)
    assert text is not None and "8 usable pairs" in text and "10 comparisons" in text
    assert "0.0781" in text  # 10 x 2 / 2**8
    out30 = compare_to_reference(_family(30, 10), "ref", n_resamples=999)
    assert all(r["can_reach"] and r["significant"] for r in out30.values())
    assert power_banner(out30, 0.05) is None
    only_one = compare_to_reference({"ref": [0.5, 0.6], "m": [0.5, 0.7]}, "ref")
    assert "No comparison can be tested" in power_banner(only_one, 0.05)
    assert power_banner({}, 0.05) is None
