"""What segbench never downloads itself, and the one line that tells a user how to get it.

segbench runs without network (DESIGN: the machines it is built on have none), so the official
Segment Anything checkpoints and Hugging Face hub datasets are fetched by the user, once, on a
machine that has it. This module is the one place that knows where they come from: the
pre-flight check (:mod:`segbench.check`), the checkpoint loader and the ``hf`` data source all
phrase their "what to download and where" from it, and the README's table lists the same files.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class SamCheckpoint:
    """One official checkpoint of facebookresearch/segment-anything (its README, "Model
    Checkpoints"): a ``torch.save`` state dict of the whole ``Sam`` model."""

    variant: str
    file_name: str
    sha256: str  # hex digest of the file as served
    size: int  # bytes

    @property
    def url(self) -> str:
        return SAM_URL + self.file_name

    @property
    def size_text(self) -> str:
        """Decimal units, as download tools print them: ``375 MB``, ``2.6 GB``."""
        return f"{self.size / 1e6:.0f} MB" if self.size < 1e9 else f"{self.size / 1e9:.1f} GB"


SAM_CHECKPOINTS: dict[str, SamCheckpoint] = {
    c.variant: c
    for c in (
        SamCheckpoint(
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
        ),
        SamCheckpoint(
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1_249_524_607,
        ),
        SamCheckpoint(
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
        ),
    )
}


@dataclass(frozen=True)
class CheckpointUse:
    """One place that asks for a checkpoint file: the key prefix that names it
    (``models.sam_box``; empty where no params key is known), its variant and its sha256."""

    key: str = ""
    variant: str | None = None
    sha256: str | None = None


def official_checkpoint(path: str | Path | None = None, variant: str | None = None):
    """The official :class:`SamCheckpoint` that ``path`` is by its file name, else the one of
    ``variant`` (``tiny`` and unknown names have none: None)."""
    if path is not None:
        for ckpt in SAM_CHECKPOINTS.values():
            if Path(path).name == ckpt.file_name:
                return ckpt
    return SAM_CHECKPOINTS.get(variant) if variant is not None else None


def missing_checkpoint(path: str | Path, uses: Sequence[CheckpointUse] = ()) -> str:
    """What to do about a checkpoint ``path`` that does not exist, for the ``uses`` that name it
    (the caller says which key and file are missing): with an official file,
    ``download <URL> (375 MB) to <path> and set models.sam_box.sha256: <digest>``."""
    uses = list(uses) or [CheckpointUse()]
    variants = {u.variant for u in uses}
    ckpt = official_checkpoint(path, next(iter(variants)) if len(variants) == 1 else None)
    if ckpt is None:
        return "put the checkpoint file there or fix the path (null = random weights)"
    text = f"download {ckpt.url} ({ckpt.size_text}) to {path}"
    unset = [u for u in uses if (u.sha256 or "").strip().lower() != ckpt.sha256]
    if unset:
        text += f" and set {_keys(unset, 'sha256')}: {ckpt.sha256}"
    # A file named after one variant but asked for as another fails its load (build_sam).
    other = [u for u in uses if u.variant is not None and u.variant != ckpt.variant]
    if other:
        text += f" and {_keys(other, 'variant')}: {ckpt.variant}"
    return text


def _keys(uses: Sequence[CheckpointUse], field: str) -> str:
    return ", ".join(f"{u.key}.{field}" if u.key else field for u in uses)


def hf_save_command(name: str | None, revision: str | None, path: str | Path) -> str:
    """The shell command that writes hub dataset ``name`` at ``revision`` to the folder
    ``path`` with ``save_to_disk`` (what ``data.path`` reads); ``name`` None -> a placeholder.
    ``datasets`` >= 4 runs no loading script, and the command passes no ``trust_remote_code``."""
    path = str(Path(path).expanduser())
    code = (
        f"import datasets; datasets.load_dataset({name or '<hub id>'!r}, "
        f"revision={revision!r}).save_to_disk({path!r})"
    )
    # Double quotes read best; anything the shell would expand inside them is quoted instead.
    if any(ch in code for ch in '"$`\\!'):
        return f"python -c {shlex.quote(code)}"
    return f'python -c "{code}"'


def missing_hf_folder(path: str, name: str | None, revision: str | None) -> str:
    """One line for a ``data.path`` (``data.source: hf``) that does not exist."""
    if name is None:
        return (
            f"data.path: {path} does not exist and data.hf.name is null; set data.hf.name to "
            f"the dataset's hub id and write the folder with: {hf_save_command(None, None, path)}"
        )
    command = hf_save_command(name, revision, path)
    return f"data.path: {path} does not exist; write it with: {command}"


def unreachable_hub(name: str, revision: str | None, reason: str) -> str:
    """One line for a hub dataset that could not be fetched for want of network."""
    folder = name.rstrip("/").rsplit("/", 1)[-1]
    at = f" at revision {revision!r}" if revision else ""
    return (
        f"data.hf.name: cannot load {name!r}{at}: the hub could not be reached ({reason}); on a "
        f"machine with network run: {hf_save_command(name, revision, folder)}, then copy the "
        f"folder {folder} here and set data.path to it"
    )
