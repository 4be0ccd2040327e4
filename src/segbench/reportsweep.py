"""The report's sweep section: the trials a sweep wrote (``sweeps/trials.csv``, ``best.json``),
best first, and the figure of the validation score against each swept knob."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from segbench import figures
from segbench.io import read_csv, read_json

SWEEP_KNOBS = ("rank", "lr", "batch_size")  # plotted when a sweep's trials.csv has them


def sweep_summary(sweeps_dir: Path | None) -> dict | None:
    """The sweep in ``sweeps_dir`` for the report: its trials (best first), the swept columns
    (from ``best.json``, else the usual knobs), the metric and the best trial; None if no
    sweep ran (or it was disabled)."""
    trials_csv = sweeps_dir / "trials.csv" if sweeps_dir else None
    if trials_csv is None or not trials_csv.is_file():
        return None
    trials = read_csv(trials_csv)
    if not trials:
        return None
    best_json = sweeps_dir / "best.json"
    best = read_json(best_json) if best_json.is_file() else {}
    metric = next(
        (m for m in ("best_val_score", "best_val_dice", "val_dice", "dice") if m in trials[0]),
        None,
    )
    knobs = list(best.get("columns", {}).values()) or [k for k in SWEEP_KNOBS if k in trials[0]]
    if metric is None or not knobs:
        return None

    def score(t):
        try:
            return float(t[metric])
        except (TypeError, ValueError):
            return -math.inf

    counts = Counter(t.get("status", "") for t in trials)
    return {
        "trials": sorted(trials, key=score, reverse=True),
        "knobs": knobs,
        "metric": metric,
        "best": best,
        "counts": counts,
    }


def sweep_figure(sweeps_dir: Path | None, fig_dir: Path) -> Path | None:
    """Dice against each swept knob and the trials' trainable parameters, if a sweep wrote
    ``trials.csv``."""
    summary = sweep_summary(sweeps_dir)
    if summary is None:
        return None
    return figures.sweep_scatter(
        summary["trials"], summary["knobs"], fig_dir / "sweep.png", metric=summary["metric"]
    )
