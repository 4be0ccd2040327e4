"""The sweep's best configuration, promoted into ``train@<model>`` when the entry asks for it.

``promote`` writes one small file per ``models`` entry (``<out_dir>/<name>.json``), which the
entry's ``train@`` stage depends on. Entries without ``from_sweep: true`` get a file that never
changes, so a new sweep retrains only the entry that takes its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segbench.config import Params
from segbench.errors import SegbenchError
from segbench.io import atomic_dir, read_json, write_json
from segbench.sweep.space import trial_params


def _from_sweep(params: Params, name: str) -> bool:
    return bool(getattr(params.entry(name), "from_sweep", False))


def promote(params: Params, best_json: str | Path, out_dir: str | Path) -> dict[str, dict]:
    """Write ``<out_dir>/<entry>.json`` for every models entry; return them by entry."""
    best_json = Path(best_json)
    best = read_json(best_json) if best_json.is_file() else {"model": None, "config": {}}
    files: dict[str, dict[str, Any]] = {}
    for name in params.models:
        if not _from_sweep(params, name):
            files[name] = {"from_sweep": False}
            continue
        if best.get("model") != name or not best.get("config"):
            raise SegbenchError(
                f"models.{name}.from_sweep: {best_json} holds no sweep of {name} (it tuned "
                f"{best.get('model')}); run `dvc repro sweep` with sweep.model: {name} and "
                "sweep.enabled: true"
            )
        files[name] = {
            "from_sweep": True,
            "config": best["config"],
            # What the sweep chose on and its value there (a best.json written before it
            # said so chose on the pooled Dice).
            "metric": best.get("metric", "best_val_dice"),
            "value": best["value"],
            "trial": best["trial"],
            "experiment": best["experiment"],
        }
    with atomic_dir(out_dir) as tmp:
        for name, payload in files.items():
            write_json(tmp / f"{name}.json", payload)
    return files


def promoted_params(
    params: Params, name: str, promoted: str | Path | None
) -> tuple[Params, dict[str, Any] | None]:
    """The params ``train@<name>`` trains with, and the promoted values: the sweep's best
    values applied when the entry has ``from_sweep: true``, else ``params`` unchanged and None."""
    if not _from_sweep(params, name):
        return params, None
    if promoted is None or not Path(promoted).is_file():
        raise SegbenchError(
            f"models.{name}.from_sweep: no promoted configuration ({promoted or 'no --promoted'}"
            "); run `dvc repro promote` (after the sweep) or set from_sweep: false"
        )
    payload = read_json(promoted)
    if not payload.get("from_sweep"):
        raise SegbenchError(
            f"models.{name}.from_sweep: {promoted} is out of date; run `dvc repro promote`"
        )
    return trial_params(params, payload["config"], epochs=None), payload
