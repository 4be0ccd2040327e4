"""The version of one split of the fetched data: a sha256 over its images and masks.

``data_version`` (``data/tiles/summary.json``) hashes the train and val tiles only, so nothing
said which test images a score came from. :func:`split_hash` hashes a split of ``data/raw`` as
it is stored: for each row of ``manifest.csv`` in that split, sorted by id, the id and the
bytes of its image and mask files. Fetch writes it into ``data/raw/summary.json``
(``test_data_hash``, ``val_data_hash``), and MLflow runs carry the test one as a tag.

File bytes, not decoded pixels: hashing needs no decoder (this module sits beside ``io``), and
it is what DVC's own hash of ``data/raw`` sees too. Rows of other splits are never read, so a
changed train image leaves the test hash as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from segbench.errors import SegbenchError
from segbench.io import read_csv

MANIFEST = "manifest.csv"


def split_hash(raw_dir: str | Path, split: str) -> str:
    """sha256 (64 hex digits) over the rows of ``split`` in ``raw_dir/manifest.csv``.

    Each row, in id order, adds its id and the bytes of its ``image`` and ``mask`` files
    (paths relative to ``raw_dir``), each framed by its length so that no two different splits
    give the same byte stream. A split with no rows hashes to sha256 of nothing.
    """
    raw_dir = Path(raw_dir)
    rows = sorted((r for r in read_csv(raw_dir / MANIFEST) if r["split"] == split), key=_id)
    digest = hashlib.sha256()
    for row in rows:
        _add(digest, row["id"].encode())
        for column in ("image", "mask"):
            _add(digest, _read(raw_dir, row, column))
        if row.get("instances"):  # object references; rows without them hash as before
            _add(digest, b"instances")
            _add(digest, _read(raw_dir, row, "instances"))
    return digest.hexdigest()


def _id(row: dict[str, str]) -> str:
    return row["id"]


def _add(digest, chunk: bytes) -> None:
    digest.update(len(chunk).to_bytes(8, "little"))
    digest.update(chunk)


def _read(raw_dir: Path, row: dict[str, str], column: str) -> bytes:
    path = raw_dir / row[column]
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SegbenchError(
            f"{path}: listed as the {column} of {row['id']!r} in {raw_dir / MANIFEST} but "
            "missing; re-run the fetch stage"
        ) from None
