"""A sweep's saved progress, from which an interrupted sweep resumes without unpickling anything.

Ray Tune keeps its experiment state as pickles (``tuner.pkl``, the trials, the searcher), and
restoring them runs whatever code the files hold: a file planted in the state directory, or on
the shared ``sweep.storage`` a cluster needs, would run on the next resume. The sweep therefore
never restores Tune's state (each run starts a fresh Tune experiment, with the same seeded trials
in the same order); each trial keeps its own progress, in formats that hold no code, under
``<storage>/<experiment>/``::

    parent.json                  {"run_id": ...}: the sweep's MLflow run, continued on resume
    trials/<key>/trial.json      the trial: its key and values, starts so far, the metrics it
                                 reported each epoch, its final metrics once finished, and the
                                 checkpoint files that belong with it (name and sha256)
    trials/<key>/last-NNNN.pt    training's resume checkpoint after epoch NNNN (weights-only)
    trials/<key>/best-NNNN.pt    the best weights up to then (weights-only)

``<key>`` is the trial's place in the sweep and a digest of its values (``00003-1f2e3d4c``): a
fresh Tune experiment with the same seed generates the same trials in the same order, so each
finds its own progress. ``trial.json`` is written last and names its files by epoch, so a kill at
any moment leaves the previous consistent state (files it does not name are leftovers, removed at
the next save). Before a sweep resumes, every trial's state is verified (:func:`verify`): a
``trial.json`` that is not one, or a file whose sha256 differs from the one recorded, stops the
sweep with one line, and ``SEGBENCH_RESUME=0`` (``segbench sweep --fresh``) starts it afresh.
Checkpoints are then read with ``weights_only`` (:func:`segbench.checkpoint.load_state`).

Storage is a local path or a URI (``s3://``, ``gs://``), through ``pyarrow.fs`` (Ray's own
storage layer).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from segbench.errors import SegbenchError, describe_validation_error

FORMAT = "segbench-sweep-trial/1"
FILES = ("last.pt", "best.pt")  # what training's resume directory holds that is kept
_STORED = re.compile(r"^(last|best)-\d{4,}\.pt$")
_CHUNK = 1 << 20


class StoredFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sha256: str


class TrialState(BaseModel):
    """``trial.json``."""

    # A diverged epoch reports NaN: kept as JSON's NaN (Python's json reads it), not null.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    format: str
    key: str
    config: dict[str, Any]
    attempt: int
    mlflow_run_id: str | None
    epochs: list[dict[str, Any]]
    final: dict[str, Any] | None
    files: dict[str, StoredFile]


def trial_key(trial_id: str, config: dict[str, Any]) -> str:
    """``<index>-<digest>``: Tune's trial ids end with the trial's place in the sweep
    (``a1b2c_00003``), the same in every run with the same seed; the digest ties it to its
    values."""
    index = trial_id.rsplit("_", 1)[-1]
    return f"{index}-{config_digest(config)}"


def config_digest(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


class Store:
    """The sweep state at ``uri`` (``<storage>/<experiment>``)."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.root = _fs(self.uri)
        self._files: dict[str, dict[str, StoredFile]] = {}  # per trial: what it last named

    # -- plain file operations ----------------------------------------------------------------
    def _exists(self, path: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _write(self, path: str, data: bytes) -> None:
        # Written whole under another name, then moved: a kill never leaves a torn file
        # (a rename on a local disk; an object store's writes are whole anyway).
        self.fs.create_dir(path.rpartition("/")[0], recursive=True)
        tmp = f"{path}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def _listing(self, path: str, *, dirs: bool) -> list[str]:
        import pyarrow.fs

        if not self._exists(path):
            return []
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(path))
        kind = pyarrow.fs.FileType.Directory if dirs else pyarrow.fs.FileType.File
        return sorted(i.base_name for i in infos if i.type == kind)

    def _sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def delete(self) -> None:
        """Remove the whole state (a finished sweep, or a fresh start)."""
        if self._exists(self.root):
            self.fs.delete_dir(self.root)

    def exists(self) -> bool:
        return self._exists(self.root)

    # -- the sweep's MLflow run ---------------------------------------------------------------
    def parent_run(self) -> str | None:
        path = f"{self.root}/parent.json"
        if not self._exists(path):
            return None
        try:
            data = json.loads(self._read(path))
        except (ValueError, UnicodeDecodeError):
            data = None
        if not (isinstance(data, dict) and isinstance(data.get("run_id"), str)):
            raise self._refused(path, 'not {"run_id": "..."}')
        return data["run_id"]

    def set_parent_run(self, run_id: str) -> None:
        self._write(f"{self.root}/parent.json", json.dumps({"run_id": run_id}).encode())

    # -- trials -------------------------------------------------------------------------------
    def _refused(self, path: str, why: str) -> SegbenchError:
        return SegbenchError(
            f"{path}: damaged or not written by segbench ({why}); the sweep does not resume "
            f"from it. Delete {self.uri}, or run with SEGBENCH_RESUME=0 (segbench sweep "
            "--fresh) to start the sweep afresh"
        )

    def _trial_dir(self, key: str) -> str:
        return f"{self.root}/trials/{key}"

    def read_trial(self, key: str) -> TrialState | None:
        """The verified state of trial ``key``, or None if it never saved one."""
        folder = self._trial_dir(key)
        path = f"{folder}/trial.json"
        if not self._exists(path):
            return None
        try:
            state = TrialState.model_validate_json(self._read(path))
        except ValidationError as exc:
            raise self._refused(path, describe_validation_error(exc)) from None
        if state.format != FORMAT:
            raise self._refused(path, f"format {state.format!r}, expected {FORMAT!r}")
        if state.key != key or not key.endswith(config_digest(state.config)):
            raise self._refused(path, f"it names trial {state.key!r} with other values")
        for role, stored in state.files.items():
            if role not in FILES or not _STORED.match(stored.name):
                raise self._refused(path, f"it names an unexpected file {stored.name!r}")
            file = f"{folder}/{stored.name}"
            if not self._exists(file):
                raise self._refused(file, "missing")
            if self._sha256(file) != stored.sha256:
                raise self._refused(file, "its sha256 is not the one recorded in trial.json")
        return state

    def verify(self) -> int:
        """Verify every trial's state (see :meth:`read_trial`); the number saved. A folder
        without ``trial.json`` (killed before its first save) counts as not started."""
        n = 0
        for key in self._listing(f"{self.root}/trials", dirs=True):
            n += self.read_trial(key) is not None
        return n

    def restore(self, state: TrialState, key: str, resume_dir: Path) -> None:
        """Copy trial ``key``'s checkpoint into training's ``resume_dir`` (emptied first)."""
        shutil.rmtree(resume_dir, ignore_errors=True)
        resume_dir.mkdir(parents=True)
        self._files[key] = dict(state.files)
        for role, stored in state.files.items():
            (resume_dir / role).write_bytes(self._read(f"{self._trial_dir(key)}/{stored.name}"))
        if state.mlflow_run_id:
            (resume_dir / "mlflow.json").write_text(json.dumps({"run_id": state.mlflow_run_id}))

    def save(
        self,
        key: str,
        config: dict[str, Any],
        *,
        attempt: int,
        epochs: list[dict[str, Any]],
        resume_dir: Path | None,
        mlflow_run_id: str | None,
        final: dict[str, Any] | None = None,
    ) -> None:
        """Save trial ``key``: its checkpoint files from ``resume_dir`` (none once finished)
        under epoch-numbered names, then ``trial.json`` naming them, then remove what it no
        longer names."""
        folder = self._trial_dir(key)
        epoch = int(epochs[-1]["epoch"]) if epochs else 0
        files, before = {}, self._files.get(key, {})
        for role in FILES if resume_dir is not None else ():
            src = resume_dir / role
            if src.is_file():
                data = src.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                if role in before and before[role].sha256 == sha:
                    files[role] = before[role]  # unchanged (best.pt most epochs): not sent again
                    continue
                name = f"{role.removesuffix('.pt')}-{epoch:04d}.pt"
                self._write(f"{folder}/{name}", data)
                files[role] = StoredFile(name=name, sha256=sha)
        state = TrialState(
            format=FORMAT,
            key=key,
            config=json.loads(json.dumps(config, default=str)),
            attempt=attempt,
            mlflow_run_id=mlflow_run_id,
            epochs=epochs,
            final=final,
            files=files,
        )
        self._write(f"{folder}/trial.json", state.model_dump_json(indent=1).encode())
        self._files[key] = files
        keep = {"trial.json", *(f.name for f in files.values())}
        for name in self._listing(folder, dirs=False):
            if name not in keep:
                self.fs.delete_file(f"{folder}/{name}")
