"""Matplotlib figures for the report (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

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
