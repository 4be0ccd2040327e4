"""Check ``params.yaml`` as a whole before any stage runs (the DVC stage ``check``).

DVC deletes a stage's outputs before it runs the stage's command, so a bad value found by the
stage itself costs the previous good output (a ``data.split`` that does not sum to 1 emptied
``data/raw``). The ``check`` stage depends on every params key and every other stage depends on
its output, so DVC runs it first: a bad value stops ``dvc repro`` before anything is deleted.

It also checks what the machine must provide (pre-flight): the files params name (SAM
checkpoints, with the official URL and sha256 to fetch them by; encoder weights; a saved ``hf``
dataset, with the command that writes it) and, where training runs on CUDA, enough GPUs for
``devices``.

Its output, ``checks/params.json``, has the same content whenever the params are valid, so a
changed key re-runs ``check`` and only the stages that track that key, not the whole pipeline.
"""

from __future__ import annotations

import os
from pathlib import Path

from segbench.config import Params
from segbench.devices import devices_problem
from segbench.downloads import (
    CheckpointUse,
    missing_checkpoint,
    missing_hf_folder,
    official_checkpoint,
)
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, write_json

# What checks/params.json holds: constant, so that downstream stages see no change.
CHECKED = {"checked": "params.yaml", "by": "segbench.check"}


def check_params(params: Params, source: str = "params.yaml") -> list[str]:
    """Raise one :class:`SegbenchError` (naming ``source``, the params file) listing every
    problem found beyond the schema, which ``params`` has already passed: unknown encoders,
    missing weight or checkpoint files, a missing data folder, more DDP processes than CUDA
    GPUs. Returns the models checked."""
    from segbench.models.smp_models import check_encoder_name

    problems = []
    data = params.data
    if data.source in ("folder", "hf") and data.path and not Path(data.path).expanduser().exists():
        if data.source == "hf":
            problems.append(missing_hf_folder(data.path, data.hf.name, data.hf.revision))
        else:
            problems.append(f"data.path: {data.path} does not exist")
    for name, entry in params.models.items():
        key = f"models.{name}"
        try:
            if hasattr(entry, "encoder_name"):
                check_encoder_name(entry.encoder_name, key=f"{key}.encoder_name")
        except SegbenchError as exc:
            problems.append(str(exc))
        weights = getattr(entry, "encoder_weights", None)
        if weights is not None and not Path(weights).is_file():
            problems.append(
                f"{key}.encoder_weights: {weights} does not exist (a local file is needed)"
            )
        if entry.kind == "torch":
            problems.append(devices_problem(name, entry, params.train))
    problems += _checkpoint_problems(params)
    problems = list(dict.fromkeys(p for p in problems if p))  # entries may share a train key
    if problems:
        raise SegbenchError(f"{source}: " + "; ".join(problems))
    from segbench.config import not_applicable

    for name, reason in not_applicable(params).items():
        print(f"check: models.{name} is skipped on this data: {reason}")
    return list(params.models)


def _checkpoint_problems(params: Params) -> list[str]:
    """One problem per missing SAM checkpoint file, naming every entry that uses it (and one
    note per official file that is there but loaded without a sha256 to check it against)."""
    files: dict[str, tuple[str, list[CheckpointUse]]] = {}  # normalised path -> as written
    for name, entry in params.models.items():
        if getattr(entry, "checkpoint", None) is not None:
            # one file written two ways (./a.pth, a.pth) is still one file to fetch
            key = os.path.normpath(entry.checkpoint)
            use = CheckpointUse(f"models.{name}", entry.variant, entry.sha256)
            files.setdefault(key, (entry.checkpoint, []))[1].append(use)
    problems = []
    for path, uses in files.values():
        if not Path(path).is_file():  # as the loader reads it (no ~ expansion)
            keys = ", ".join(f"{u.key}.checkpoint" for u in uses)
            problems.append(f"{keys}: {path} does not exist; {missing_checkpoint(path, uses)}")
            continue
        unverified = [u for u in uses if u.sha256 is None]
        ckpt = official_checkpoint(path)
        if unverified and ckpt is not None:
            keys = ", ".join(f"{u.key}.sha256" for u in unverified)
            verb = "is" if len(unverified) == 1 else "are"
            print(
                f"check: {keys} {verb} null, so {path} is loaded unverified; the official "
                f"{ckpt.file_name} has sha256 {ckpt.sha256}"
            )
    return problems


def write_check(params: Params, out_dir: str | Path, source: str = "params.yaml") -> list[str]:
    """Check ``params`` and write ``out_dir/params.json``; return the models checked."""
    models = check_params(params, source)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "params.json", CHECKED)
    return models
