"""SAM fine-tuning costs, side by side on one SAM configuration, in one run.

    python benchmarks/sam_finetune.py [--variant tiny] [--image-size 512] [--tiles 16]
                                      [--epochs 3] [--repeats 3]

1. Decoder-only epoch time: embeddings cached on disk (segbench's way) against recomputing the
   encoder at every step. Epoch 1 fills the cache; the target is >= 10x faster from epoch 2.
2. LoRA (rank 4, q and v, every block) against full fine-tuning of the encoder (both with the
   decoder): seconds per step and peak memory. Peak memory is GPU memory on CUDA; on CPU it is
   the peak RSS of a fresh process per configuration (``--one`` runs a single configuration).
3. Trainable parameters of ViT-B with LoRA on q and v of all 12 blocks at ranks 4, 128, 256,
   512 and 1024, counted on the meta device (no weights allocated), next to the reference
   study's figures.

Random weights: timings and counts do not depend on the values. Figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from segbench.config import load_params
from segbench.models import build_model
from segbench.sam.build import build_sam
from segbench.sam.lora import apply_lora

REPO = Path(__file__).resolve().parents[1]
REFERENCE = {128: 2.8e6, 256: 5.73e6, 512: 11.44e6, 1024: 22.9e6}  # the reference LoRA study


def _batches(n_tiles: int, batch: int, size: int = 256):
    g = torch.Generator().manual_seed(0)
    tiles = torch.randn(n_tiles, 1, size, size, generator=g)
    masks = (torch.rand(n_tiles, 1, size, size, generator=g) > 0.7).float()
    return [(tiles[i : i + batch], masks[i : i + batch]) for i in range(0, n_tiles, batch)]


def sam_entry(name: str, args, **changes):
    """params.yaml's ``models.<name>`` at the benchmark's variant and input size."""
    entry = load_params(REPO / "params.yaml").models[name]
    changes |= {"variant": args.variant, "image_size": args.image_size}
    return type(entry).model_validate({**entry.model_dump(), **changes})


def _step(model, opt, x, y) -> None:
    opt.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
    opt.step()


def decoder_epochs(args, cached: bool) -> list[float]:
    """Seconds per epoch of decoder-only training, with or without the embedding cache."""
    torch.manual_seed(0)
    model = build_model(sam_entry("sam_decoder", args, embedding_cache=None)).train()
    with tempfile.TemporaryDirectory() as cache_dir:
        if cached:
            model.use_cache(cache_dir)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        batches = _batches(args.tiles, args.batch)
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            for x, y in batches:
                _step(model, opt, x, y)
            times.append(time.perf_counter() - start)
    return times


def one(args) -> dict:
    """Seconds per step and peak memory of one encoder fine-tuning configuration."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.one == "lora":
        model = build_model(sam_entry("sam_lora", args, rank=4))
    else:  # full: the whole encoder trains with the decoder
        model = build_model(sam_entry("sam_decoder", args, embedding_cache=None))
        for p in model.sam.image_encoder.parameters():
            p.requires_grad_(True)
    model = model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    x, y = (t.to(device) for t in _batches(args.batch, args.batch)[0])
    _step(model, opt, x, y)  # warm-up: allocator, optimiser state
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        _step(model, opt, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "step_s": statistics.median(times),
        "peak_mb": peak,
        "trainable": sum(p.numel() for p in trainable),
    }


def encoder_config(args, name: str) -> dict:
    cmd = [sys.executable, __file__, "--one", name, "--variant", args.variant]
    cmd += ["--image-size", str(args.image_size), "--batch", str(args.batch)]
    cmd += ["--steps", str(args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def lora_counts() -> dict[int, int]:
    counts = {}
    for rank in (4, 128, 256, 512, 1024):
        with torch.device("meta"):
            sam = build_sam("vit_b", image_size=1024)
        apply_lora(sam, rank=rank, targets=("q", "v"))
        counts[rank] = sum(p.numel() for n, p in sam.named_parameters() if ".lora_" in n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return

    print(
        f"machine: {platform.node()} {platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}"
    )
    print(
        f"SAM {args.variant} at {args.image_size} px, {args.tiles} tiles of 256 px, "
        f"batch {args.batch}, median of {args.repeats} repeats\n"
    )

    rows = {"cached": [], "recomputed": []}
    for _ in range(args.repeats):  # interleaved, so drift of this machine hits both alike
        rows["recomputed"].append(decoder_epochs(args, cached=False))
        rows["cached"].append(decoder_epochs(args, cached=True))
    print("1. decoder-only, seconds per epoch (epoch 1 fills the cache)")
    for name, runs in rows.items():
        per_epoch = [statistics.median(r[e] for r in runs) for e in range(args.epochs)]
        print(f"   {name:10s} " + "  ".join(f"e{i + 1} {t:6.2f}" for i, t in enumerate(per_epoch)))
    later = [statistics.median(r[e] for r in rows[k] for e in range(1, args.epochs)) for k in rows]
    print(f"   from epoch 2: recomputed / cached = {later[1] / later[0]:.1f}x\n")

    print("2. encoder fine-tuning, per step (median) and peak memory")
    results = {
        name: [encoder_config(args, name) for _ in range(args.repeats)] for name in ("lora", "full")
    }
    for name, runs in results.items():
        step = statistics.median(r["step_s"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        print(
            f"   {name:5s} {step:7.3f} s/step  peak {peak:8.0f} MB  "
            f"trainable {runs[0]['trainable']:,}"
        )
    print()
    print("3. ViT-B, LoRA on q and v of all 12 blocks: trainable LoRA parameters")
    for rank, n in lora_counts().items():
        ref = REFERENCE.get(rank)
        print(
            f"   rank {rank:5d}: {n / 1e6:7.3f} M"
            + (f"   (reference {ref / 1e6:.2f} M)" if ref else "")
        )


if __name__ == "__main__":
    main()
