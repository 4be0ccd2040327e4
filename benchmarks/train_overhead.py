"""Seconds per training step: segbench's loop against a bare PyTorch loop, and data waiting.

    python benchmarks/train_overhead.py [--model unet] [--tile 128] [--steps 12] [--repeats 3]

Both arms train the same model (same seed, so the same initial weights), on the same tiles,
with the same optimiser (Adam), loss (Dice) and batch size, on this machine's CPU or GPU:

* **segbench**: :func:`segbench.training.loop.train_one_epoch` over segbench's DataLoader of
  :class:`~segbench.data.dataset.TileDataset` (per-item normalisation, seeded sampler), with the
  loss finiteness check, accumulation bookkeeping and progress bar;
* **bare**: the textbook loop over batches already normalised and stacked in memory.

Reports the median seconds per step over ``--repeats`` (arms interleaved, order alternated), the
median of the per-repeat ratios as segbench's overhead, and the
share of segbench's step time spent waiting for the next batch (time inside the DataLoader's
``__next__``). Targets: overhead at most 10 percent, data waiting under 5 percent.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from segbench.config import parse_params
from segbench.data.dataset import TileDataset
from segbench.devices import resolve_device
from segbench.fetch import fetch
from segbench.losses import build_loss
from segbench.models import build_model
from segbench.prepare import prepare
from segbench.training.distributed import Dist
from segbench.training.loop import loaders, seed_epoch, train_one_epoch

REPO = Path(__file__).resolve().parents[1]


class TimedLoader:
    """Wraps a loader: yields its first ``steps`` batches and adds up the time spent in next()."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps, self.waiting = loader, steps, 0.0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        it = iter(self.loader)
        for _ in range(self.steps):
            start = time.perf_counter()
            batch = next(it)
            self.waiting += time.perf_counter() - start
            yield batch


def make_params(tile: int, batch: int, model: str):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["synthetic"].update(n_images=12, height=384, width=512)
    raw["prepare"].update(scale=1.0, tile_size=tile, stride=tile, random_crops=2)
    raw["train"].update(batch_size=batch, scheduler="none", device="auto")
    raw["models"] = {model: raw["models"][model]}
    raw["ensembles"] = {}
    raw["sweep"]["enabled"] = False  # it sweeps sam_lora, which may not be here
    return parse_params(raw)


def fresh(model_name: str, params, device):
    torch.manual_seed(0)
    model = build_model(params.entry(model_name), name=model_name).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=params.train.lr), build_loss("dice")


def segbench_arm(model_name, params, tiles, device, steps: int) -> tuple[float, float]:
    """(seconds per step, seconds waiting for data per step)."""
    model, opt, loss_fn = fresh(model_name, params, device)
    prep = params.prepare
    _, sampler, loader, _ = loaders(params.train, prep.augment, prep.tile_size, tiles, Dist())
    seed_epoch(sampler, params.train.seed, 1)
    timed = TimedLoader(loader, steps)
    start = time.perf_counter()
    train_one_epoch(model, timed, loss_fn, opt, device, 1)
    _sync(device)
    total = time.perf_counter() - start
    return total / steps, timed.waiting / steps


def bare_arm(model_name, params, tiles, device, steps: int) -> float:
    model, opt, loss_fn = fresh(model_name, params, device)
    ds = TileDataset.from_dir(tiles, "train")
    b = params.train.batch_size
    xs = torch.stack([ds[i][0] for i in range(steps * b)]).to(device)
    ys = torch.stack([ds[i][1] for i in range(steps * b)]).to(device)
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        x, y = xs[i * b : (i + 1) * b], ys[i * b : (i + 1) * b]
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = make_params(args.tile, args.batch, args.model)
    device = resolve_device("auto")
    with tempfile.TemporaryDirectory(prefix="segbench-train-") as tmp:
        raw, tiles = Path(tmp) / "raw", Path(tmp) / "tiles"
        fetch(params, raw)
        prepare(params.prepare, raw, tiles)
        n_tiles = len(TileDataset.from_dir(tiles, "train"))
        steps = min(args.steps, n_tiles // args.batch)
        # One untimed step of each first: allocator and kernel warm-up is not overhead.
        segbench_arm(args.model, params, tiles, device, 1)
        bare_arm(args.model, params, tiles, device, 1)
        ours, waits, bare = [], [], []
        for rep in range(args.repeats):
            # Alternate which arm goes first: a shared 2-core VM drifts in speed over minutes,
            # so the comparison is made pairwise, repeat by repeat.
            arms = ["segbench", "bare"] if rep % 2 == 0 else ["bare", "segbench"]
            for arm in arms:
                if arm == "segbench":
                    step, wait = segbench_arm(args.model, params, tiles, device, steps)
                    ours.append(step)
                    waits.append(wait)
                else:
                    bare.append(bare_arm(args.model, params, tiles, device, steps))
    s, w, b = (statistics.median(v) for v in (ours, waits, bare))
    ratios = [o / r for o, r in zip(ours, bare, strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"\n{platform.machine()}, {device}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; {args.model}, batch {args.batch} x {args.tile}x{args.tile}, {steps} steps, "
        f"median of {args.repeats}"
    )
    print("| loop | s/step | vs bare | waiting for data |")
    print("| --- | --- | --- | --- |")
    print(f"| bare PyTorch, batches in memory | {b:.3f} | 1.00x | - |")
    print(
        f"| segbench train_one_epoch | {s:.3f} | {ratio:.3f}x ({100 * (ratio - 1):+.1f}%) | "
        f"{100 * w / s:.1f}% |"
    )
    print(f"paired ratios per repeat: {', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()
