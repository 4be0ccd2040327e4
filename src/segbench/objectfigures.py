"""The report's object figures: object sizes, predicted against reference, and object counts per
test image (:mod:`segbench.reportobjects`). Matplotlib, Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
COUNT_DODGE = 0.2  # the farthest a model's markers are shifted sideways, in objects


def log_bins(values: list[np.ndarray], n: int = 30) -> np.ndarray | None:
    """``n + 1`` log-spaced bin edges spanning every positive value of ``values`` (one array
    per model: the models share the bins, so their histograms compare bar for bar); None when
    there is no positive value. One distinct value gets a bin a factor 1.5 either side."""
    pooled = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values] or [[]])
    pooled = pooled[np.isfinite(pooled) & (pooled > 0)]
    if pooled.size == 0:
        return None
    low, high = pooled.min(), pooled.max()
    if high <= low * 1.0001:
        low, high = low / 1.5, high * 1.5
    return np.geomspace(low, high * 1.0001, n + 1)  # the largest value inside the last bin


def size_histograms(
    sizes: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *, bins: int = 30
) -> Path:
    """Small multiples, one panel per model of ``{model: (reference diameters, predicted
    diameters)}`` (equivalent-circle diameters in px): the reference objects shaded grey, the
    predicted ones as a coloured outline, on the same log-spaced bins (:func:`log_bins`) and
    the same axes in every panel. A model without predicted objects says so in its panel."""
    names = list(sizes)
    edges = log_bins([v for pair in sizes.values() for v in pair], bins)
    if edges is None:
        edges = np.geomspace(1.0, 10.0, bins + 1)  # nothing to draw: empty panels still read
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(3.6 * cols, 2.7 * rows + 0.4),
        dpi=80,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for i, (ax, name) in enumerate(zip(axes.flat, names, strict=False)):
        ref, pred = (np.asarray(v, dtype=np.float64) for v in sizes[name])
        ax.hist(
            ref, bins=edges, histtype="stepfilled", color="0.75", label=f"reference ({ref.size})"
        )
        color = f"C{i % 10}"
        if pred.size:
            ax.hist(
                pred,
                bins=edges,
                histtype="step",
                color=color,
                linewidth=1.6,
                label=f"predicted ({pred.size})",
            )
        else:
            ax.text(
                0.5,
                0.6,
                "no predicted objects",
                transform=ax.transAxes,
                ha="center",
                fontsize=8,
                color=color,
            )
        ax.set_xscale("log")
        # Diameters often span less than a decade: tick 1, 2 and 5 of each, as plain numbers.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("equivalent diameter, px (log)")
    for ax in axes[:, 0]:
        ax.set_ylabel("objects")
    fig.suptitle("Object sizes on the test images: predicted against reference", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def count_scatter(counts: dict[str, list[tuple[int, int]]], path: Path) -> Path:
    """Reference against predicted object count, one point per test image and model of
    ``{model: [(reference count, predicted count), ...]}``, one colour and marker per model,
    the line y = x dashed. Each model's points are shifted sideways by a fixed amount (at most
    :data:`COUNT_DODGE`) so that models with equal counts on an image do not hide each other."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=80)
    names = list(counts)
    step = 2 * COUNT_DODGE / (len(names) - 1) if len(names) > 1 else 0.0
    top = 1.0
    for i, name in enumerate(names):
        if not counts[name]:
            continue
        ref, pred = (np.asarray(v, dtype=np.float64) for v in zip(*counts[name], strict=True))
        top = max(top, ref.max(), pred.max())
        ax.scatter(
            ref + (i * step - COUNT_DODGE if step else 0.0),
            pred,
            s=22,
            alpha=0.7,
            marker=_MARKERS[i % len(_MARKERS)],
            color=f"C{i % 10}",
            label=name,
        )
    lim = (-0.5 - COUNT_DODGE, top * 1.05 + 0.5)
    ax.plot(lim, lim, "--", color="0.4", linewidth=1, label="predicted = reference")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("reference objects per test image")
    ax.set_ylabel("predicted objects")
    ax.set_title("Object counts per test image", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
