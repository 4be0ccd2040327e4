"""How sure the comparison is: bootstrap intervals and paired tests on per-image scores.

Every function takes per-image scores (Dice, or mIoU with several classes) as 1-D sequences of
floats, NaN where a score is undefined; paired functions take two sequences over the same images
in the same order. The methods, and why each one:

* **Intervals: BCa bootstrap.** The 95% interval of a mean (one model's score, or a paired mean
  difference) is a seeded bias-corrected and accelerated (BCa) bootstrap over images. Per-image
  Dice is bounded and skewed (most images near 0.9, a few failures near 0), and test sets are
  small; there the percentile interval sits on the wrong side of the skew and covers the true
  mean less often than it claims. BCa corrects the interval for the bias and skewness of the
  bootstrap distribution (Efron 1987; DiCiccio and Efron 1996). On simulated studies where 15%
  of the images fail (``benchmarks/stats_power.py``, BENCHMARKS.md) BCa covered the true mean
  in 93% / 96% of 20- / 30-image studies, percentile in 91% / 92%; at 10 images both cover
  under 80%, which no bootstrap fixes. Where BCa is undefined (all jackknife values equal, or
  scipy gives NaN) the percentile interval is used instead.
* **Effect size: paired differences.** Against a reference model the report states the mean,
  the median and the Hodges-Lehmann estimate of the per-image difference. Hodges-Lehmann (the
  median of the Walsh averages (d_i + d_j) / 2, i <= j) is the location estimate that belongs to
  the signed-rank test: robust to a few failed images like the median, but less noisy.
* **Test: Wilcoxon signed-rank, two-sided,** on the non-zero differences (Wilcoxon's own
  treatment of zeros: an image where both models score the same says nothing about which is
  better). Those are the *usable pairs*. With up to 50 usable pairs and no tied magnitudes the
  p-value is exact, as scipy's ``method="auto"`` chooses (a permutation with ties up to 13
  pairs; the normal approximation beyond 50 pairs, or with ties beyond 13). Leaving the zeros
  out before calling scipy gives the same statistic and keeps the p exact where scipy, seeing a
  zero among more than 13 pairs, would switch to the normal approximation.
* **Direction: the test's own statistic.** "better" / "worse" is the sign of W+ - W- (the sum
  of the ranks of the positive differences minus that of the negative ones), never the sign of
  the mean difference: a model better on 13 of 14 images and much worse on one has a negative
  mean difference, yet the signed-rank test finds it better, and the verdict must say what the
  test found.
* **Multiplicity: Holm.** A report that compares ten models against one makes ten chances of a
  false "significantly different"; Holm's step-down correction keeps the chance of any false
  claim in the family at ``alpha`` and is never less powerful than Bonferroni. Comparisons with
  fewer than 2 usable pairs cannot be tested and are left out of the family.
* **Power: the minimum attainable p.** With n usable pairs the signed-rank test can never give
  a two-sided p below 2 / 2**n (all differences of one sign; beyond 50 pairs, the normal
  approximation's p for that case; with tied magnitudes, the p those magnitudes give all of
  one sign), and under Holm the smallest p of a family of m is multiplied by m. When m * that
  minimum is not below ``alpha`` no comparison can ever be called significant, whatever the
  models do: "not significantly different" then says nothing about the models, and
  :func:`power_banner` says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

SMALL_TEST_SET = 10  # fewer test images than this: the report warns that little can be told apart
MIN_USABLE_PAIRS = 2  # fewer non-zero paired differences: no test, the row says "too few pairs"
_WALSH_EXACT_MAX = 4000  # n(n+1)/2 Walsh averages held at once: 8M floats (64 MB) at this n
_WALSH_SAMPLE = 2_000_000  # Walsh averages drawn (seeded) beyond it: HL to ~1e-3 of the spread
_EXACT_MAX = 50  # scipy's wilcoxon(method="auto") is exact up to this many pairs (no ties)
_BOOTSTRAP_CELLS = 5_000_000  # resamples x images held at once by the bootstrap (40 MB)


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Bootstrap ``confidence`` interval ``(low, high)`` of the mean of ``values`` (NaN dropped).

    ``method`` is "BCa" (default; see the module docstring for why) or "percentile". BCa falls
    back to the percentile interval, silently, where it is undefined (all jackknife means equal,
    or a NaN end). ``(nan, nan)`` with fewer than two values; ``(v, v)`` when all values are
    equal. Seeded, so the same scores always give the same interval.
    """
    if method not in ("BCa", "percentile"):
        raise ValueError(f"bootstrap method must be 'BCa' or 'percentile', not {method!r}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    if method == "BCa":
        with warnings.catch_warnings():
            # Degenerate data: scipy warns and returns NaN; the percentile interval follows.
            warnings.simplefilter("ignore", sps.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = _bootstrap(x, "BCa", confidence, n_resamples, seed)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return _bootstrap(x, "percentile", confidence, n_resamples, seed)


def _bootstrap(
    x: np.ndarray, method: str, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    """scipy's bootstrap of the mean of the 1-D ``x`` (no NaN), in batches of bounded size."""
    res = sps.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        batch=max(1, min(n_resamples, _BOOTSTRAP_CELLS // x.size)),
        method=method,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def hodges_lehmann(d: Sequence[float]) -> float:
    """Hodges-Lehmann location of the 1-D ``d`` (NaN dropped): the median of the Walsh averages
    ``(d_i + d_j) / 2`` over i <= j; NaN when no value is left.

    Exact up to 4000 values; beyond that the median of 2 million Walsh averages drawn with a
    fixed seed (the whole set would take n(n+1)/2 floats of memory).
    """
    x = np.asarray(d, dtype=float)
    x = x[~np.isnan(x)]
    if not x.size:
        return math.nan
    if x.size <= _WALSH_EXACT_MAX:
        i, j = np.triu_indices(x.size)
    else:
        rng = np.random.default_rng(0)
        i, j = rng.integers(0, x.size, size=(2, _WALSH_SAMPLE))
    return float(np.median((x[i] + x[j]) / 2))


def min_attainable_p(n_usable: int) -> float:
    """The smallest two-sided p the signed-rank test can give with ``n_usable`` non-zero paired
    differences (no tied magnitudes): all of one sign. Exactly 2 / 2**n up to 50 pairs (capped
    at 1; 1.0 for none), where scipy uses the exact distribution; beyond, the normal
    approximation's p for the largest statistic, W+ = n(n+1)/2, as scipy computes it (no
    continuity correction)."""
    n = int(n_usable)
    if n <= 0:
        return 1.0
    if n <= _EXACT_MAX:
        return min(1.0, 2.0 / 2.0**n)
    z = math.sqrt(3.0 * n * (n + 1) / (2.0 * (2 * n + 1)))  # (W+ - n(n+1)/4) / its sd
    return float(2.0 * sps.norm.sf(z))


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` over the pairs where both are defined (1-D float array)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.shape} vs {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep] - y[keep]


def _signed_rank(d: np.ndarray) -> dict[str, float | int | str]:
    """The two-sided signed-rank test on the differences ``d`` (no NaN; zeros dropped):
    ``{"n_usable", "p", "direction", "min_p"}``. ``min_p`` is the p these magnitudes would give
    all of one sign (:func:`min_attainable_p` unless magnitudes tie, which changes scipy's
    method)."""
    nz = d[d != 0]
    n = int(nz.size)
    if not d.size:
        return {"n_usable": 0, "p": math.nan, "direction": "none", "min_p": 1.0}
    if not n:
        return {"n_usable": 0, "p": 1.0, "direction": "none", "min_p": 1.0}
    ranks = sps.rankdata(np.abs(nz))
    w = float(ranks[nz > 0].sum() - ranks[nz < 0].sum())  # W+ - W-
    direction = "better" if w > 0 else "worse" if w < 0 else "none"
    p = float(sps.wilcoxon(nz).pvalue)
    tied = np.unique(np.abs(nz)).size < n
    min_p = float(sps.wilcoxon(np.abs(nz)).pvalue) if tied and n > 1 else min_attainable_p(n)
    return {"n_usable": n, "p": p, "direction": direction, "min_p": min(min_p, 1.0)}


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | int | str]:
    """Paired comparison of per-image scores ``a`` against ``b`` (same images, same order;
    pairs with a NaN on either side dropped). Differences are ``a - b``.

    Returns ``{"n_pairs"`` (both defined), ``"n_usable"`` (of those, the non-zero differences
    the test uses), ``"mean_diff"``, ``"median_diff"``, ``"hl_diff"`` (Hodges-Lehmann, all
    pairs), ``"diff_ci_low"``, ``"diff_ci_high"`` (BCa bootstrap interval of the mean difference,
    resampling pairs; NaN with fewer than 2 pairs), ``"p"`` (two-sided signed-rank; 1.0 when
    every difference is 0, NaN with no pair), ``"direction"`` ("better" / "worse" / "none": the
    sign of W+ - W-, what the test measures) and ``"min_p"`` (the smallest p these pairs could
    give)``}``.
    """
    d = _paired(a, b)
    low, high = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return {
        "n_pairs": int(d.size),
        "mean_diff": float(d.mean()) if d.size else math.nan,
        "median_diff": float(np.median(d)) if d.size else math.nan,
        "hl_diff": hodges_lehmann(d),
        "diff_ci_low": low,
        "diff_ci_high": high,
        **_signed_rank(d),
    }


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of paired scores ``a`` vs ``b`` (same images, same
    order); pairs with a NaN on either side are dropped. :func:`paired_difference` without the
    interval and the effect sizes.

    Returns ``{"n_pairs", "mean_diff", "median_diff" (a - b), "p"}``; ``p`` is 1.0 when every
    difference is zero (nothing tells the two apart) and NaN with no pair at all.
    """
    d = _paired(a, b)
    return {
        "n_pairs": int(d.size),
        "mean_diff": float(d.mean()) if d.size else math.nan,
        "median_diff": float(np.median(d)) if d.size else math.nan,
        "p": _signed_rank(d)["p"],
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order (NaN stays NaN, not counted).

    The k-th smallest of m p-values is multiplied by (m - k + 1), and the adjusted values are
    made non-decreasing in that order and capped at 1. (scipy has Benjamini-Hochberg, which
    controls a different error rate, but not Holm; this is the whole method.)
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def compare_to_reference(
    scores: dict[str, Sequence[float]],
    reference: str,
    *,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, float | int | bool | str]]:
    """Each model's per-image scores against ``reference``'s (all aligned on the same images).

    Returns ``{model: row}`` for every model but ``reference``; a row is
    :func:`paired_difference` (model - reference) plus ``"p_holm"`` (Holm over the family: the
    rows with at least 2 usable pairs; NaN outside it), ``"significant"`` (``p_holm < alpha``),
    ``"verdict"`` ("significantly better", "significantly worse", "not significantly
    different" or "too few pairs"; the direction is the test's own), ``"family_size"`` (m) and
    ``"can_reach"`` (whether ``min_p * m < alpha``: the best Holm can do for this row).
    """
    if reference not in scores:
        raise ValueError(f"reference model {reference!r} has no scores (have {list(scores)})")
    rows = {
        m: paired_difference(scores[m], scores[reference], n_resamples=n_resamples, seed=seed)
        for m in scores
        if m != reference
    }
    family = [m for m, r in rows.items() if r["n_usable"] >= MIN_USABLE_PAIRS]
    adjusted = dict(zip(family, holm([rows[m]["p"] for m in family]), strict=True))
    size = len(family)
    for m, row in rows.items():
        p_holm = adjusted.get(m, math.nan)
        significant = bool(p_holm < alpha)  # NaN compares False: no test, no claim
        if m not in adjusted:
            verdict = "too few pairs"
        elif significant:  # W+ = W- gives p = 1: a significant row always has a direction
            verdict = f"significantly {row['direction']}"
        else:
            verdict = "not significantly different"
        row.update(
            p_holm=p_holm,
            significant=significant,
            verdict=verdict,
            family_size=size,
            can_reach=bool(m in adjusted and row["min_p"] * size < alpha),
        )
    return rows


compare_to_best = compare_to_reference  # the name callers used before issue 19


def power_banner(results: dict[str, dict], alpha: float = 0.05) -> str | None:
    """One sentence when no comparison of ``results`` (:func:`compare_to_reference`'s output)
    could reach significance at ``alpha`` whatever the scores, naming the usable pairs (the
    most of any row), the Holm family size and the smallest attainable adjusted p; None when at
    least one could (or there is no comparison)."""
    if not results or any(r["can_reach"] for r in results.values()):
        return None
    n = max(int(r["n_usable"]) for r in results.values())
    m = max(int(r["family_size"]) for r in results.values())
    if m == 0:
        return (
            f"No comparison can be tested: every model has fewer than {MIN_USABLE_PAIRS} "
            f"usable pairs (images where it and the reference score differently), at most {n}."
        )
    tested = [float(r["min_p"]) for r in results.values() if r["n_usable"] >= MIN_USABLE_PAIRS]
    best = min(1.0, m * min(tested))
    return (
        f"No comparison can reach significance at alpha={alpha:g}: with at most {n} usable pairs "
        f"(images where a model and the reference score differently) and {m} comparisons under "
        f"Holm's correction, the smallest attainable adjusted p is {best:.3g}, so \"not "
        f'significantly different" here says nothing about the models.'
    )
