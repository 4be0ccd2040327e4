"""On-disk cache of SAM image embeddings, so decoder-only epochs after the first skip the encoder.

Layout: ``<root>/<encoder key>/<tile key>.pt``, one (D, g, g) float32 tensor per tile.

- The encoder key is a hash of the frozen image encoder's weights and input size: a different
  checkpoint, variant, image size or random initialisation never reads another's embeddings.
- The tile key is a hash of the tile exactly as the model receives it (after augmentation; its
  shape included, so a grey (1, H, W) tile and an RGB (3, H, W) one never share a key), so
  offline-augmented tiles hit the cache from the second epoch on, while online augmentation,
  which makes every epoch's tiles new, misses every time (correct, only not faster).

Files are written to a temporary name and renamed, so a killed run never leaves a half-written
embedding; an unreadable file is recomputed and replaced.

Cost figures must not depend on what an earlier stage left on disk: inside
:meth:`EmbeddingCache.off` the encoder runs on every tile and nothing is read, written or counted
(what a user's first image costs), and :attr:`EmbeddingCache.fill_seconds` is the wall time spent
filling the cache (encoder passes and writes on misses), which training reports apart from its
own time. :func:`caches_in` finds the caches a model reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn


def encoder_key(encoder: nn.Module) -> str:
    """16 hex digits identifying an encoder's weights, buffers and input size."""
    digest = hashlib.sha256(str(getattr(encoder, "img_size", "")).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def tile_key(tile: torch.Tensor) -> str:
    """Hash of one (C, H, W) input tile: its shape, dtype and values."""
    t = tile.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:24]


class EmbeddingCache:
    """``embed(tiles, compute)``: cached embeddings where present, ``compute`` for the rest.

    ``hits`` and ``misses`` count tiles; ``fill_seconds`` is the wall time of the misses (the
    encoder on them and the writes, CUDA synchronised). The directory is made at the first write.
    """

    def __init__(self, root: str | Path, encoder: nn.Module):
        self.dir = Path(root) / encoder_key(encoder)
        self.hits = self.misses = 0
        self.fill_seconds = 0.0
        self.enabled = True

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        """Bypass the cache inside the block: :meth:`embed` runs ``compute`` on every tile,
        reads and writes no file and counts nothing. Restores the previous state after."""
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    def embed(
        self, tiles: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(N, C, H, W) tiles -> (N, D, g, g) float32 embeddings on the tiles' device.

        ``compute`` maps a batch of tiles to embeddings; it is called once, on the misses only
        (on all tiles while :meth:`off`), without gradients (the encoder is frozen whenever a
        cache is used).
        """
        if not self.enabled:
            with torch.no_grad():  # exactly what a miss computes, without the disk
                return compute(tiles).float()
        keys = [tile_key(t) for t in tiles]
        found: dict[int, torch.Tensor] = {}
        for i, key in enumerate(keys):
            cached = self._read(self.dir / f"{key}.pt")
            if cached is not None:
                found[i] = cached.to(tiles.device)
        missing = [i for i in range(len(keys)) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            start = _clock(tiles.device)
            with torch.no_grad():
                fresh = compute(tiles[missing]).float()
            for i, emb in zip(missing, fresh, strict=True):
                self._write(self.dir / f"{keys[i]}.pt", emb)
                found[i] = emb
            self.fill_seconds += _clock(tiles.device) - start
        return torch.stack([found[i] for i in range(len(keys))])

    @staticmethod
    def _read(path: Path) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # damaged (e.g. a disk filled up): recompute and overwrite it
            return None
        return value if isinstance(value, torch.Tensor) else None

    @staticmethod
    def _write(path: Path, emb: torch.Tensor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(emb.detach().cpu().clone(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def caches_in(model: object) -> list[EmbeddingCache]:
    """The distinct embedding caches ``model`` reads: its own ``cache`` attribute and, for a
    torch module, its submodules' (an ensemble's SAM members); [] for a model without one."""
    parts = list(model.modules()) if isinstance(model, nn.Module) else [model]
    found: list[EmbeddingCache] = []
    for part in parts:
        cache = getattr(part, "cache", None)
        if isinstance(cache, EmbeddingCache) and not any(cache is c for c in found):
            found.append(cache)
    return found


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on a CUDA ``device`` has finished (CUDA
    runs asynchronously: without the wait, an encoder pass would be timed as free)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
