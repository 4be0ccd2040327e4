"""Matplotlib figures for the report (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

# Error colouring of a prediction against the reference (RGB in [0, 1]).
TP_COLOR, FP_COLOR, FN_COLOR = (0.1, 0.8, 0.2), (0.95, 0.2, 0.2), (0.2, 0.45, 1.0)


def error_overlay(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, alpha: float = 0.45):
    """(H, W) uint8 image + {0, 1} masks -> (H, W, 3) float RGB: TP green, FP red, FN blue."""
    rgb = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
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


def training_curve(history: list[dict], path: Path, name: str) -> Path:
    """Train/val loss and validation Dice per epoch."""
    epochs = [int(r["epoch"]) for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3), dpi=80)
    ax1.plot(epochs, [float(r["train_loss"]) for r in history], "o-", label="train")
    ax1.plot(epochs, [float(r["val_loss"]) for r in history], "o-", label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [float(r["val_dice"]) for r in history], "o-", color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice")
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
    """(H, W) uint8 image + {0, 1} masks -> (h, 2 * width) RGB uint8, two panels side by side:
    the image with the reference outlined (green), and the prediction's errors coloured
    (TP green, FP red, FN blue). Drawn with NumPy and OpenCV: ten per model stay fast."""
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)
    ref_s = cv2.resize(ref.astype(np.uint8), (width, h), interpolation=cv2.INTER_NEAREST) > 0
    pred_s = cv2.resize(pred.astype(np.uint8), (width, h), interpolation=cv2.INTER_NEAREST) > 0
    left = np.repeat(small[..., None], 3, axis=2).astype(np.float32) / 255.0
    left[_outline(ref_s)] = TP_COLOR
    right = error_overlay(small, ref_s, pred_s)
    gap = np.ones((h, 4, 3), dtype=np.float32)
    return np.rint(np.concatenate([left, gap, right], axis=1) * 255).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG file bytes. Galleries are photographs of noisy images: PNG
    keeps the noise losslessly at ~7x the size, and a report holds a hundred of them."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def pareto(rows: list[dict], front: dict[str, list[str]], path: Path) -> Path:
    """Test Dice (with its 95% interval) against training time and against parameters.

    ``front``: for each cost key, the models on the Pareto front (no other model is both
    cheaper and better), joined by a line. Oracle and random-init rows are drawn hollow.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=80)
    for ax, (key, label, floor) in zip(axes, PARETO_COSTS, strict=True):
        for r in rows:
            if r.get("dice") is None:
                continue
            x = max(float(r.get(key) or 0.0), floor)
            low, high = r.get("dice_ci_low"), r.get("dice_ci_high")
            err = None if low is None else [[r["dice"] - low], [high - r["dice"]]]
            hollow = r.get("oracle_prompts") or r.get("random_init")
            ax.errorbar(
                x,
                r["dice"],
                yerr=err,
                fmt="o",
                capsize=3,
                color="tab:blue",
                markerfacecolor="white" if hollow else "tab:blue",
            )
            ax.annotate(
                r["model"], (x, r["dice"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        on = [r for r in rows if r["model"] in front.get(key, [])]
        on.sort(key=lambda r: max(float(r.get(key) or 0.0), floor))
        if len(on) > 1:
            xs = [max(float(r.get(key) or 0.0), floor) for r in on]
            ax.step(
                xs,
                [r["dice"] for r in on],
                where="post",
                color="tab:orange",
                label="Pareto front",
                alpha=0.8,
            )
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xscale("log")
        ax.margins(x=0.08, y=0.12)  # room for the labels of the top and right-most points
        ax.set_xlabel(label)
        ax.set_ylabel("test Dice")
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# Trials ASHA stopped ran fewer epochs: their Dice is not comparable, so they look different.
_SWEEP_STYLES = {
    "completed": {"color": "tab:purple", "marker": "o"},
    "stopped early": {"color": "tab:gray", "marker": "x"},
}


def sweep_scatter(trials: list[dict], knobs: list[str], path: Path, *, metric: str) -> Path:
    """``metric`` against each sweep knob (one panel each; learning rate on a log axis)."""
    fig, axes = plt.subplots(1, len(knobs), figsize=(4 * len(knobs), 3.4), dpi=80, squeeze=False)
    for ax, knob in zip(axes[0], knobs, strict=True):
        for status, style in _SWEEP_STYLES.items():
            pts = [
                (float(t[knob]), float(t[metric]))
                for t in trials
                if t.get("status", "completed") == status
                and t.get(knob) not in (None, "")
                and t.get(metric) not in (None, "", "nan")
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=status, **style)
        if knob in ("lr", "learning_rate"):
            ax.set_xscale("log")
        ax.set_xlabel(knob)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Sweep: {metric} by trial", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
