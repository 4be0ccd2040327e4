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
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
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
    """``embed(tiles, compute)``: cached embeddings where present, ``compute`` for the rest."""

    def __init__(self, root: str | Path, encoder: nn.Module):
        self.dir = Path(root) / encoder_key(encoder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def embed(
        self, tiles: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(N, C, H, W) tiles -> (N, D, g, g) embeddings on the tiles' device.

        ``compute`` maps a batch of tiles to embeddings; it is called once, on the misses only,
        without gradients (the encoder is frozen whenever a cache is used).
        """
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
            with torch.no_grad():
                fresh = compute(tiles[missing]).float()
            for i, emb in zip(missing, fresh, strict=True):
                self._write(self.dir / f"{keys[i]}.pt", emb)
                found[i] = emb
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
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(emb.detach().cpu().clone(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
