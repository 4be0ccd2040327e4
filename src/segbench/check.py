"""Check ``params.yaml`` as a whole before any stage runs (the DVC stage ``check``).

DVC deletes a stage's outputs before it runs the stage's command, so a bad value found by the
stage itself costs the previous good output (a ``data.split`` that does not sum to 1 emptied
``data/raw``). The ``check`` stage depends on every params key and every other stage depends on
its output, so DVC runs it first: a bad value stops ``dvc repro`` before anything is deleted.

Its output, ``checks/params.json``, has the same content whenever the params are valid, so a
changed key re-runs ``check`` and only the stages that track that key, not the whole pipeline.
"""

from __future__ import annotations

from pathlib import Path

from segbench.config import Params
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, write_json

# What checks/params.json holds: constant, so that downstream stages see no change.
CHECKED = {"checked": "params.yaml", "by": "segbench.check"}


def check_params(params: Params, source: str = "params.yaml") -> list[str]:
    """Raise one :class:`SegbenchError` (naming ``source``, the params file) listing every
    problem found beyond the schema, which ``params`` has already passed: unknown encoders,
    missing weight or checkpoint files, a missing data folder. Returns the models checked."""
    from segbench.models.smp_models import check_encoder_name

    problems = []
    data = params.data
    if data.source in ("folder", "hf") and data.path is not None and not Path(data.path).exists():
        problems.append(f"data.path: {data.path} does not exist")
    for name, entry in params.models.items():
        key = f"models.{name}"
        try:
            if hasattr(entry, "encoder_name"):
                check_encoder_name(entry.encoder_name, key=f"{key}.encoder_name")
        except SegbenchError as exc:
            problems.append(str(exc))
        for field in ("encoder_weights", "checkpoint"):
            path = getattr(entry, field, None)
            if path is not None and not Path(path).is_file():
                problems.append(f"{key}.{field}: {path} does not exist (a local file is needed)")
    if problems:
        raise SegbenchError(f"{source}: " + "; ".join(problems))
    from segbench.config import not_applicable

    for name, reason in not_applicable(params).items():
        print(f"check: models.{name} is skipped on this data: {reason}")
    return list(params.models)


def write_check(params: Params, out_dir: str | Path, source: str = "params.yaml") -> list[str]:
    """Check ``params`` and write ``out_dir/params.json``; return the models checked."""
    models = check_params(params, source)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "params.json", CHECKED)
    return models
