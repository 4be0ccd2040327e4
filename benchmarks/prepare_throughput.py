"""Tiles per second of ``prepare`` against a bare single-process loop, and its peak memory.

    python benchmarks/prepare_throughput.py [--images 24] [--repeats 3]

One run, same images, same settings (1024x768 particle images at full scale, 256 px tiles at
stride 192, 4 random crops, offline augmentation x2 with flips, rotation and brightness/contrast):

* **bare loop**: one process, written plainly with cv2/numpy/albumentations: decode image and
  mask, cut windows and crops, apply the same albumentations pipeline, write PNGs (the same
  encoder and compression). No manifest, no hashing, no pool.
* **prepare, 1 process** and **prepare, all cores** (``prepare.workers``): segbench's stage.

Then peak memory (resident set size, parent and the largest worker) of ``prepare`` with all
cores on two dataset sizes, each in a fresh process: it should not grow with the image count.
Prints medians over ``--repeats``; figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from segbench.config import parse_params
from segbench.io import read_csv, write_csv

SETTINGS = {
    "scale": 1.0,
    "tile_size": 256,
    "stride": 192,
    "random_crops": 4,
    "augment": {
        "mode": "offline",
        "factor": 2,
        "rotate": {"p": 0.5},
        "brightness_contrast": {"p": 0.5},
    },
}


def make_params(workers: int):
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["prepare"].update(SETTINGS, workers=workers)
    return parse_params(raw)


def make_raw(dest: Path, n_unique: int) -> Path:
    """Fetch ``n_unique`` synthetic 1024x768 images, all put in the train split."""
    from segbench.fetch import fetch

    params = make_params(1)
    raw = params.model_dump()
    raw["data"]["synthetic"]["n_images"] = n_unique
    fetch(parse_params(raw), dest)
    rows = read_csv(dest / "manifest.csv")
    for r in rows:
        r["split"] = "train"
    write_csv(dest / "manifest.csv", rows, list(rows[0]))
    return dest


def replicate(raw: Path, dest: Path, n: int) -> Path:
    """A raw folder of ``n`` images cycling over ``raw``'s (new ids, so new random draws)."""
    rows = read_csv(raw / "manifest.csv")
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    out = []
    for i in range(n):
        r = dict(rows[i % len(rows)])
        new_id = f"{r['id']}_r{i:04d}"
        for kind in ("image", "mask"):
            target = f"{kind}s/{new_id}.png"
            os.link(raw / r[kind], dest / target)  # hard links: no extra disk, same bytes
            r[kind] = target
        r["id"] = new_id
        out.append(r)
    write_csv(dest / "manifest.csv", out, list(rows[0]))
    return dest


def bare_loop(raw: Path, out: Path) -> int:
    """The same work as prepare's, written as one plain loop; returns the tile count."""
    from segbench.data.augment import build_augmenter

    cfg = make_params(1).prepare
    aug = build_augmenter(cfg.augment, cfg.tile_size)
    t, step = cfg.tile_size, cfg.step
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 0
    for r in read_csv(raw / "manifest.csv"):
        image = cv2.imread(str(raw / r["image"]), cv2.IMREAD_UNCHANGED)
        mask = (cv2.imread(str(raw / r["mask"]), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8)
        h, w = image.shape
        ys = [*range(0, h - t + 1, step)] + ([h - t] if (h - t) % step else [])
        xs = [*range(0, w - t + 1, step)] + ([w - t] if (w - t) % step else [])
        boxes = [(y, x) for y in ys for x in xs]
        boxes += [
            (int(rng.integers(0, h - t + 1)), int(rng.integers(0, w - t + 1))) for _ in range(4)
        ]
        for k, (y, x) in enumerate(boxes):
            img_t, msk_t = image[y : y + t, x : x + t], mask[y : y + t, x : x + t]
            for c in range(cfg.augment.factor):
                aug.set_random_seed(k * 10 + c)
                res = aug(image=img_t, mask=msk_t)
                name = f"{r['id']}_{k:03d}_{c}"
                params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
                cv2.imwrite(str(out / f"{name}_i.png"), res["image"], params)
                cv2.imwrite(str(out / f"{name}_m.png"), res["mask"] * 255, params)
                n += 1
    return n


def run_prepare(raw: Path, out: Path, workers: int) -> int:
    from segbench.prepare import prepare

    summary = prepare(make_params(workers).prepare, raw, out)
    return sum(summary["tiles"].values())


def timed(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - start, n


MEMORY_PROBE = """
import json, resource, sys
sys.path.insert(0, {bench!r})
from prepare_throughput import run_prepare
from pathlib import Path
n = run_prepare(Path({raw!r}), Path({out!r}), 0)
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"tiles": n, "parent_mb": self_kb / 1024, "worker_mb": child_kb / 1024}}))
"""


def peak_memory(raw: Path, out: Path) -> dict:
    """Peak RSS of prepare (all cores) in a fresh process: the parent and the largest worker."""
    code = MEMORY_PROBE.format(bench=str(Path(__file__).parent), raw=str(raw), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="images in the throughput set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs=2, default=[24, 96], help="memory sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segbench-prep-") as tmp:
        root = Path(tmp)
        base = make_raw(root / "base", 12)
        raw = replicate(base, root / "raw", args.images)
        runs: dict[str, list[tuple[float, int]]] = {"bare": [], "prepare_1": [], "prepare_all": []}
        for rep in range(args.repeats):
            for name, fn, extra in (
                ("bare", bare_loop, ()),
                ("prepare_1", run_prepare, (1,)),
                ("prepare_all", run_prepare, (0,)),
            ):
                out = root / f"out_{name}_{rep}"
                runs[name].append(timed(fn, raw, out, *extra))
                shutil.rmtree(out)
        from segbench.prepare import available_cores

        print(
            f"\n{platform.machine()}, {available_cores()} cores, Python "
            f"{platform.python_version()}; {args.images} images 1024x768, "
            f"median of {args.repeats}"
        )
        print("| run | tiles | median s | tiles/s | vs bare |")
        print("| --- | --- | --- | --- | --- |")
        bare_rate = None
        for name, label in (
            ("bare", "bare loop, 1 process"),
            ("prepare_1", "prepare, workers=1"),
            ("prepare_all", f"prepare, workers=0 ({available_cores()} processes)"),
        ):
            seconds = statistics.median(s for s, _ in runs[name])
            tiles = runs[name][0][1]
            rate = tiles / seconds
            bare_rate = bare_rate or rate
            print(f"| {label} | {tiles} | {seconds:.2f} | {rate:.0f} | {rate / bare_rate:.2f}x |")
        print("\n| images | tiles | parent peak MB | largest worker peak MB |")
        print("| --- | --- | --- | --- |")
        for n in args.sizes:
            data = replicate(base, root / f"mem_{n}", n)
            peaks = [peak_memory(data, root / f"mem_out_{n}_{r}") for r in range(args.repeats)]
            parent = statistics.median(p["parent_mb"] for p in peaks)
            worker = statistics.median(p["worker_mb"] for p in peaks)
            print(f"| {n} | {peaks[0]['tiles']} | {parent:.0f} | {worker:.0f} |")


if __name__ == "__main__":
    main()
