"""Sliding-window inference: segbench's against MONAI's, images per second and agreement.

    python benchmarks/sliding_window.py [--repeats 5] [--overlaps 0.5 0.25] [--json PATH]

Both sides run the same model (a pipeline model from ``params.yaml``, seeded random weights, eval
mode, ``torch.inference_mode``, on the CPU) over the same seeded random (1, H, W) images with the
same window (``--tile``), overlap and windows per forward pass (``--batch``):

* **segbench**: :func:`segbench.inference.sliding_window_proba` (``blend="mean"|"gaussian"``);
* **MONAI**: ``monai.inferers.sliding_window_inference`` with the predictor
  ``sigmoid(model(x))``, so that both blend probabilities (``mode="constant"|"gaussian"``, the
  same ``sigma_scale``).

Per setting (image size x overlap x blending) it reports the median images per second of each
over ``--repeats`` (after an untimed warm-up; the two are interleaved and their order alternated
from repeat to repeat, so the ratio is the median of per-repeat paired ratios), and the largest
absolute difference between their outputs. Target: segbench not slower, outputs equal within
1e-5 for mean blending. For Gaussian blending the two weight maps are defined differently
(MONAI floors its map at 1e-3, segbench at 1e-6 of the peak), so the script also runs MONAI with
segbench's own weight map (``roi_weight_map``): that difference isolates everything but the map.

A second, cheap table times the machinery alone (``nn.Identity`` as the "model": windows cut,
sigmoid, blending), where the network does not drown the difference; then it checks that both
place the windows at the same offsets, here and over a sweep of overlaps.

MONAI is a benchmark-only dependency, installed beside the virtualenv so that it cannot touch
torch (``make bench-sliding`` does this)::

    .venv/bin/python -m pip install --no-deps --target .bench-deps monai==1.6.1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from segbench.config import parse_params
from segbench.data.tiles import windows
from segbench.inference import blend_weights, sliding_window_proba
from segbench.models import build_model

REPO = Path(__file__).resolve().parents[1]
BENCH_DEPS = REPO / ".bench-deps"
MONAI_VERSION = "1.6.1"
MONAI_MODES = {"mean": "constant", "gaussian": "gaussian"}
INSTALL = f".venv/bin/python -m pip install --no-deps --target .bench-deps monai=={MONAI_VERSION}"


def load_monai():
    """MONAI's pieces from ``.bench-deps`` (or the environment); exit 2 with how to install it."""
    sys.path.insert(0, str(BENCH_DEPS))
    try:
        import monai
        from monai.data.utils import dense_patch_slices
        from monai.inferers import sliding_window_inference
        from monai.inferers.utils import _get_scan_interval
    except ImportError as exc:
        print(
            f"cannot import monai ({exc}).\nInstall it for this benchmark only, beside the "
            f"virtualenv (--no-deps: it must not change torch):\n    {INSTALL}\n"
            "or run `make bench-sliding`, which installs it when missing.",
            file=sys.stderr,
        )
        sys.exit(2)
    return monai.__version__, sliding_window_inference, dense_patch_slices, _get_scan_interval


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_size(text: str) -> tuple[int, int, int]:
    """``HxW[:N]`` -> (H, W, N images); N defaults to 1."""
    size, _, count = text.partition(":")
    height, width = (int(v) for v in size.lower().split("x"))
    return height, width, int(count or 1)


def make_model(name: str, seed: int) -> torch.nn.Module:
    params = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    torch.manual_seed(seed)
    model = build_model(params.entry(name), name=name)
    return model.eval()


def make_images(height: int, width: int, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 1000 + height * 7 + width)
    return [torch.rand(1, height, width, generator=gen) for _ in range(count)]


class Arms:
    """The two implementations behind one call signature: image -> (H, W) float32 array."""

    def __init__(self, swi, model, tile: int, batch: int):
        self.swi, self.model, self.tile, self.batch = swi, model, tile, batch
        self.device = torch.device("cpu")

    def segbench(self, image, overlap: float, blend: str) -> np.ndarray:
        return sliding_window_proba(
            self.model,
            image,
            tile=self.tile,
            overlap=overlap,
            batch_size=self.batch,
            device=self.device,
            blend=blend,
            sigma_scale=0.125,
        )

    def monai(self, image, overlap: float, blend: str, weight_map=None) -> np.ndarray:
        model = self.model
        with torch.inference_mode():
            out = self.swi(
                image[None],
                (self.tile, self.tile),
                self.batch,
                lambda x: torch.sigmoid(model(x)),
                overlap=overlap,
                mode=MONAI_MODES[blend],
                sigma_scale=0.125,
                roi_weight_map=weight_map,
            )
        return out[0, 0].numpy()

    def run(self, arm: str, images, overlap: float, blend: str) -> tuple[float, list[np.ndarray]]:
        """(seconds for all ``images``, their outputs)."""
        fn = self.segbench if arm == "segbench" else self.monai
        start = time.perf_counter()
        outs = [fn(image, overlap, blend) for image in images]
        return time.perf_counter() - start, outs


class Recorder(torch.nn.Module):
    """Identity "model" that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        return x


def same_batches(swi, image, tile: int, batch: int, overlap: float) -> dict:
    """Do both hand the model the same batches (sizes and pixels), in the same order?"""
    seen = {}
    for arm in ("segbench", "monai"):
        recorder = Recorder()
        Arms(swi, recorder, tile, batch).run(arm, [image], overlap, "mean")
        seen[arm] = recorder.batches
    ours, theirs = seen["segbench"], seen["monai"]
    return {
        "segbench_batches": [len(b) for b in ours],
        "monai_batches": [len(b) for b in theirs],
        "identical": len(ours) == len(theirs)
        and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=False)),
    }


def max_diff(a: list[np.ndarray], b: list[np.ndarray], margin: int = 0) -> float:
    """Largest |a - b| over all images, ignoring a band of ``margin`` pixels along the border."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        d = np.abs(x.astype(np.float64) - y)
        if margin:
            d = d[margin:-margin, margin:-margin]
        worst = max(worst, float(d.max()))
    return worst


def time_settings(arms: Arms, settings, images, repeats: int, desc: str) -> dict:
    """Interleaved, order-alternating timings: {setting: {"segbench": [s], "monai": [s]}}."""
    times = {s: {"segbench": [], "monai": []} for s in settings}
    outputs = {}
    with tqdm(total=repeats * len(settings) * 2, desc=desc, unit="run", file=sys.stderr) as bar:
        for rep in range(repeats):
            order = ("segbench", "monai") if rep % 2 == 0 else ("monai", "segbench")
            for setting in settings:
                size, overlap, blend = setting
                for arm in order:
                    seconds, outs = arms.run(arm, images[size], overlap, blend)
                    times[setting][arm].append(seconds)
                    if rep == 0:
                        outputs[setting, arm] = outs
                    bar.update()
    return {"times": times, "outputs": outputs}


def summarise(times: dict, n_images: int) -> dict:
    ours, theirs = times["segbench"], times["monai"]
    ratios = [m / s for s, m in zip(ours, theirs, strict=True)]
    return {
        "segbench_img_s": n_images / statistics.median(ours),
        "monai_img_s": n_images / statistics.median(theirs),
        "segbench_s": ours,
        "monai_s": theirs,
        "ratio": statistics.median(ratios),
        "paired_ratios": ratios,
    }


def placement(dense_patch_slices, get_scan_interval, tile: int, sizes, overlaps) -> dict:
    """Window offsets of both for every (size, overlap): which differ, and an example."""
    differ = []
    for height, width in sizes:
        for overlap in overlaps:
            stride = max(1, round(tile * (1.0 - overlap)))
            ours = windows(max(height, tile), max(width, tile), tile, stride)
            size = (max(height, tile), max(width, tile))
            interval = get_scan_interval(size, (tile, tile), 2, (overlap, overlap))
            theirs = [
                (s[0].start, s[1].start) for s in dense_patch_slices(size, (tile,) * 2, interval)
            ]
            if ours != theirs:
                differ.append(
                    {
                        "size": [height, width],
                        "overlap": overlap,
                        "segbench_stride": stride,
                        "monai_stride": list(interval),
                        "segbench_windows": len(ours),
                        "monai_windows": len(theirs),
                    }
                )
    return {"checked": len(sizes) * len(overlaps), "differ": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet", choices=["unet", "attention_unet", "segformer"])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["384x512:2", "768x1024:1"],
        help="image sizes HxW[:images of that size]",
    )
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.5])
    parser.add_argument("--blends", nargs="+", default=["mean", "gaussian"], choices=MONAI_MODES)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead-repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    monai_version, swi, dense_patch_slices, get_scan_interval = load_monai()
    torch.set_num_threads(args.threads)
    sizes = {(h, w): n for h, w, n in map(parse_size, args.sizes)}
    images = {size: make_images(*size, n, args.seed) for size, n in sizes.items()}
    settings = [(s, o, b) for s in sizes for o in args.overlaps for b in args.blends]
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai_version,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }
    print(
        f"{machine['date']}: {machine['cpu']}, {machine['cores']} cores ({machine['arch']}); "
        f"python {machine['python']}, torch {machine['torch']} ({machine['torch_threads']} "
        f"threads), monai {monai_version}, numpy {machine['numpy']}",
        flush=True,
    )
    print(
        f"{args.model} (seeded random weights, eval), tile {args.tile}, {args.batch} windows per "
        f"forward pass, median of {args.repeats} repeats after a warm-up",
        flush=True,
    )

    # --- the real model --------------------------------------------------------------------
    arms = Arms(swi, make_model(args.model, args.seed), args.tile, args.batch)
    for size in sizes:  # untimed: allocator and oneDNN primitives for every batch shape
        for arm in ("segbench", "monai"):
            arms.run(arm, images[size][:1], args.overlaps[0], "mean")
    timed = time_settings(arms, settings, images, args.repeats, "model")
    results = []
    for setting in settings:
        size, overlap, blend = setting
        row = {"size": list(size), "images": sizes[size], "overlap": overlap, "blend": blend}
        row.update(summarise(timed["times"][setting], sizes[size]))
        ours, theirs = timed["outputs"][setting, "segbench"], timed["outputs"][setting, "monai"]
        row["max_abs_diff"] = max_diff(ours, theirs)
        if blend == "gaussian":
            # MONAI with segbench's weight map: what is left is window placement, batching and
            # accumulation; the border band is where MONAI's 1e-3 floor changes the blend most.
            weight = torch.from_numpy(blend_weights(args.tile, "gaussian", 0.125))
            same_map = [arms.monai(im, overlap, blend, weight) for im in images[size]]
            row["max_abs_diff_same_map"] = max_diff(ours, same_map)
            row["max_abs_diff_interior"] = max_diff(ours, theirs, margin=args.tile // 4)
        results.append(row)
    # Both run the same forward passes on the same batches, so every setting measures the same
    # thing; pooled, the paired ratios are less at the mercy of a busy machine.
    pooled = [r for row in results for r in row["paired_ratios"]]
    pooled_ratio = statistics.median(pooled)

    # --- the machinery alone: no network (identity logits) --------------------------------
    cheap = Arms(swi, torch.nn.Identity(), args.tile, args.batch)
    for size in sizes:
        for arm in ("segbench", "monai"):
            cheap.run(arm, images[size][:1], args.overlaps[0], "mean")
    cheap_timed = time_settings(cheap, settings, images, args.overhead_repeats, "machinery")
    overhead = []
    for setting in settings:
        size, overlap, blend = setting
        stats = summarise(cheap_timed["times"][setting], sizes[size])
        overhead.append(
            {
                "size": list(size),
                "overlap": overlap,
                "blend": blend,
                "segbench_ms_per_image": 1000 / stats["segbench_img_s"],
                "monai_ms_per_image": 1000 / stats["monai_img_s"],
                "ratio": stats["ratio"],
            }
        )

    batches = {
        f"{h}x{w}, overlap {o}": same_batches(swi, images[h, w][0], args.tile, args.batch, o)
        for h, w in sizes
        for o in args.overlaps
    }

    # --- window placement ------------------------------------------------------------------
    grid = [i / 100 for i in range(0, 96)]
    sweep_sizes = [*sizes, (300, 700), (511, 513), (1000, 1000)]
    place = placement(dense_patch_slices, get_scan_interval, args.tile, list(sizes), args.overlaps)
    sweep = placement(dense_patch_slices, get_scan_interval, args.tile, sweep_sizes, grid)

    # --- report ------------------------------------------------------------------------------
    print(
        "\n| image | overlap | blend | segbench img/s | MONAI img/s | segbench/MONAI speed "
        "| max abs diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        diff = f"{r['max_abs_diff']:.2e}"
        if r["blend"] == "gaussian":
            diff += (
                f" (same weight map: {r['max_abs_diff_same_map']:.2e}; "
                f">= {args.tile // 4} px from the border: {r['max_abs_diff_interior']:.2e})"
            )
        print(
            f"| {r['size'][0]}x{r['size'][1]} x{r['images']} | {r['overlap']} | {r['blend']} "
            f"| {r['segbench_img_s']:.3f} | {r['monai_img_s']:.3f} | {r['ratio']:.3f}x | {diff} |"
        )
    print(
        f"all settings pooled: segbench/MONAI speed {pooled_ratio:.3f}x (median of "
        f"{len(pooled)} paired ratios, {min(pooled):.2f} to {max(pooled):.2f})"
    )
    print("\nMachinery alone (nn.Identity as the model), median ms per image:")
    print("| image | overlap | blend | segbench ms | MONAI ms | segbench/MONAI speed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in overhead:
        print(
            f"| {r['size'][0]}x{r['size'][1]} | {r['overlap']} | {r['blend']} "
            f"| {r['segbench_ms_per_image']:.2f} | {r['monai_ms_per_image']:.2f} "
            f"| {r['ratio']:.3f}x |"
        )
    print("\nForward passes per image (windows in each), segbench | MONAI:")
    for key, check in batches.items():
        verdict = "identical batches" if check["identical"] else "DIFFERENT batches"
        print(f"  {key}: {check['segbench_batches']} | {check['monai_batches']}: {verdict}")
    same = "identical" if not place["differ"] else f"DIFFERENT in {place['differ']}"
    print(f"\nWindow offsets in the settings above: {same}.")
    print(
        f"Placement sweep (tile {args.tile}, overlaps 0.00-0.95, sizes {sweep_sizes}): "
        f"{len(sweep['differ'])} of {sweep['checked']} combinations differ"
    )
    overlaps_differ = sorted({d["overlap"] for d in sweep["differ"]})
    same_stride = [d for d in sweep["differ"] if d["segbench_stride"] == d["monai_stride"][0]]
    if overlaps_differ:
        examples = {d["overlap"]: d for d in sweep["differ"]}
        shown = ", ".join(
            f"{o}: {examples[o]['segbench_stride']} vs {examples[o]['monai_stride'][0]}"
            for o in overlaps_differ[:4]
        )
        print(
            f"  {len(overlaps_differ)} of {len(grid)} overlaps differ, all through the stride: "
            f"segbench's is round(tile x (1 - overlap)), MONAI's int(...) (overlap: segbench vs "
            f"MONAI stride {shown}, ...); with equal strides, {len(same_stride)} differ"
        )
    mean_rows = [r for r in results if r["blend"] == "mean"]
    notes = [
        "Mean blending: target max |diff| <= 1e-5: "
        + ("met" if all(r["max_abs_diff"] <= 1e-5 for r in mean_rows) else "NOT met")
        + f" (worst {max((r['max_abs_diff'] for r in mean_rows), default=0):.2e}).",
        "Speed: target segbench/MONAI >= 1.0 (ratio = median of per-repeat MONAI s / segbench s); "
        f"pooled {pooled_ratio:.3f}x. Both give the model the same batches (above), so the "
        "network's cost is the same by construction; what differs is the machinery, "
        f"{min(r['ratio'] for r in overhead):.2f}-{max(r['ratio'] for r in overhead):.2f}x, "
        f"at most {max(r['segbench_ms_per_image'] for r in overhead):.1f} ms per image.",
        "Gaussian blending: the maps differ by definition. Both are exp(-d^2 / (2 sigma^2)), "
        "sigma = 0.125 x tile, but MONAI clamps its map at 1e-3 and segbench at 1e-6 of the "
        "peak. With sigma = 32 px, every pixel more than ~119 px from the window centre (about "
        "a third of a 256 px window, its corners and the middle of its edges) gets MONAI's flat "
        "1e-3, so where all covering windows are that far (a band along the image border) MONAI "
        "blends them as a plain mean, and elsewhere far windows get up to ~1000x more say than "
        "in segbench. Run with segbench's own map (roi_weight_map), MONAI gives segbench's "
        "output (the 'same weight map' figure).",
    ]
    print()
    for note in notes:
        print(note)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": machine,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": results,
            "pooled_ratio": pooled_ratio,
            "machinery": overhead,
            "forward_batches": batches,
            "placement": place,
            "placement_sweep": sweep,
            "notes": notes,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
