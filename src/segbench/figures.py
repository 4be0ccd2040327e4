"""Matplotlib figures for the report (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import (
    EngFormatter,
    LogLocator,
    NullFormatter,
)

# Error colouring of a prediction against the reference (RGB in [0, 1]).
TP_COLOR, FP_COLOR, FN_COLOR = (0.1, 0.8, 0.2), (0.95, 0.2, 0.2), (0.2, 0.45, 1.0)


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8 -> (H, W, 3) float32 RGB in [0, 1]."""
    if image.ndim == 3:
        return image.astype(np.float32) / 255.0
    return np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)


def error_overlay(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, alpha: float = 0.45):
    """(H, W) grey or (H, W, 3) RGB uint8 image + {0, 1} masks -> (H, W, 3) float RGB: TP
    green, FP red, FN blue."""
    rgb = _rgb(image)
    ref, pred = ref.astype(bool), pred.astype(bool)
    for sel, color in ((ref & pred, TP_COLOR), (pred & ~ref, FP_COLOR), (ref & ~pred, FN_COLOR)):
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(color)
    return rgb


def overlay(image, ref, pred, path: Path, *, title: str) -> Path:
    """Three panels: the image, the reference mask outlined, the prediction's errors coloured."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=80)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=255)
    axes[1].contour(ref, levels=[0.5], colors=[TP_COLOR], linewidths=0.8)
    axes[1].set_title("reference (outline)")
    axes[2].imshow(error_overlay(image, ref, pred))
    axes[2].set_title("prediction: TP green, FP red, FN blue")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def training_curve(
    history: list[dict], path: Path, name: str, *, dice_label: str = "validation Dice"
) -> Path:
    """Train/val loss and validation Dice per epoch (``dice_label``: its axis label)."""
    epochs = [int(r["epoch"]) for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3), dpi=80)
    ax1.plot(epochs, [float(r["train_loss"]) for r in history], "o-", label="train")
    ax1.plot(epochs, [float(r["val_loss"]) for r in history], "o-", label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [float(r["val_dice"]) for r in history], "o-", color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(dice_label)
    fig.suptitle(f"{name}: training", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _outline(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel boundary of an (H, W) bool mask (morphological gradient)."""
    m = mask.astype(np.uint8)
    return cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)


def gallery_panel(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, *, width: int = 256):
    """(H, W) grey or (H, W, 3) RGB uint8 image + {0, 1} masks -> (h, 2 * width) RGB uint8,
    two panels side by side: the image with the reference outlined (green), and the
    prediction's errors coloured (TP green, FP red, FN blue). Drawn with NumPy and OpenCV: ten
    per model stay fast."""
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)
    ref_s = cv2.resize(ref.astype(np.uint8), (width, h), interpolation=cv2.INTER_NEAREST) > 0
    pred_s = cv2.resize(pred.astype(np.uint8), (width, h), interpolation=cv2.INTER_NEAREST) > 0
    left = _rgb(small)
    left[_outline(ref_s)] = TP_COLOR
    right = error_overlay(small, ref_s, pred_s)
    gap = np.ones((h, 4, 3), dtype=np.float32)
    return np.rint(np.concatenate([left, gap, right], axis=1) * 255).astype(np.uint8)


def class_overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float = 0.5):
    """(H, W) grey or (H, W, 3) RGB uint8 image + (H, W) class indices -> (H, W, 3) float RGB:
    each class but background (0) tinted with its ``colors`` row ((C, 3) uint8); background
    and ignored pixels (indices >= C) show the image itself."""
    rgb = _rgb(image)
    tint = np.asarray(colors, dtype=np.float32) / 255.0
    for k in range(1, len(tint)):
        sel = mask == k
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * tint[k]
    return rgb


def class_panel(
    image: np.ndarray, ref: np.ndarray, pred: np.ndarray, colors: np.ndarray, *, width: int = 200
):
    """(H, W) grey or (H, W, 3) RGB uint8 image + (H, W) class-index masks -> (h, 3 * width)
    RGB uint8, three panels side by side: the image, the reference and the prediction, each
    class tinted with its colour (:func:`class_overlay`). ``colors``: (C, 3) uint8."""
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)
    masks = [
        cv2.resize(m.astype(np.uint8), (width, h), interpolation=cv2.INTER_NEAREST)
        for m in (ref, pred)
    ]
    gap = np.ones((h, 4, 3), dtype=np.float32)
    panels = [_rgb(small), gap, class_overlay(small, masks[0], colors), gap]
    panels.append(class_overlay(small, masks[1], colors))
    return np.rint(np.concatenate(panels, axis=1) * 255).astype(np.uint8)


def class_legend(names: list[str], colors: np.ndarray, path: Path) -> Path:
    """One swatch per class (``colors``: (C, 3) uint8) with its name; background (class 0)
    is drawn untinted in the galleries, and says so."""
    fig, ax = plt.subplots(figsize=(min(12, 1.0 + 1.9 * len(names)), 0.5), dpi=80)
    handles = [
        Patch(
            facecolor="white" if k == 0 else np.asarray(c) / 255.0,
            edgecolor="black",
            label=f"{name} (untinted)" if k == 0 else name,
        )
        for k, (name, c) in enumerate(zip(names, colors, strict=True))
    ]
    ax.legend(handles=handles, loc="center", ncol=len(names), frameon=False, fontsize=9)
    ax.set_axis_off()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_matrix(matrix: np.ndarray, names: list[str], path: Path, *, title: str) -> Path:
    """A (C, C) confusion matrix of pixel counts (rows: reference class, columns: predicted
    class), each row normalised to the share of that reference class's pixels; a class absent
    from the reference has an empty row."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, counts / totals, np.nan)
    n = len(names)
    side = min(9.0, 2.2 + 0.7 * n)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=80)
    shown = ax.imshow(np.nan_to_num(share, nan=0.0), cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            text = "–" if np.isnan(share[i, j]) else f"{share[i, j]:.0%}"
            dark = not np.isnan(share[i, j]) and share[i, j] > 0.6
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
            )
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("reference class")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the reference row")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG file bytes. Galleries are photographs of noisy images: PNG
    keeps the noise losslessly at ~7x the size, and a report holds a hundred of them."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def pareto(
    rows: list[dict],
    front: dict[str, list[str]],
    path: Path,
    *,
    metric: str = "dice",
    title: str = "Dice",
) -> Path:
    """Test ``metric`` (the primary one, called ``title``; with its 95% interval) against
    training time and against parameters.

    ``front``: for each cost key, the models on the Pareto front (no other model is both
    cheaper and better), joined by a line. Oracle and random-init rows are drawn hollow.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=80)
    for ax, (key, label, floor) in zip(axes, PARETO_COSTS, strict=True):
        for r in rows:
            if r.get(metric) is None:
                continue
            x = max(float(r.get(key) or 0.0), floor)
            low, high = r.get(f"{metric}_ci_low"), r.get(f"{metric}_ci_high")
            err = None if low is None else [[r[metric] - low], [high - r[metric]]]
            hollow = r.get("oracle_prompts") or r.get("random_init")
            ax.errorbar(
                x,
                r[metric],
                yerr=err,
                fmt="o",
                capsize=3,
                color="tab:blue",
                markerfacecolor="white" if hollow else "tab:blue",
            )
            ax.annotate(
                r["model"], (x, r[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        on = [r for r in rows if r["model"] in front.get(key, [])]
        on.sort(key=lambda r: max(float(r.get(key) or 0.0), floor))
        if len(on) > 1:
            xs = [max(float(r.get(key) or 0.0), floor) for r in on]
            ax.step(
                xs,
                [r[metric] for r in on],
                where="post",
                color="tab:orange",
                label="Pareto front",
                alpha=0.8,
            )
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xscale("log")
        ax.margins(x=0.08, y=0.12)  # room for the labels of the top and right-most points
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {title}")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against cost (hollow: oracle prompts or random-init SAM)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# (row key, axis label, floor for the log axis: Otsu trains in ~0 s with 0 parameters)
PARETO_COSTS = (
    ("train_seconds", "training time, s (log)", 0.1),
    ("params_total", "parameters (log)", 1.0),
)


def lines(
    series: dict[str, list[tuple[float, float]]],
    path: Path,
    *,
    xlabel,
    ylabel,
    title,
    logx: bool = False,
) -> Path:
    """One line per name of ``{name: [(x, y), ...]}`` on one axis."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    for name, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", label=name, markersize=3)
    if logx:
        ax.set_xscale("log")
    return _save_lines(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


def _save_lines(fig, ax, path: Path, *, xlabel, ylabel, title) -> Path:
    """Label, grid and legend a line plot, save it to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def interval_lines(
    series: dict[str, list[tuple[float, float, float, float]]],
    path: Path,
    *,
    xlabel,
    ylabel,
    title,
) -> Path:
    """One line per name of ``{name: [(x, y, y_low, y_high), ...]}`` with its interval as a
    shaded band (NaN bounds, fewer than two values, draw no band at that x)."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    for name, points in series.items():
        if not points:
            continue
        xs, ys, lows, highs = (np.asarray(v, dtype=float) for v in zip(*points, strict=True))
        (line,) = ax.plot(xs, ys, "o-", label=name, markersize=3)
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xticks(sorted({x for points in series.values() for x, *_ in points}))
    return _save_lines(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


# Trials ASHA stopped ran fewer epochs: their Dice is not comparable, so they look different.
_SWEEP_STYLES = {
    "completed": {"color": "tab:purple", "marker": "o"},
    "stopped early": {"color": "tab:gray", "marker": "x"},
}


SWEEP_SIZE = "params_trainable"  # trials.csv: the trainable parameters of each trial's model
_LOG_AXES = ("lr", "learning_rate", SWEEP_SIZE)


def sweep_scatter(trials: list[dict], knobs: list[str], path: Path, *, metric: str) -> Path:
    """``metric`` against each sweep knob, then against the trial's trainable parameters where
    ``trials`` have them (``params_trainable``): one panel each; learning rate and parameters
    on log axes."""
    sized = any(_sweep_points(trials, SWEEP_SIZE, metric, status) for status in _SWEEP_STYLES)
    panels = [*knobs, *([SWEEP_SIZE] if sized else [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), dpi=80, squeeze=False)
    for ax, knob in zip(axes[0], panels, strict=True):
        for status, style in _SWEEP_STYLES.items():
            pts = _sweep_points(trials, knob, metric, status)
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=status, **style)
        if knob in _LOG_AXES:
            ax.set_xscale("log")
        if knob == SWEEP_SIZE:
            _size_ticks(
                ax, {x for s in _SWEEP_STYLES for x, _ in _sweep_points(trials, knob, metric, s)}
            )
        ax.set_xlabel("trainable parameters" if knob == SWEEP_SIZE else knob)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Sweep: {metric} by trial", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _size_ticks(ax, sizes: set[float]) -> None:
    """Parameter counts as 42.7k or 4M, ticked where a reader finds them: sizes often lie
    within one decade, where a log axis has no labelled tick. A few sizes (ranks swept) are
    ticked each; more, at 1, 2 and 5 of each decade over a narrow range, else at each decade."""
    if len(sizes) <= 6:
        ax.set_xticks(sorted(sizes))
        for places in (1, 2, 3):  # as many digits as tell the sizes apart (4.13M, 4.21M)
            fmt = EngFormatter(places=places, sep="")
            if len({fmt(v) for v in sizes}) == len(sizes):
                break
        ax.xaxis.set_major_formatter(fmt)
    else:
        narrow = max(sizes) < 100 * min(sizes)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
        ax.xaxis.set_major_formatter(EngFormatter(places=0, sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _sweep_points(trials: list[dict], knob: str, metric: str, status: str) -> list[tuple]:
    """(knob, metric) of the ``status`` trials that have both (on a log axis, only positive
    knob values)."""
    pts = [
        (float(t[knob]), float(t[metric]))
        for t in trials
        if t.get("status", "completed") == status
        and t.get(knob) not in (None, "")
        and t.get(metric) not in (None, "", "nan")
    ]
    return [(x, y) for x, y in pts if x > 0 or knob not in _LOG_AXES]


# Count scatter: one marker per model (colours follow matplotlib's cycle).
