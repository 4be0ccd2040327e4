"""How sure the comparison is: bootstrap intervals and paired tests on per-image scores.

Per model, the 95% confidence interval of the mean per-image Dice comes from a seeded
percentile bootstrap over test images. Against the best model, each model's per-image Dice is
compared pair-wise (same images) with the Wilcoxon signed-rank test, and the p-values of all
those comparisons are Holm-corrected together, because a report that compares ten models
makes ten chances of a false "better".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

SMALL_TEST_SET = 10  # fewer test images than this: the report warns that little can be told apart


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap ``confidence`` interval of the mean of ``values`` (NaN dropped).

    ``(nan, nan)`` with fewer than two values; ``(v, v)`` when all values are equal. Seeded, so
    the same scores always give the same interval.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = sps.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of paired scores ``a`` vs ``b`` (same images, same
    order); pairs with a NaN on either side are dropped.

    Returns ``{"n_pairs", "mean_diff", "median_diff" (a - b), "p"}``; ``p`` is 1.0 when every
    difference is zero (nothing tells the two apart) and NaN with no pair at all.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.shape} vs {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    d = x[keep] - y[keep]
    out = {
        "n_pairs": int(d.size),
        "mean_diff": float(d.mean()) if d.size else math.nan,
        "median_diff": float(np.median(d)) if d.size else math.nan,
    }
    if not d.size:
        return out | {"p": math.nan}
    if np.all(d == 0):
        return out | {"p": 1.0}
    return out | {"p": float(sps.wilcoxon(d).pvalue)}


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


def compare_to_best(
    scores: dict[str, Sequence[float]], best: str, *, alpha: float = 0.05
) -> dict[str, dict[str, float | bool | str]]:
    """Each model's per-image scores against ``best``'s (all aligned on the same images).

    Returns ``{model: {"n_pairs", "mean_diff", "median_diff", "p", "p_holm", "significant",
    "verdict"}}``
    for every model but ``best``; ``verdict`` is "significantly worse", "significantly better"
    (possible when ``best`` was chosen by another rule, e.g. no oracle prompts) or "not
    significantly different" (at ``alpha``, after Holm's correction over all the models).
    """
    others = [m for m in scores if m != best]
    tests = {m: wilcoxon_paired(scores[m], scores[best]) for m in others}
    adjusted = holm([tests[m]["p"] for m in others])
    out = {}
    for m, p_holm in zip(others, adjusted, strict=True):
        significant = bool(p_holm < alpha)  # NaN compares False: no pair, no claim
        if not significant:
            verdict = "not significantly different"
        else:
            verdict = f"significantly {'worse' if tests[m]['mean_diff'] < 0 else 'better'}"
        out[m] = {**tests[m], "p_holm": p_holm, "significant": significant, "verdict": verdict}
    return out
