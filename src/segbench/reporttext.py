"""The report's sentences, in one place for its HTML and Markdown: the headline, the banners,
how an ensemble was mixed, and the statement of method (how rows are ranked, how the reference
is chosen, what the intervals and tests are, under what conditions the cost columns were
measured). Each sentence describes what the code does (:mod:`segbench.comparison`,
:mod:`segbench.stats`, :mod:`segbench.evaluate`)."""

from __future__ import annotations

import math

from segbench.comparison import (
    NOTES,
    RANK,
    SCORE_TITLES,
    fmt,
    primary_metric,
    reference_row,
)
from segbench.modelcard import ModelCard
from segbench.stats import SMALL_TEST_SET, power_banner


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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


def banners(rows: list[dict], alpha: float = 0.05) -> list[str]:
    """The warnings the table needs, each once: the flags some row carries, a small test set,
    a family of comparisons none of which could reach significance, no reference."""
    out = [text for flag, (_, text) in NOTES.items() if any(r.get(flag) for r in rows)]
    n = max((r.get("n_images", 0) for r in rows), default=0)
    if rows and n < SMALL_TEST_SET:
        out.append(
            f"Small test set. Only {n} test image{'s' * (n != 1)}: confidence intervals are wide "
            "and the paired tests can rarely tell models apart. Rank differences here are not "
            f"evidence; use {SMALL_TEST_SET} or more test images (data.split.test) before "
            "drawing conclusions."
        )
    compared = {r["model"]: r for r in rows if "verdict" in r}
    power = power_banner(compared, alpha) if compared else None
    if power:
        out.append(f"Too few pairs to tell models apart. {power}")
    if rows and reference_row(rows) is None:
        out.append(
            "No reference. No model that sees the image alone has a validation score (no "
            "validation images), and choosing the reference on the test set would bias every "
            "comparison against it; the rows are not tested. Give data.split.val a share."
        )
    return out


def headline(rows: list[dict], metric: str | None = None) -> str:
    """A few sentences: the reference model (chosen on validation), its test score, which
    rows differ from it and which way, the classical baseline's margin, and any oracle row
    that scores higher."""
    metric = metric or primary_metric(rows)
    title = SCORE_TITLES[metric]
    ref = reference_row(rows)
    if ref is None:
        return (
            f"No reference: no model without oracle prompts has both a validation and a test "
            f"{title}."
        )
    n = ref["n_images"]
    runs = len(ref.get("seeds") or []) or 1
    folds = len(set(ref.get("folds") or []))
    if folds > 1:
        per = f" × {runs // folds} seeds" if runs > folds else ""
        mean = f", mean of its {folds} cross-validation folds' models{per}"
    else:
        mean = f", mean of {runs} seeds" if runs > 1 else ""
    text = (
        f"Reference: {ref['model']}, the best validation {title} ({ref['val_score']:.3f}) among "
        "models that see the image alone, chosen before the test set was opened. Its test "
        f"{title}: {fmt(RANK, ref)} over {n} image{'s' * (n != 1)}{mean}."
    )
    fair = [r for r in rows if "verdict" in r and not r.get("oracle_prompts")]
    for verdict, words in (
        ("significantly better", "Better than it"),
        ("significantly worse", "Worse than it"),
        ("not significantly different", "Not significantly different from it"),
    ):
        named = [r["model"] for r in fair if r["verdict"] == verdict]
        if named:
            text += f" {words} (paired Wilcoxon on per-image {title}, Holm): {', '.join(named)}."
    scored = [r for r in rows if not _missing(r.get(RANK))]
    above = [r for r in scored if r.get("oracle_prompts") and r[RANK] > ref[RANK]]
    if above:
        text += (
            f" With oracle prompts from the ground truth, {above[0]['model']} reaches "
            f"{above[0][RANK]:.3f}: an upper bound for a perfect user, not a fair comparison."
        )
    base = next((r for r in scored if r["model"] == "otsu"), None)
    if base is not None and base is not ref:
        otsu = "Otsu" if metric == "dice" else "multi-Otsu"
        text += (
            f" The classical baseline ({otsu}) scores {base[RANK]:.3f}:"
            f" a margin of {ref[RANK] - base[RANK]:+.3f}."
        )
    return text


def ensemble_note(card: ModelCard) -> str:
    """One sentence on how an ensemble was mixed, from its model card."""
    fit = card.ensemble
    mix = " + ".join(f"{w:.2f} × {m}" for m, w in fit.weights.items())
    if fit.val_score is None:  # a card written before the joint search
        alone = ", ".join(f"{m} {d:.3f}" for m, d in fit.member_val_dice.items())
        return (
            f"{card.name} = {mix}: weights chosen on {fit.n_val_images} validation images "
            f"(pooled validation Dice {fit.val_dice:.3f}; members alone: {alone})."
        )
    alone = ", ".join(f"{m} {d:.3f}" for m, d in fit.member_val_score.items())
    threshold = "" if fit.threshold is None else f" and threshold {fit.threshold:.2f}"
    text = (
        f"{card.name} = {mix}{threshold}: searched together on {fit.n_val_images} validation "
        f"images (mean per-image score {fit.val_score:.3f}; each member alone at its own best "
        f"threshold: {alone})."
    )
    if fit.collapsed_to:
        return text + (
            f" The search gave {fit.collapsed_to} all the weight: the ensemble is "
            f"{fit.collapsed_to}, shown once as {fit.collapsed_to}'s row, not as a new model."
        )
    zero = [m for m, w in fit.weights.items() if w == 0]
    paid = "its non-zero members' training" + (f" (not {', '.join(zero)}'s)" if zero else "")
    return text + f" Its training time is {paid} plus the search."
