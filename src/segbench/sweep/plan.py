"""What a sweep depends on, written to a file that its DVC stage depends on.

The sweep's trials read ``sweep``, ``train``, ``prepare`` and one entry of ``models`` (the
swept one). DVC can only track a params key that exists, so the ``sweep`` stage does not name
``models.<sweep.model>`` itself: the ``sweep_plan`` stage writes :func:`sweep_plan` of the params
to ``plans/sweep.json`` (it runs in a second, whenever ``models``, ``sweep``, ``train`` or
``prepare`` change), and the ``sweep`` stage depends on that file. An unchanged plan leaves the
sweep up to date (tuning another model's params never re-runs it); a disabled sweep's plan says
only that, so the swept entry may be absent from ``models``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segbench.config import Params
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_json, write_json

PLAN_FILE = "sweep.json"


def sweep_plan(params: Params) -> dict[str, Any]:
    """Everything a sweep's results depend on besides the tiles (JSON-ready)."""
    sweep = params.sweep
    if not sweep.enabled:
        return {"enabled": False}
    return {
        "enabled": True,
        "entry": sweep.model,
        "model": params.entry(sweep.model).model_dump(mode="json"),
        "sweep": sweep.model_dump(mode="json"),
        # What the swept entry trains with: train, with the entry's own keys set.
        "train": params.entry(sweep.model).train_config(params.train).model_dump(mode="json"),
        "prepare": params.prepare.model_dump(mode="json"),
    }


def write_plan(params: Params, out_dir: str | Path) -> dict[str, Any]:
    """Write ``<out_dir>/sweep.json``; return the plan."""
    plan = sweep_plan(params)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / PLAN_FILE, plan)
    return plan


def check_plan(params: Params, plan_dir: str | Path) -> None:
    """Stop if ``<plan_dir>/sweep.json`` is not the plan of ``params`` (a sweep run by hand
    after params changed, without its plan stage): its results would be recorded against
    settings they were not made with."""
    path = Path(plan_dir) / PLAN_FILE
    written = read_json(path)
    if json.loads(json.dumps(sweep_plan(params))) != written:
        raise SegbenchError(
            f"{path}: the sweep plan is out of date with the params; run `dvc repro sweep` "
            "(which writes the plan first) or `segbench sweep-plan`"
        )
