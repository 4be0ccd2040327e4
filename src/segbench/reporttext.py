"""The report's statements of method, in one place for its HTML and Markdown: how rows are
ranked, how the reference is chosen, what the intervals and tests are, and under what
conditions the cost columns were measured. Each sentence describes what the code does
(:mod:`segbench.comparison`, :mod:`segbench.stats`, :mod:`segbench.evaluate`)."""

from __future__ import annotations


def method_note(
    *, multiclass: bool, alpha: float, resamples: int, seed: int, repeats: int, folds: int = 1
) -> str:
    """The paragraph under the comparison table."""
    if multiclass:
        score = (
            "mIoU: per image, the mean IoU over the classes present in the reference or the "
            "prediction (a class absent from both is left out)"
        )
    else:
        score = (
            "Dice over all images: per image, Dice where the reference has foreground; where "
            "it is empty, 1 if nothing is predicted and 0 if anything is. It is the criterion "
            "rows are ranked and tested on, and the one thresholds, checkpoints and ensemble "
            "weights were chosen on (validation). The NaN-rule Dice beside it leaves images "
            "with an empty reference out (undefined there), so it cannot see false positives "
            "on them"
        )
    seeds = (
        f" Networks were trained {repeats} times "
        + (
            f"(k-fold cross-validation: one model per fold of {folds}, each validated on its "
            "own held-out fold, the reference chosen on the mean of those validation scores; "
            f"{repeats // folds} seed(s) per fold)"
            if folds > 1
            else "(seeds train.seed, +1, ...)"
        )
        + ": a row's score, "
        "its interval, validation score and test are on per-image scores averaged over its "
        'seeds, and "seed spread" is the standard deviation of the mean test score across '
        "seeds; the other figures (the NaN-rule Dice, the second table, the galleries) are "
        "the first seed's model."
        if repeats > 1
        else " Each network was trained once (train.repeats: 1): the intervals and tests "
        "resample test images only, not training runs, so a gap a second seed could erase "
        "is not ruled out (set train.repeats to 3-5 for a study)."
    )
    return (
        f"{score}. Sorted by mean test score; [95% BCa bootstrap interval over test images, "
        f"{resamples} resamples, seed {seed}] (BCa corrects the percentile interval's "
        "under-coverage on few, skewed per-image scores). The reference row (bold) is the "
        "model with the best mean validation score among those that see the image alone: it "
        "is chosen before any test figure is read. Δ: per test image, the row's score minus "
        "the reference's, its mean [paired BCa bootstrap interval]; HL: the Hodges-Lehmann "
        "estimate of the same difference (the median of pairwise averages, which the "
        "signed-rank test is about). The test: two-sided Wilcoxon signed-rank on the paired "
        'differences, Holm-corrected over the rows compared; "better"/"worse" follow the '
        "sign of the same signed-rank statistic; * marks p < "
        f"{alpha}; n.s.: not significantly different (which does not mean equal). Pairs: "
        "test images scored by both models (the HL estimate is in the second table); tied "
        "pairs (equal scores) "
        "carry no information for the test and are dropped by it; fewer than 2 untied pairs "
        f"give no test.{seeds} Cost: \"train s\" is training's wall time (SAM's "
        'embedding-cache filling shown apart); "img/s" is inference on the full-size test '
        "images after a warm-up pass, with SAM's embedding cache bypassed (every image "
        "encoded), so that no row gains from a cache another row filled."
    )
