"""``train_repeats(name, params, tiles_dir, out_dir) -> metrics``: one model, several seeds.

A single training is one draw of initial weights, data order and augmentation: a gap between two
models that a second seed would erase is not a property of the models. With
``train.repeats`` = R > 1 (or the entry's own ``train: {repeats: R}``) a torch model is trained
R times on the same tiles, with seeds ``seed``, ``seed + 1``, ... ``seed + R - 1``; every
training is :func:`segbench.training.train`, logged to MLflow as its own run.

With k-fold cross-validation (``data.split.folds`` = k) a torch model is trained once per fold
and seed: the fold-``f`` model trains on the other folds' tiles and is validated on fold ``f``
(:mod:`segbench.data.split`); fold 0 is the plain train/val split.

Output layout (``out_dir``): the first run's (fold 0, first seed) model directory as
:func:`train` writes it (so ``predict``, ensembles and everything that reads one model use it
unchanged), plus::

    repeats/<k>/        the model directory of the k-th further run (its card: fold, seed)
    repeats.json        {"folds": [...], "seeds": [...], "best_val_score": [...],
                         "train_seconds": [...]}, one entry per run

Classical and zero-shot entries are deterministic given their settings: they are fitted once
whatever ``repeats`` says (a second fit would give the same model).

While the seeds train, each finished one waits in ``<out_dir's parent>/.<name>.repeats/<seed>``
with the fingerprint it was trained under: a killed run trains again only the seeds not yet
finished (and the one in progress continues from its own per-epoch checkpoint). ``out_dir``
itself is written in one atomic step once every seed is done, so no half set of seeds is ever
taken for the model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from segbench.checkpoint import fingerprint
from segbench.codedeps import module_digest
from segbench.config import Params
from segbench.io import atomic_dir, read_json, write_json
from segbench.modelcard import REPEATS_DIR
from segbench.training.fit import train

REPEATS_FILE = "repeats.json"
_DONE = "fingerprint.json"  # beside a finished seed's staged model: what it was trained under


def repeat_count(params: Params, name: str) -> int:
    """How many times ``models.<name>`` is trained: ``repeats`` of its training configuration
    for a torch model, 1 for the others."""
    entry = params.entry(name)
    return entry.train_config(params.train).repeats if entry.kind == "torch" else 1


def fold_count(params: Params, name: str) -> int:
    """How many cross-validation folds ``models.<name>`` trains on: ``data.split.folds`` for a
    torch model (1 without folds), 1 for the others (they fit on fold 0's split)."""
    entry = params.entry(name)
    return (params.data.split.folds or 1) if entry.kind == "torch" else 1


def runs(params: Params, name: str) -> list[tuple[int, int]]:
    """The ``(fold, seed)`` of every training of ``models.<name>``, the model itself first:
    each fold with seeds ``seed`` ... ``seed + repeats - 1``."""
    base = params.entry(name).train_config(params.train).seed
    return [
        (fold, base + k)
        for fold in range(fold_count(params, name))
        for k in range(repeat_count(params, name))
    ]


def seed_params(params: Params, name: str, seed: int) -> Params:
    """``params`` with ``models.<name>`` training under ``seed`` (the entry's own train key,
    so that other entries and the card's ``train`` section agree)."""
    return params.with_overrides(
        {f"models.{name}.train.seed": seed}, source=f"params.yaml (repeat of {name})"
    )


def train_repeats(
    name: str,
    params: Params,
    tiles_dir: str | Path,
    out_dir: str | Path,
    *,
    promoted: dict[str, Any] | None = None,
    resume: bool = True,
) -> dict:
    """Train ``models.<name>`` once per :func:`runs` entry (every fold, every seed) into
    ``out_dir`` (module doc); return the first run's metrics plus ``repeats``, ``seeds``,
    ``folds`` and, per run, ``best_val_score`` and ``train_seconds`` lists. With one run this
    is exactly :func:`train`."""
    todo = runs(params, name)
    if len(todo) == 1:
        return train(name, params, tiles_dir, out_dir, promoted=promoted, resume=resume)
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.repeats"
    main = int(os.environ.get("RANK", 0)) == 0
    results, first = [], None
    for k, (fold, seed) in enumerate(todo):
        p = seed_params(params, name, seed)
        staged = staging / f"f{fold}s{seed}"
        fp = _fingerprint(p, name, tiles_dir, promoted, fold)
        done = staged / _DONE
        what = f"fold {fold}, seed {seed}" if fold_count(params, name) > 1 else f"seed {seed}"
        if resume and done.is_file() and read_json(done) == fp:
            print(f"train@{name}: {what} ({k + 1}/{len(todo)}) already trained, kept")
            results.append(_summary(read_json(staged / "card.json")))
            continue
        print(f"train@{name}: {what} ({k + 1}/{len(todo)})", flush=True)
        metrics = train(
            name,
            p,
            tiles_dir,
            staged,
            promoted=promoted,
            resume=resume,
            run_name=f"{name} {what}",
            tags={"segbench.repeat": str(k), "segbench.fold": str(fold)},
            fold=fold,
        )
        if main:
            write_json(done, fp)
        results.append(
            {"best_val_score": metrics.get("best_val_score"), "seconds": metrics["train_seconds"]}
        )
        if k == 0:
            first = metrics
    if not main:
        return {}
    with atomic_dir(out_dir) as tmp:
        dirs = [staging / f"f{fold}s{seed}" for fold, seed in todo]
        _copy_model(dirs[0], tmp)
        for k, src in enumerate(dirs[1:], start=1):
            _copy_model(src, tmp / REPEATS_DIR / str(k))
        write_json(
            tmp / REPEATS_FILE,
            {
                "folds": [fold for fold, _ in todo],
                "seeds": [seed for _, seed in todo],
                "best_val_score": [r["best_val_score"] for r in results],
                "train_seconds": [r["seconds"] for r in results],
            },
        )
    shutil.rmtree(staging, ignore_errors=True)
    if first is None:  # the first run was kept from a killed run: its card has its figures
        first = {"train_seconds": results[0]["seconds"], **_summary_only(results[0])}
    return {
        **first,
        "repeats": repeat_count(params, name),
        "seeds": [seed for _, seed in todo],
        "folds": [fold for fold, _ in todo],
        "seed_best_val_score": [r["best_val_score"] for r in results],
        "seed_train_seconds": [r["seconds"] for r in results],
    }


def _fingerprint(params: Params, name: str, tiles_dir, promoted, fold: int) -> dict:
    """What a staged seed must have been trained under to be kept: the entry, the training
    configuration, the preparation, the data version, the promoted values, the training code."""
    entry = params.entry(name)
    summary = read_json(Path(tiles_dir) / "summary.json")
    config = {
        "entry": entry.model_dump(mode="json"),
        "train": entry.train_config(params.train).model_dump(mode="json"),
        "prepare": params.prepare.model_dump(mode="json"),
        "data_version": summary["data_version"],
        "promoted": promoted,
        "fold": fold,
    }
    return fingerprint(config, module_digest("segbench.training.fit"))


def _summary(card: dict) -> dict:
    """A kept seed's figures, from its card."""
    training = card["training"]
    return {"best_val_score": training.get("best_val_score"), "seconds": training["seconds"]}


def _summary_only(result: dict) -> dict:
    return {"best_val_score": result["best_val_score"]}


def _copy_model(src: Path, dst: Path) -> None:
    """A finished model directory's files (not the fingerprint kept beside them)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(_DONE), dirs_exist_ok=True)
