"""Per-epoch training checkpoints, so a killed run continues by itself when it is run again.

While ``models/<m>`` trains, ``models/.<m>.resume/`` holds ``last.pt`` (model, optimiser,
schedule, progress and RNG state of the last completed epoch, written atomically), ``best.pt``
(the best weights so far) and ``mlflow.json`` (the run to keep logging into). A checkpoint is
resumed only when its fingerprint matches: the same model, preparation and training settings,
the same data version and the same training code (:func:`resumable`); otherwise training starts
from the first epoch and says why. No setting turns this on, so none can be left on by mistake;
``SEGBENCH_RESUME=0`` (or ``segbench train --fresh``) is the opt-out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from segbench.errors import SegbenchError
from segbench.io import read_json


def load_state(path: Path, fix: str) -> dict:
    """The dict saved in ``path``, read with ``weights_only=True`` (no code in the file ever
    runs). Missing, damaged, not a torch file, or not a dict: a :class:`SegbenchError` naming
    ``path`` and ending with ``fix`` (what the user should do)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SegbenchError(f"{path}: missing; {fix}") from None
    except Exception as exc:  # UnpicklingError (code refused), RuntimeError, EOFError, ...
        raise SegbenchError(
            f"{path}: unreadable as a weights-only torch file ({type(exc).__name__}: it is "
            f"damaged, truncated or not a segbench file); {fix}"
        ) from None
    if not isinstance(state, dict):
        raise SegbenchError(f"{path}: holds a {type(state).__name__}, not a state dict; {fix}")
    return state


def resume_dir_for(out_dir: Path) -> Path:
    """Where the per-epoch checkpoints of ``out_dir`` live while it trains."""
    return out_dir.parent / f".{out_dir.name}.resume"


def fingerprint(config: dict, code: str) -> dict:
    """What must match for a checkpoint to be resumed: the model card's configuration (entry,
    preparation, training settings, data version) less the number of DDP processes (a resumed
    run may use other hardware), and ``code``, the digest of the training code
    (:func:`segbench.codedeps.module_digest`)."""
    train = {k: v for k, v in (config["train"] or {}).items() if k != "devices"}
    return {**config, "train": train, "code": code}


def _changed(fp: dict, old: dict) -> list[str]:
    """The dotted keys whose values differ between two fingerprints."""
    out = []
    for key in sorted(set(fp) | set(old)):
        a, b = fp.get(key), old.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append("the training code" if key == "code" else key)
    return out


def resumable(ckpt: Path, fp: dict) -> tuple[dict | None, str]:
    """``(state, why)``: the state of ``ckpt/last.pt`` when it can be resumed under the
    fingerprint ``fp`` (``why`` then says from which epoch); else ``(None, why)``, ``why``
    saying why training starts afresh ("" when there is simply no checkpoint). Nothing here
    raises: a damaged or foreign file is a reason to start afresh, and is never executed
    (``weights_only``)."""
    last = ckpt / "last.pt"
    if not last.is_file():
        return None, ""
    try:
        state = load_state(last, "")
    except SegbenchError as exc:
        return None, f"{str(exc).rstrip('; ')}: starting from the first epoch"
    missing = sorted(set(_LAST_KEYS) - set(state))
    if missing or not isinstance(state["fingerprint"], dict):
        what = ", ".join(missing) or "a valid fingerprint"
        return None, (
            f"{last}: not a segbench resume checkpoint (missing {what}): starting from the "
            "first epoch"
        )
    if state["fingerprint"] != fp:
        changed = _changed(fp, state["fingerprint"])
        more = f" and {len(changed) - 4} more" if len(changed) > 5 else ""
        changed = ", ".join(changed[:4] if more else changed) + more
        return None, (
            f"the checkpoint in {ckpt} was made with other settings ({changed}): starting "
            "from the first epoch"
        )
    progress = state["progress"]
    epoch = progress.get("epoch") if isinstance(progress, dict) else None
    if not isinstance(epoch, int):
        return None, f"{last}: its progress is unreadable: starting from the first epoch"
    return state, f"resuming after epoch {epoch} from the checkpoint in {ckpt}"


def model_state(model) -> dict:
    """What training changed in ``model``, as a state dict: its ``trained_state_dict()`` where it
    has one (SAM: the decoder and LoRA factors, never the frozen base checkpoint), else all of
    ``state_dict()``. Detached copies, safe to keep while training goes on."""
    if hasattr(model, "trained_state_dict"):
        return model.trained_state_dict()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_model_state(model, state: dict) -> None:
    """The inverse of :func:`model_state`, strict about keys and shapes."""
    if hasattr(model, "load_trained_state_dict"):
        model.load_trained_state_dict(state)
    else:
        model.load_state_dict(state)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # a kill mid-write never leaves a torn checkpoint


@dataclass
class Progress:
    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list | None = None


def save_checkpoint(ckpt: Path, fp, model, optimizer, schedule, prog: Progress) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    save_atomic(
        {
            "fingerprint": fp,
            "model": model_state(model),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "progress": {
                "epoch": prog.epoch,
                "best": prog.best,
                "best_epoch": prog.best_epoch,
                "bad_epochs": prog.bad_epochs,
                "history": prog.history,
            },
            "torch_rng": torch.get_rng_state(),
        },
        ckpt / "last.pt",
    )


# What last.pt holds (save_checkpoint above).
_LAST_KEYS = ("fingerprint", "model", "optimizer", "schedule", "progress", "torch_rng")


def restore_checkpoint(ckpt: Path, state: dict, model, optimizer, schedule, prog: Progress):
    """Load ``state`` (from :func:`resumable`) into the objects; return the best weights so
    far."""
    last = ckpt / "last.pt"
    fix = f"delete {ckpt} (or set SEGBENCH_RESUME=0) to train from the first epoch"
    try:
        load_model_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        p = state["progress"]
        prog.epoch, prog.best, prog.best_epoch = p["epoch"], p["best"], p["best_epoch"]
        prog.bad_epochs, prog.history = p["bad_epochs"], list(p["history"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise SegbenchError(
            f"{last}: its saved state does not fit this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); {fix}"
        ) from None
    best = ckpt / "best.pt"
    return load_state(best, fix) if best.is_file() else None


def resumed_run_id(ckpt: Path) -> str | None:
    """The MLflow run a resumed training continues (so its epochs land in one run)."""
    path = ckpt / "mlflow.json"
    try:
        data = read_json(path) if path.is_file() else None
    except SegbenchError:  # damaged: the training logs into a new run
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) else None
