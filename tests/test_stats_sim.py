"""Regression suite for the statistics (issue 19, item 10): seeded simulated studies with a known
truth, judged by :func:`segbench.stats.compare_to_reference` exactly as the report judges models.

A simulated study has ``n_images`` test images with a shared difficulty (a per-image base Dice
drawn from Beta(8, 2): mean 0.8, a long tail of hard images) and each model's per-image Dice is
that base, plus its true effect, plus its own noise N(0, 0.08), clipped to [0, 1]. A model-noise
sd of 0.08 makes two equally good models disagree by about 0.11 Dice on a typical image, as
different architectures do on the same test images. The helpers here are shared with
``benchmarks/stats_power.py``, which runs more studies and records the figures in BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

from segbench.stats import compare_to_reference

NOISE_SD = 0.08  # per-image noise of each model around the shared difficulty
BASE = (8.0, 2.0)  # Beta parameters of the shared per-image difficulty
ALPHA = 0.05
RESAMPLES = 999  # enough for a 95% interval's ends in a test; the report uses 10 000


def simulate_study(
    rng: np.random.Generator, n_images: int, *, effect: float = 0.0, n_models: int = 1
) -> dict[str, np.ndarray]:
    """Per-image Dice, ``{"reference": (n_images,), "m0": ..., "m<k>": ...}`` in [0, 1]: every
    ``m<k>`` is ``effect`` better than the reference before clipping."""
    base = rng.beta(*BASE, size=n_images)

    def model(shift: float) -> np.ndarray:
        return np.clip(base + shift + rng.normal(0.0, NOISE_SD, size=n_images), 0.0, 1.0)

    return {"reference": model(0.0)} | {f"m{k}": model(effect) for k in range(n_models)}


def true_mean_difference(effect: float, *, draws: int = 1_000_000, seed: int = 12345) -> float:
    """The population mean of (model - reference) per-image Dice for ``effect``: clipping at 1
    makes it a little less than ``effect`` (Monte Carlo over ``draws`` images, seeded)."""
    s = simulate_study(np.random.default_rng(seed), draws, effect=effect)
    return float((s["m0"] - s["reference"]).mean())


def run_studies(
    n_studies: int,
    n_images: int,
    *,
    effect: float = 0.0,
    n_models: int = 1,
    seed: int = 0,
    n_resamples: int = RESAMPLES,
) -> dict[str, float]:
    """``n_studies`` seeded studies, each compared with :func:`compare_to_reference` at ``ALPHA``
    (Holm over ``n_models``). Returns shares of all comparisons: ``significant``, ``better``
    and ``worse`` (significant in that direction), ``any_significant`` (studies with at least
    one significant row: the family-wise rate), ``covered`` (the mean-difference interval
    holds the true mean difference, :func:`true_mean_difference`) and ``n`` (comparisons)."""
    truth = true_mean_difference(effect) if effect else 0.0  # no effect: exactly 0 by symmetry
    rows, any_significant = [], 0
    for i in range(n_studies):
        scores = simulate_study(
            np.random.default_rng([seed, i]), n_images, effect=effect, n_models=n_models
        )
        out = compare_to_reference(
            scores, "reference", alpha=ALPHA, n_resamples=n_resamples, seed=i
        ).values()
        rows += out
        any_significant += any(r["significant"] for r in out)
    return {
        "n": len(rows),
        "significant": np.mean([r["significant"] for r in rows]),
        "better": np.mean([r["verdict"] == "significantly better" for r in rows]),
        "worse": np.mean([r["verdict"] == "significantly worse" for r in rows]),
        "any_significant": any_significant / n_studies,
        "covered": np.mean([r["diff_ci_low"] <= truth <= r["diff_ci_high"] for r in rows]),
    }


def test_null_false_positive_rate_and_interval_coverage():
    # No true difference, 200 comparisons of 30 images, one comparison per study (Holm's m = 1).
    # If the test holds its level, the count of "significant" is Binomial(200, <= 0.05): mean
    # <= 10, sd 3.1; 2..20 (0.01..0.10) holds it with over 99% probability, while a test at
    # twice its level (mean 20) or one that never fires fails. Likewise the 95% interval's
    # coverage count is Binomial(200, 0.95): mean 190, sd 3.1; 0.90..0.99 is 180..198.
    r = run_studies(200, 30, seed=1)
    assert r["n"] == 200
    assert 0.01 <= r["significant"] <= 0.10
    assert 0.90 <= r["covered"] <= 0.99


def test_holm_keeps_the_family_wise_rate_with_five_null_models():
    # Five null models against one reference: uncorrected, one study in six (0.17 over 1000
    # such studies) would claim a difference somewhere; Holm keeps it at most alpha.
    # Binomial(200, 0.05) stays at or under 20 studies (0.10) with over 99% probability, and
    # Binomial(200, 0.17) (no correction) reaches down to it with about 0.5%.
    r = run_studies(200, 30, n_models=5, seed=2)
    assert r["n"] == 1000
    assert r["any_significant"] <= 0.10


def test_power_for_a_true_difference_of_005_dice_on_30_images():
    # A true effect of +0.05 Dice: the share found significant (the power; 0.60 over 2000 such
    # studies in BENCHMARKS.md) is far above alpha, and never in the wrong direction. Power
    # is Binomial(200, 0.6) here: sd 0.035, so 0.4 is over 5 sd below it.
    r = run_studies(200, 30, effect=0.05, seed=3)
    assert r["significant"] > 0.4
    assert r["worse"] == 0.0 and r["better"] == r["significant"]
    assert 0.90 <= r["covered"] <= 0.99  # the interval holds the true (clipped) mean difference
