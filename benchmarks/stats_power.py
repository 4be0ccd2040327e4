"""The statistics on simulated studies (issue 19, item 10): false positives, power, coverage.

    python benchmarks/stats_power.py [--studies 200] [--resamples 10000] [--images 10 30 60]
                                     [--skew-images 10 20 30]

Simulated studies come from tests/test_stats_sim.py (the same model as the regression tests:
a per-image difficulty shared by both models, Beta(8, 2), plus each model's own noise
N(0, 0.08), clipped to [0, 1]). For each number of test images and each true effect (0: the
null, and +0.05 Dice), ``--studies`` seeded studies of one model against a reference, each
judged by :func:`segbench.stats.compare_to_reference` at alpha 0.05 (Holm's m = 1) with
``--resamples`` bootstrap resamples, as the report does. Reported per arm:

* the share called significant: the false-positive rate under the null, the power otherwise
  (with a Wilson 95% interval over the studies), and how many of those were "significantly
  worse" (under the null about half; with a true gain, a verdict in the wrong direction);
* coverage of the 95% interval of the mean paired difference (the true one: 0 under the null,
  the clipped effect by Monte Carlo otherwise), BCa (what segbench uses) and percentile;
* coverage of the 95% interval of one model's mean Dice (skewed per-image scores), BCa and
  percentile: why segbench moved to BCa;
* the wall time of the arm.

A second table measures what BCa is for: coverage of the 95% interval of one model's mean Dice
when per-image Dice is strongly skewed, as with a model that fails on some images (each image
fails with probability 0.15, Dice ~ Beta(2, 5), mean 0.29; otherwise Dice ~ Beta(20, 2), mean
0.91), BCa against percentile, for ``--skew-images`` images.

Prints a table and the Markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the simulation is the tests'

from segbench.stats import bootstrap_ci, compare_to_reference
from tests.test_stats_sim import ALPHA, simulate_study, true_mean_difference

EFFECTS = (0.0, 0.05)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial share ``k / n``."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def covers(interval: tuple[float, float], truth: float) -> bool:
    return interval[0] <= truth <= interval[1]


def run_arm(n_images: int, effect: float, *, studies: int, resamples: int) -> dict:
    """One arm: ``studies`` simulated studies with ``n_images`` images and true ``effect``."""
    truth_diff = true_mean_difference(effect) if effect else 0.0
    truth_mean = float(simulate_study(np.random.default_rng(12345), 1_000_000)["reference"].mean())
    counts = dict.fromkeys(("sig", "worse", "bca_diff", "pct_diff", "bca_mean", "pct_mean"), 0)
    start = time.perf_counter()
    for i in range(studies):
        s = simulate_study(
            np.random.default_rng([n_images, round(effect * 1000), i]), n_images, effect=effect
        )
        row = compare_to_reference(s, "reference", alpha=ALPHA, n_resamples=resamples, seed=i)
        row = row["m0"]
        counts["sig"] += row["significant"]
        counts["worse"] += row["verdict"] == "significantly worse"
        counts["bca_diff"] += covers((row["diff_ci_low"], row["diff_ci_high"]), truth_diff)
        d = s["m0"] - s["reference"]
        kw = {"n_resamples": resamples, "seed": i}
        counts["pct_diff"] += covers(bootstrap_ci(d, method="percentile", **kw), truth_diff)
        counts["bca_mean"] += covers(bootstrap_ci(s["reference"], **kw), truth_mean)
        counts["pct_mean"] += covers(
            bootstrap_ci(s["reference"], method="percentile", **kw), truth_mean
        )
    seconds = time.perf_counter() - start
    return {
        "n_images": n_images,
        "effect": effect,
        "truth": truth_diff,
        "seconds": seconds,
        "studies": studies,
        **counts,
    }


def failing_model(rng: np.random.Generator, n_images: int) -> np.ndarray:
    """Per-image Dice (n_images,) of a model that fails on about 15% of the images."""
    fail = rng.random(n_images) < 0.15
    return np.where(fail, rng.beta(2, 5, n_images), rng.beta(20, 2, n_images))


def run_skew(n_images: int, *, studies: int, resamples: int) -> dict:
    """Coverage of the mean of :func:`failing_model`'s Dice, BCa and percentile."""
    truth = float(failing_model(np.random.default_rng(12345), 2_000_000).mean())
    counts = {"BCa": 0, "percentile": 0}
    start = time.perf_counter()
    for i in range(studies):
        x = failing_model(np.random.default_rng([n_images, 7, i]), n_images)
        for method in counts:
            ci = bootstrap_ci(x, method=method, n_resamples=resamples, seed=i)
            counts[method] += covers(ci, truth)
    seconds = time.perf_counter() - start
    return {"n_images": n_images, "studies": studies, "seconds": seconds, **counts}


def markdown_skew(arms: list[dict]) -> str:
    """The BENCHMARKS.md table of :func:`run_skew`'s ``arms``."""
    lines = [
        "| images | mean Dice CI coverage: BCa | percentile | wall s |",
        "| --- | --- | --- | --- |",
    ]
    for a in arms:
        n = a["studies"]
        lines.append(
            f"| {a['n_images']} | **{a['BCa'] / n:.3f}** | {a['percentile'] / n:.3f} "
            f"| {a['seconds']:.1f} |"
        )
    return "\n".join(lines)


def markdown(arms: list[dict]) -> str:
    """The BENCHMARKS.md table of ``arms``."""
    lines = [
        "| images | true effect (mean diff after clipping) | significant (95% interval) "
        "| of them worse | diff CI coverage: BCa / percentile "
        "| mean Dice CI coverage: BCa / percentile | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in arms:
        n = a["studies"]
        lo, hi = wilson(a["sig"], n)
        kind = "false positives" if a["effect"] == 0 else "power"
        lines.append(
            f"| {a['n_images']} | {a['effect']:+.2f} ({a['truth']:+.4f}) "
            f"| {kind} **{a['sig'] / n:.3f}** ({lo:.3f} to {hi:.3f}) | {a['worse']} "
            f"| {a['bca_diff'] / n:.3f} / {a['pct_diff'] / n:.3f} "
            f"| {a['bca_mean'] / n:.3f} / {a['pct_mean'] / n:.3f} | {a['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--images", type=int, nargs="+", default=[10, 30, 60])
    ap.add_argument("--skew-images", type=int, nargs="+", default=[10, 20, 30])
    args = ap.parse_args()
    start = time.perf_counter()
    arms = []
    for n_images in args.images:
        for effect in EFFECTS:
            arms.append(run_arm(n_images, effect, studies=args.studies, resamples=args.resamples))
            a = arms[-1]
            print(
                f"n={n_images:3d} effect={effect:+.2f}: significant {a['sig']}/{a['studies']}, "
                f"diff coverage BCa {a['bca_diff']} percentile {a['pct_diff']}, "
                f"mean coverage BCa {a['bca_mean']} percentile {a['pct_mean']}, "
                f"{a['seconds']:.1f} s",
                flush=True,
            )
    skew = [run_skew(n, studies=args.studies, resamples=args.resamples) for n in args.skew_images]
    print()
    print(markdown(arms))
    print()
    print(markdown_skew(skew))
    print()
    print(
        f"{args.studies} studies per arm, {args.resamples} resamples, alpha {ALPHA}, "
        f"{time.perf_counter() - start:.0f} s in all; {datetime.date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {__import__('scipy').__version__}"
    )


if __name__ == "__main__":
    main()
