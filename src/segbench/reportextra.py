"""The report's sections for what evaluate measured beyond the rows (:mod:`segbench.evalextra`):
Dice against the number of point prompts, and SAM against its LoRA-adapted self.

:func:`extra_sections` reads every evaluated entry's ``extra/``, draws the figures into the
report's figure directory and returns ``(plots, context)``: the figure paths by key (the
report inlines or links them) and what the templates print. Nothing is drawn for entries that
did not ask for an extra, and the sections are absent from the report when none did.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segbench import figures
from segbench.evalextra import read_extra
from segbench.io import read_csv, read_image, read_mask
from segbench.stats import SMALL_TEST_SET

W = 256  # gallery panel width, pixels


def extra_sections(
    names: list[str],
    eval_dir: Path,
    raw_dir: Path,
    fig_dir: Path,
    *,
    channels: str,
    display,
    gallery_size: int,
    alpha: float,
) -> tuple[dict[str, Path], dict]:
    """Figures and template context for the extras of the entries ``names``.

    ``display`` maps a full-size image to what the galleries show (the report's own intensity
    mapping). Context: ``points_curves`` ``{entry: [rows of points_curve.csv]}`` and
    ``auto_compares`` ``{entry: summary with its verdict and gallery [(jpeg, caption)]}``.
    """
    extras = {n: read_extra(eval_dir / n) for n in names}
    curves = {n: e["points_curve"] for n, e in extras.items() if e["points_curve"]}
    compares = {n: e["auto_compare"] for n, e in extras.items() if e["auto_compare"]}
    plots: dict[str, Path] = {}
    if curves:
        plots["points_curve"] = figures.interval_lines(
            {
                n: [(r["k"], r["dice"], r["dice_ci_low"], r["dice_ci_high"]) for r in rows]
                for n, rows in curves.items()
            },
            fig_dir / "points_curve.png",
            xlabel="points per object (oracle clicks)",
            ylabel="test Dice (95% CI)",
            title="Dice against the number of point prompts",
        )
    manifest = {r["id"]: r for r in read_csv(raw_dir / "manifest.csv")} if compares else {}
    context_compares = {}
    for name, compare in compares.items():
        gallery = []
        for row, caption in pick_changed(compare["rows"], gallery_size):
            rec = manifest[row["id"]]
            image = display(read_image(raw_dir / rec["image"], channels))
            ref = read_mask(raw_dir / rec["mask"], 2)
            panels = [
                figures.gallery_panel(
                    image, ref, read_mask(compare["dir"] / kind / f"{row['id']}.png", 2), width=W
                )
                for kind in ("base", "adapted")
            ]
            path = fig_dir / f"auto_compare_{name}_{row['id']}.jpg"
            # Each panel is image | gap | errors: the second's image is the first's, dropped.
            path.write_bytes(figures.jpeg_bytes(np.hstack([panels[0], panels[1][:, W:]])))
            gallery.append((path, caption))
        context_compares[name] = {
            **{k: v for k, v in compare.items() if k not in ("rows", "dir")},
            "verdict": auto_verdict(compare["difference"], alpha),
            "small": compare["n_images"] < SMALL_TEST_SET,
            "gallery": gallery,
        }
    return plots, {"points_curves": curves, "auto_compares": context_compares}


def auto_verdict(difference: dict, alpha: float) -> str:
    """Words for the paired test of adapted against base (one test, no correction)."""
    p, mean = difference.get("p"), difference.get("mean_diff")
    if p is None or mean is None or math.isnan(p) or math.isnan(mean):
        return "no image with foreground to compare"
    if p < alpha and mean > 0:
        return f"the adapted SAM is better (p={p:.3g} < {alpha})"
    if p < alpha and mean < 0:
        return f"the adapted SAM is worse (p={p:.3g} < {alpha})"
    return f"not significantly different (p={p:.3g}, alpha {alpha})"


def pick_changed(rows: list[dict], k: int) -> list[tuple[dict, str]]:
    """The ``k`` images the adaptation helped most and the ``k`` it hurt most (by adapted -
    base Dice; images with an undefined Dice, no foreground, are left out), with captions."""
    scored = [r for r in rows if not (math.isnan(r["dice_base"]) or math.isnan(r["dice_adapted"]))]
    scored.sort(key=lambda r: (r["dice_adapted"] - r["dice_base"], r["id"]))
    helped = scored[::-1][:k]
    chosen = helped + [r for r in scored[:k] if r not in helped]  # few images: no repeats
    return [
        (
            r,
            f"{r['id']}: Dice base {r['dice_base']:.3f}, adapted {r['dice_adapted']:.3f}",
        )
        for r in chosen
    ]
