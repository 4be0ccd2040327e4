"""Entries the pipeline skips because they cannot run on the data, and what their stages write.

On data with several classes, zero-shot SAM entries (their prompts mark one class) are not run
(:func:`segbench.config.not_applicable`). The pipeline keeps going: ``check`` names them, their
``train@`` stage writes ``models/<entry>/skipped.json`` with the reason, their ``evaluate@``
stage writes ``eval/<entry>/metrics.json`` as ``{"skipped": reason}`` with the other outputs
empty, and the report lists them under a note. Asking for one directly (``segbench train`` or
``evaluate`` without ``--skip-not-applicable``) is an error that gives the same reason.
"""

from __future__ import annotations

from pathlib import Path

from segbench.evalmetrics import write_extra_index, write_skipped
from segbench.io import atomic_dir, read_json, write_csv, write_json
from segbench.modelcard import HISTORY_FIELDS

SKIPPED_FILE = "skipped.json"


def write_skipped_model(out_dir: str | Path, reason: str) -> None:
    """``out_dir`` (a models/<entry> directory) holding only why it holds no model."""
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SKIPPED_FILE, {"skipped": reason})


def skipped_model(model_dir: str | Path) -> str | None:
    """The reason a model directory was skipped, or None."""
    path = Path(model_dir) / SKIPPED_FILE
    return read_json(path).get("skipped") if path.is_file() else None


def write_skipped_eval(out_dir: str | Path, reason: str) -> None:
    """An evaluation directory with every output the DVC stage declares, and no result."""
    with atomic_dir(out_dir) as tmp:
        (tmp / "pred").mkdir()
        write_csv(tmp / "per_image.csv", [], ["id"])
        write_csv(tmp / "threshold.csv", [], ["threshold", "val_score", "val_dice"])
        write_csv(tmp / "seeds.csv", [], ["id"])
        write_csv(tmp / "history.csv", [], HISTORY_FIELDS)
        write_csv(tmp / "confusion.csv", [], ["reference"])
        write_csv(tmp / "objects.csv", [], ["image"])
        write_json(tmp / "card.json", {"skipped": reason})
        write_extra_index(tmp, points_curve=False, auto_compare=False)
        write_skipped(tmp, reason)
