"""Read a SAM checkpoint safely: torch's weights-only unpickler, an optional sha256, one clear
error per way a file can be wrong (missing, damaged, code-running pickle, not a state dict).
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import re
import zipfile
from pathlib import Path

import torch

from segbench.downloads import CheckpointUse, missing_checkpoint
from segbench.errors import SegbenchError


def load_checkpoint(
    path: str | Path, *, sha256: str | None = None, variant: str | None = None
) -> dict[str, torch.Tensor]:
    """The state dict (name -> CPU tensor) in the ``torch.save`` file ``path``.

    The file is read with torch's weights-only unpickler, so a checkpoint that holds anything
    but tensors and plain containers is refused instead of run. ``sha256`` is the expected hex
    digest of the file. A dict that wraps the state under ``"model"`` or ``"state_dict"`` (as
    training checkpoints do) is unwrapped. Every failure is a :class:`SegbenchError`; a missing
    official file (known by its name, else by ``variant``) says where to download it.
    """
    path = Path(path)
    if not path.is_file():
        fix = missing_checkpoint(path, [CheckpointUse(variant=variant, sha256=sha256)])
        raise SegbenchError(f"SAM checkpoint {path} does not exist; {fix}")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.strip().lower():
            raise SegbenchError(
                f"SAM checkpoint {path} has sha256 {actual}, not the expected {sha256}; the file "
                "is damaged or a different one: download it again, or fix the sha256"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("Weights only load failed") and _well_formed_pickle(path):
            # torch's own message suggests weights_only=False, which segbench never does.
            raise SegbenchError(
                f"SAM checkpoint {path} was refused: it holds Python objects beyond tensors"
                f"{_refusal_reason(exc)}, and segbench never runs a checkpoint's code; save "
                "the model's state_dict() alone (torch.save(model.state_dict(), path))"
            ) from None
        raise _corrupt(path, exc) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError... on a bad file
        raise _corrupt(path, exc) from exc
    return _as_state_dict(obj, path)


def _well_formed_pickle(path: Path) -> bool:
    """Whether the file's (first) pickle decodes: then the weights-only unpickler refused what it
    asks for. Garbage fails there too ("Unsupported operand"), but is a damaged file instead.
    pickletools only decodes opcodes; it never imports or calls what they name."""
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: the pickle is <name>/data.pkl
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                with archive.open(member) as f:
                    return _decodes(f)
        with open(path, "rb") as f:
            return _decodes(f)
    except Exception:
        return False


def _decodes(f) -> bool:
    # genops stops after the pickle's STOP; an exception or no STOP means it is not a pickle.
    return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(f))


def _refusal_reason(exc: Exception) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", str(exc))
    if found is None:
        return ""
    reason = found.group(1).strip()
    # Plain pickle's protocols 4 and 5 are refused at their first opcode, before any global.
    reason = re.sub(r"^Unsupported operand (\d+)$", r"pickle opcode \1 is not allowed", reason)
    return f" ({reason})"


def _corrupt(path: Path, exc: Exception) -> SegbenchError:
    return SegbenchError(
        f"SAM checkpoint {path} cannot be read ({type(exc).__name__}); it is truncated, corrupt "
        "or not a torch.save file: download it again"
    )


def _is_state(obj) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _as_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if _is_state(obj):
        return dict(obj)
    if isinstance(obj, dict):
        wrapped = [obj[k] for k in ("model", "state_dict") if _is_state(obj.get(k))]
        if len(wrapped) == 1:
            return dict(wrapped[0])
    raise SegbenchError(
        f"SAM checkpoint {path} holds a {type(obj).__name__}, not a state dict (a dict of "
        "parameter name -> tensor, possibly under 'model' or 'state_dict'); save "
        "model.state_dict() instead"
    )


def file_sha256(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the file, read in chunks so a 2.5 GB checkpoint never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
