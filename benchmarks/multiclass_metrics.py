"""Multi-class metrics: segbench's ``multiclass_metrics`` against torchmetrics, values and speed.

    python benchmarks/multiclass_metrics.py [--images 1000] [--size 512] [--classes 5] [--repeats 3]

Both score the same seeded random (size, size) index masks (a reference and a prediction that
agrees with it on about 70% of the pixels, so every class is present in both): segbench's
:func:`segbench.metrics.multiclass_metrics` (numpy, one ``bincount`` per image) against
torchmetrics' ``MulticlassConfusionMatrix`` and ``MulticlassJaccardIndex(average=None)`` (torch,
on the CPU), image by image as evaluation scores them. Reported: the largest difference between
their confusion matrices (must be 0) and per-class IoUs (must be within 1e-6), and the median
images per second of each over ``--repeats`` (alternating which runs first). Target: segbench
not slower.

torchmetrics is a benchmark-only dependency, installed beside the virtualenv so that it cannot
touch torch (``make bench-multiclass`` does this)::

    .venv/bin/python -m pip install --no-deps --target .bench-deps/torchmetrics \\
        torchmetrics==1.9.0 lightning-utilities==0.15.3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".bench-deps" / "torchmetrics"))

from segbench.metrics import multiclass_metrics


def masks(n: int, size: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        target = rng.integers(0, classes, (size, size), dtype=np.uint8)
        noise = rng.integers(0, classes, (size, size), dtype=np.uint8)
        pred = np.where(rng.random((size, size)) < 0.7, target, noise)
        yield pred, target


def run_segbench(pairs, classes):
    return [multiclass_metrics(p, t, classes) for p, t in pairs]


def run_torchmetrics(pairs, classes):
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    cm = MulticlassConfusionMatrix(num_classes=classes)
    iou = MulticlassJaccardIndex(num_classes=classes, average=None)
    out = []
    for p, t in pairs:
        pt, tt = torch.from_numpy(p).long(), torch.from_numpy(t).long()
        out.append({"confusion": cm(pt, tt).numpy(), "iou": iou(pt, tt).numpy()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # evaluation scores images one by one, one thread each
    pairs = list(masks(args.images, args.size, args.classes))
    ours, theirs = run_segbench(pairs, args.classes), run_torchmetrics(pairs, args.classes)
    cm_diff = max(
        int(np.abs(a["confusion"] - b["confusion"]).max())
        for a, b in zip(ours, theirs, strict=True)
    )
    iou_diff = max(
        float(np.abs(np.array(a["iou"]) - b["iou"]).max())
        for a, b in zip(ours, theirs, strict=True)
    )
    rates = {"segbench": [], "torchmetrics": []}
    for r in range(args.repeats):
        order = [("segbench", run_segbench), ("torchmetrics", run_torchmetrics)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn(pairs, args.classes)
            rates[name].append(len(pairs) / (time.perf_counter() - start))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.images} masks "
        f"{args.size}x{args.size}, {args.classes} classes, {args.repeats} repeats"
    )
    print(f"largest confusion-matrix difference: {cm_diff}; largest IoU difference: {iou_diff:.2e}")
    for name, value in med.items():
        runs = ", ".join(f"{v:.1f}" for v in rates[name])
        print(f"{name}: {value:.1f} images/s (median; runs {runs})")
    print(f"segbench / torchmetrics: {med['segbench'] / med['torchmetrics']:.2f}x")
    if cm_diff or iou_diff > 1e-6:
        sys.exit("the two disagree")


if __name__ == "__main__":
    main()
