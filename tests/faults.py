"""Fault injection: kill -9 a stage at a seeded random moment, run it again, compare.

Shared by ``tests/test_faults.py`` (one kill per stage) and ``benchmarks/faults.py`` (N seeds
per stage). Each case runs its stage's command as ``dvc.yaml`` writes it (``python
stages/<x>.py ...``, served by a zygote as under DVC) in a *workspace*: a folder laid out like
the repository (``params.yaml``, ``data/raw``, ``data/tiles``, ``models/unet``, ...) holding
the stage's inputs.

1. The *reference*: the stage runs uninterrupted once (its wall time sets the kill window).
2. A *trial*: a fresh workspace with the same inputs (and, for even seeds, the reference's
   output, marked, as the previous output), the stage started and its process group sent
   SIGKILL at a time drawn by ``random.Random(f"{case}-{seed}")`` from ``[KILL_FROM_S,
   KILL_UP_TO * reference]``; when the stage has finished by then, the draw is missed (no
   kill) and another is drawn, in another fresh workspace. A zygote-served stage's worker
   dies with its client (segbench.zygote's watchdog); every process working in the workspace
   must be gone within ``SETTLE_S``.
3. The same command again, to completion.

What a trial checks (:class:`Trial` records it; :func:`problems` lists what failed):
  after the kill   the inputs (other stages' outputs) are unchanged; the stage's output is
                   absent, the previous one intact, or complete (never half-written); no
                   process is left running
  after the rerun  it succeeded; the output matches the reference's (bytes where the stage is
                   deterministic, numbers within float tolerance where a resumed training
                   recomputes them, timings and run ids ignored); the inputs are unchanged;
                   the workspace holds exactly what the reference's holds (no ``.*.partial-*``,
                   ``.*.resume``, ``*.tmp`` or sweep state left)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from tests.conftest import (
    REPO,
    SHRINK,
    deep_update,
    only_models,
    real_params_raw,
    seeded_store,
    venv_env,
)

MODEL = "unet"
KILL_FROM_S = 0.05  # the client has not even connected to the zygote yet
KILL_UP_TO = 0.9  # of the reference's wall time
# A served stage's worker gets SIGTERM at its client's death and SIGKILL 5 s later; a Ray worker
# (its own process group) still starting when its driver dies lingers up to ~40 s before it
# notices. What runs longer than this is left over.
SETTLE_S = 60.0
RUN_TIMEOUT_S = 300.0
PREVIOUS = ".fault-previous"  # marks a previous output put in place before a trial
DRAWS = 3  # kill times drawn before a trial gives up on landing a kill while the stage runs


def fault_params_raw() -> dict:
    """The shrunk params.yaml with a three-level U-Net (epochs 3) and a sweep of two of its
    learning rates (three epochs each, every trial run out): every stage in seconds."""
    raw = only_models(deep_update(real_params_raw(), SHRINK), [MODEL])
    raw["models"][MODEL].update(encoder_depth=3, decoder_channels=[16, 8, 8])
    raw["train"]["epochs"] = 3
    raw["sweep"] = {
        **raw["sweep"],
        "enabled": True,
        "model": MODEL,
        "space": {"train": {"lr": [0.003, 0.002]}},
        "epochs": 3,
        "scheduler": "fifo",
    }
    return raw


def stage_command(stage: str) -> list[str]:
    """The command ``dvc.yaml`` gives ``stage`` (``train@unet``: its foreach key filled in),
    with this interpreter and the repository's script (runs in a workspace, not the repo)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    name, _, key = stage.partition("@")
    block = stages[name]["do"] if "foreach" in stages[name] else stages[name]
    argv = shlex.split(block["cmd"].replace("${key}", key))
    assert argv[0] == "python" and argv[1].startswith("stages/"), argv
    return [sys.executable, str(REPO / argv[1]), *argv[2:]]


# --- comparing outputs ----------------------------------------------------------------------


def tree_digest(path: Path) -> str | None:
    """sha256 over the relative names and bytes of every file under ``path``; None if absent."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def listing(root: Path) -> set[str]:
    """Every file and folder under ``root``, relative (folders end with ``/``)."""
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*")}


def _files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def same_bytes(ref: Path, out: Path, *, approx: dict | None = None) -> list[str]:
    """Differences between two output folders: missing or extra files, files whose bytes
    differ. ``approx`` maps file names to a comparison of their own (returning differences)."""
    approx = approx or {}
    a, b = _files(ref), _files(out)
    diffs = [f"{name}: missing" for name in sorted(a - b)]
    diffs += [f"{name}: not in the reference" for name in sorted(b - a)]
    for name in sorted(a & b):
        if name in approx:
            diffs += [f"{name}: {d}" for d in approx[name](ref / name, out / name)]
        elif (ref / name).read_bytes() != (out / name).read_bytes():
            diffs.append(f"{name}: bytes differ")
    return diffs


def _close(a, b, *, rel=1e-5, abs_=1e-6) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if x != x or y != y:  # NaN
        return x != x and y != y
    return abs(x - y) <= max(abs_, rel * max(abs(x), abs(y)))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def same_table(*, key: str | None = None, ignore=(), rel=1e-5, abs_=1e-6) -> Callable:
    """A CSV comparison: same columns and rows (matched by ``key``, else in order), numbers
    within tolerance, ``ignore``'d columns (timings, run ids) skipped."""

    def compare(a: Path, b: Path) -> list[str]:
        ra, rb = _rows(a), _rows(b)
        if not ra or not rb or ra[0].keys() != rb[0].keys() or len(ra) != len(rb):
            return [] if ra == rb else [f"{len(ra)} rows against {len(rb)}, or other columns"]
        if key is not None:
            ra, rb = sorted(ra, key=lambda r: r[key]), sorted(rb, key=lambda r: r[key])
        diffs = []
        for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
            for col in x:
                if col not in ignore and not _close(x[col], y[col], rel=rel, abs_=abs_):
                    diffs.append(f"row {i} {col}: {x[col]} against {y[col]}")
        return diffs

    return compare


def same_json(*, ignore=(), rel=1e-5, abs_=1e-6) -> Callable:
    """A JSON comparison: the same structure, numbers within tolerance, ``ignore``'d dotted
    keys skipped."""

    def walk(x, y, where: str) -> list[str]:
        if where.lstrip(".") in ignore:
            return []
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return [f"{where or '.'}: keys {sorted(x.keys() ^ y.keys())} differ"]
            return [d for k in x for d in walk(x[k], y[k], f"{where}.{k}")]
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            return [d for i, (u, v) in enumerate(zip(x, y, strict=True)) for d in walk(u, v, where)]
        if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, int | float):
            return [] if x == y else [f"{where}: {x!r} against {y!r}"]
        return [] if _close(x, y, rel=rel, abs_=abs_) else [f"{where}: {x!r} against {y!r}"]

    def compare(a: Path, b: Path) -> list[str]:
        return walk(json.loads(a.read_text()), json.loads(b.read_text()), "")

    return compare


def same_weights(a: Path, b: Path) -> list[str]:
    """Two state dicts with the same keys and shapes, values within a resumed training's
    float tolerance (tests/test_training_loop.py's)."""
    import torch

    wa, wb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    if wa.keys() != wb.keys():
        return [f"keys differ: {sorted(wa.keys() ^ wb.keys())}"]
    diffs = []
    for name in wa:
        x, y = wa[name], wb[name]
        if x.shape != y.shape or not torch.allclose(x.double(), y.double(), rtol=1e-4, atol=1e-5):
            diffs.append(f"{name} differs")
    return diffs


# What an uninterrupted and a killed-then-rerun stage may differ in: wall times, memory peaks,
# MLflow run ids, Ray trial ids and attempt counts. Everything else is compared.
CARD_IGNORE = ("mlflow_run_id", "training.seconds", "training.peak_memory_mb")
TRAINING = {
    "card.json": same_json(ignore=CARD_IGNORE),
    "history.csv": same_table(ignore=("seconds",)),
    "weights.pt": same_weights,
    "last.pt": same_weights,
}
EVALUATION = {
    "metrics.json": same_json(ignore=("images_per_second", "peak_memory_mb")),
}
SWEEP_RESULTS = {
    "trials.csv": same_table(
        key="lr", ignore=("trial", "attempts", "train_seconds", "mlflow_run_id")
    ),
    "best.json": same_json(ignore=("trial", "mlflow_run_id")),
}


# --- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One stage to kill: its DVC stage, the workspace paths it reads (other stages' outputs:
    see ``MADE_BY`` and ``HELPERS``) and the one it writes, and how that output is compared
    with the reference's: byte for byte, except the files ``approx`` names."""

    name: str
    stage: str
    inputs: tuple[str, ...]
    output: str
    approx: dict[str, Callable] = field(default_factory=dict)

    def compare(self, ref: Path, out: Path) -> list[str]:
        return same_bytes(ref, out, approx=self.approx)


CASES = {
    c.name: c
    for c in (
        Case("fetch", "fetch", (), "data/raw"),
        Case("prepare", "prepare", ("data/raw",), "data/tiles"),
        Case("train", f"train@{MODEL}", ("data/tiles",), f"models/{MODEL}", TRAINING),
        Case("sweep", "sweep", ("data/tiles", "plans"), "sweeps", SWEEP_RESULTS),
        Case(
            "evaluate",
            f"evaluate@{MODEL}",
            ("data/raw", f"models/{MODEL}"),
            f"eval/{MODEL}",
            EVALUATION,
        ),
    )
}
# Which case (or helper stage) writes each input.
MADE_BY = {"data/raw": "fetch", "data/tiles": "prepare", f"models/{MODEL}": "train"}
HELPERS = {"plans": ("sweep_plan", ("data/tiles",))}  # run uninterrupted, never killed


# --- running and killing --------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    served: bool  # by a zygote (else the stage ran in its client's process)


def _processes_in(workspace: Path) -> list[psutil.Process]:
    """This user's processes working in ``workspace`` (a zygote's worker takes its client's
    cwd; Ray's trial workers run in trial folders below it)."""
    root = str(workspace)
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and (cwd == root or cwd.startswith(root + os.sep)):
            found.append(proc)
    return found


def _family(pid: int, workspace: Path) -> set[psutil.Process]:
    """The client ``pid``, its descendants, the processes in ``workspace`` and theirs."""
    roots = _processes_in(workspace)
    with contextlib.suppress(psutil.Error):
        roots.append(psutil.Process(pid))
    family = set(roots)
    for proc in roots:
        with contextlib.suppress(psutil.Error):
            family.update(proc.children(recursive=True))
    return family


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


class Lab:
    """Workspaces under ``root``, the stage environment (MLflow store under ``root/mlflow``)
    and the references, made on demand and kept for every trial."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        store = self.root / "mlflow"
        store.mkdir(exist_ok=True)
        self.env = dict(env or venv_env())
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per stage, as under
            self.env.setdefault(name, "1")  # xdist: two cores shared with the test's own work
        self.env |= {"MLFLOW_TRACKING_URI": seeded_store(store / "mlflow.db")}
        self.env |= {"DVC_ROOT": str(store), "SEGBENCH_ZYGOTE_DEBUG": "1"}
        self.env.pop("DVC_STAGE", None)
        self.references: dict[str, Reference] = {}
        self.params = yaml.safe_dump(fault_params_raw(), sort_keys=False)
        self._count = 0

    # -- set-up

    def warm(self, timeout: float = 120.0) -> float:
        """Create the MLflow store and start this environment's zygote, and wait until it
        serves (unless zygotes are off or cannot start here: stages then run in-process, as
        they would under DVC); the seconds that took."""
        import mlflow

        start = time.monotonic()
        mlflow.MlflowClient(self.env["MLFLOW_TRACKING_URI"]).search_experiments()
        ws = self.workspace("warm")
        while time.monotonic() - start < timeout:
            run = self.run(ws, [*stage_command("fetch"), "--help"], "warm")
            assert run.returncode == 0, run.stderr
            if run.served or not any(s in run.stderr for s in ("started one", "is starting")):
                break
            time.sleep(0.5)
        return time.monotonic() - start

    def workspace(self, name: str) -> Path:
        self._count += 1
        ws = self.root / f"{self._count:03d}-{name}"
        ws.mkdir()
        (ws / "params.yaml").write_text(self.params)
        return ws

    def provide(self, ws: Path, inputs: tuple[str, ...]) -> None:
        """Copy ``inputs`` from the references that made them into ``ws``."""
        for rel in inputs:
            if (ws / rel).exists():
                continue
            if rel in HELPERS:
                stage, needs = HELPERS[rel]
                self.provide(ws, needs)
                run = self.run(ws, stage_command(stage), stage)
                assert run.returncode == 0, run.stderr
                continue
            source = self.reference(CASES[MADE_BY[rel]]).workspace / rel
            shutil.copytree(source, ws / rel, symlinks=True)

    def reference(self, case: Case) -> Reference:
        """The case's uninterrupted run (made once)."""
        if case.name not in self.references:
            ws = self.workspace(f"{case.name}-reference")
            self.provide(ws, case.inputs)
            run = self.run(ws, stage_command(case.stage), f"{case.name}-reference")
            assert run.returncode == 0, f"{case.stage} failed:\n{run.stderr[-3000:]}"
            self.references[case.name] = Reference(case, ws, run, listing(ws))
        return self.references[case.name]

    def running_mlflow_runs(self) -> set[str]:
        """``<run name> <run id>`` of every run the store holds as RUNNING."""
        import mlflow

        client = mlflow.MlflowClient(self.env["MLFLOW_TRACKING_URI"])
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, "attributes.status = 'RUNNING'") if ids else []
        return {f"{r.info.run_name} {r.info.run_id}" for r in runs}

    # -- running

    def start(self, ws: Path, argv: list[str], label: str) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{self._count:03d}-{label}-{time.monotonic_ns()}"
        out, err = open(f"{log}.out", "w"), open(f"{log}.err", "w")  # noqa: SIM115
        with out, err:
            proc = subprocess.Popen(
                argv,
                cwd=ws,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own group: the kill reaches what it started
            )
        return proc, log

    def run(self, ws: Path, argv: list[str], label: str) -> Run:
        start = time.monotonic()
        proc, log = self.start(ws, argv, label)
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return _finished(proc, log, time.monotonic() - start)


def _finished(proc: subprocess.Popen, log: Path, seconds: float) -> Run:
    stdout, stderr = Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()
    served = "segbench.zygote: running in-process" not in stderr
    return Run(proc.returncode, seconds, stdout, stderr, served)


@dataclass
class Reference:
    case: Case
    workspace: Path
    run: Run
    listing: set[str]

    @property
    def output(self) -> Path:
        return self.workspace / self.case.output


@dataclass
class Trial:
    """One kill and rerun of a case, and what was found."""

    case: str
    stage: str  # what was killed: the stage, or the dvc command
    seed: int
    previous: bool  # a previous output was in place before the killed run
    draws: list[float] = field(default_factory=list)  # kill times drawn, seconds
    killed_at: float | None = None  # the kill that landed (None: the stage always won)
    phase: str = ""  # what the stage had written when it was killed
    served: bool = True
    after_kill: str = ""  # the output after the kill: absent | previous | complete | broken
    left_by_kill: list[str] = field(default_factory=list)  # partial/resume folders it left
    processes_left: list[str] = field(default_factory=list)
    settle_seconds: float = 0.0  # from the kill until every process of the stage had ended
    rerun_rc: int | None = None
    rerun_error: str = ""  # the last line of a failed rerun's stderr
    rerun_seconds: float = 0.0
    resumed: bool = False  # the rerun said it continued the killed run's work
    differences: list[str] = field(default_factory=list)  # output against the reference
    repo_state: list[str] = field(default_factory=list)  # dvc.lock, dvc status (DVC trials)
    inputs_changed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # after the rerun
    log: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # where the trial's time went
    # MLflow runs the killed run started that nothing finished: reported, not a failure (the
    # tracking store is not a stage output; a RUNNING run there is a dead process's)
    mlflow_running: list[str] = field(default_factory=list)

    @property
    def landed(self) -> bool:
        return self.killed_at is not None

    @property
    def lost_outputs(self) -> int:
        """Outputs lost: a changed input, a broken or vanished previous output, a rerun that
        did not end with the reference's output."""
        lost = len(self.inputs_changed) + (self.after_kill == "broken")
        lost += self.previous and self.after_kill == "absent"
        return lost + bool(self.differences)

    def problems(self) -> list[str]:
        out = []
        if self.rerun_rc:
            out.append(f"the rerun exited {self.rerun_rc}: {self.rerun_error} (log: {self.log})")
        out += [f"output differs from the reference: {d}" for d in self.differences]
        out += self.repo_state
        out += [f"input changed: {d}" for d in self.inputs_changed]
        if self.after_kill == "broken" or (self.previous and self.after_kill == "absent"):
            out.append(f"after the kill the output was {self.after_kill}")
        out += [f"process left running after the kill: {p}" for p in self.processes_left]
        out += [f"left in the workspace after the rerun: {p}" for p in self.leftovers]
        return out


def _phase(ws: Path, case: Case, stage_running: bool) -> str:
    """What the stage had done when it was killed (read after every process has ended)."""
    out = ws / case.output
    if not stage_running:
        phase = "dvc, the stage not running"
    elif list(out.parent.glob(f".{out.name}.partial-*")):
        phase = "writing"
    elif out.exists() and not (out / PREVIOUS).exists():
        phase = "written, exiting"
    else:
        phase = "before writing"
    last = out.parent / f".{out.name}.resume" / "last.pt"
    if last.is_file():
        with contextlib.suppress(Exception):
            import torch

            epoch = torch.load(last, weights_only=True)["progress"]["epoch"]
            phase += f", epoch {epoch} checkpointed"
    if saved := len(list((ws / ".sweep-state").glob("sweep-*/trials/*/last-*.pt"))):
        phase += f", {saved} trial epoch(s) saved"
    return phase


def _after_kill(ws: Path, case: Case, ref: Reference, previous_digest: str | None) -> str:
    out = ws / case.output
    if not out.exists():
        return "absent"
    if previous_digest is not None and tree_digest(out) == previous_digest:
        return "previous"
    if not (out / PREVIOUS).exists() and not case.compare(ref.output, out):
        return "complete"
    return "broken"


def _topmost(paths: set[str]) -> list[str]:
    """``paths`` without those inside another of them (a folder stands for its contents)."""
    return sorted(p for p in paths if not any(p != q and p.startswith(q) for q in paths))


def _leftovers(ws: Path, ref: Reference, *, missing: bool = True) -> list[str]:
    """What ``ws`` holds that the reference's workspace does not (and, with ``missing``, what
    it lacks that the reference's holds: a lost file), folders standing for their contents."""
    now = listing(ws)
    extra = now - ref.listing
    extra |= {p for p in now if Path(p.rstrip("/")).name.endswith(".tmp")}
    found = _topmost(extra)
    if missing:
        found += [f"{p} (missing)" for p in _topmost(ref.listing - now)]
    return found


class _Clock:
    """Seconds spent in each part of a trial, for the benchmark's figures."""

    def __init__(self, into: dict[str, float]):
        self.into, self.last = into, time.monotonic()

    def lap(self, part: str) -> None:
        now = time.monotonic()
        self.into[part] = round(self.into.get(part, 0.0) + now - self.last, 2)
        self.last = now


def run_trial(lab: Lab, case: Case, seed: int) -> Trial:
    """Kill ``case``'s stage at a time drawn from ``seed``, run it again, check everything."""
    ref = lab.reference(case)
    rng = random.Random(f"{case.name}-{seed}")
    trial = Trial(case.name, f"{case.stage} (script)", seed, previous=seed % 2 == 0)
    clock = _Clock(trial.seconds)
    argv = stage_command(case.stage)
    span = ref.run.seconds
    for _ in range(DRAWS):
        at = rng.uniform(KILL_FROM_S, max(KILL_FROM_S, KILL_UP_TO * span))
        trial.draws.append(round(at, 3))
        ws = lab.workspace(f"{case.name}-seed{seed}")
        lab.provide(ws, case.inputs)
        previous_digest = None
        if trial.previous:
            shutil.copytree(ref.output, ws / case.output, symlinks=True)
            (ws / case.output / PREVIOUS).write_text("the output before the killed run\n")
            previous_digest = tree_digest(ws / case.output)
        inputs = {rel: tree_digest(ws / rel) for rel in case.inputs}
        running = lab.running_mlflow_runs()
        clock.lap("set-up")
        finished = _kill(lab, ws, argv, case, trial, at)
        clock.lap("killed run")
        if finished is None:
            break
        span = min(span, finished)  # faster than the reference: draw within its own time
    else:
        return trial  # the stage finished before every drawn time: no fault was injected
    trial.after_kill = _after_kill(ws, case, ref, previous_digest)
    trial.left_by_kill = _leftovers(ws, ref, missing=False)
    trial.inputs_changed = [rel for rel, d in inputs.items() if tree_digest(ws / rel) != d]
    clock.lap("checks")
    rerun = lab.run(ws, argv, f"{case.name}-seed{seed}-rerun")
    _record_rerun(trial, rerun, lab)
    clock.lap("rerun")
    if (ws / case.output).is_dir():
        trial.differences = case.compare(ref.output, ws / case.output)
    else:
        trial.differences = [f"{case.output}: missing"]
    trial.inputs_changed += [
        f"{rel} (after the rerun)" for rel, d in inputs.items() if tree_digest(ws / rel) != d
    ]
    trial.leftovers = _leftovers(ws, ref)
    trial.mlflow_running = sorted(lab.running_mlflow_runs() - running)
    clock.lap("checks")
    return trial


def _record_rerun(trial: Trial, rerun: Run, lab: Lab) -> None:
    trial.rerun_rc, trial.rerun_seconds = rerun.returncode, round(rerun.seconds, 2)
    trial.resumed = "resuming" in rerun.stdout
    trial.log = str(lab.logs)
    if rerun.returncode:
        lines = [line for line in rerun.stderr.splitlines() if line.strip()]
        trial.rerun_error = lines[-1].strip()[:300] if lines else ""


def _kill(lab: Lab, ws: Path, argv: list[str], case: Case, trial: Trial, at: float) -> float | None:
    """Start the stage in ``ws``, SIGKILL its process group ``at`` seconds later and wait for
    everything it started to end; None, or the seconds the stage took if it had finished by
    then (no kill landed)."""
    start = time.monotonic()
    proc, log = lab.start(ws, argv, f"{case.name}-seed{trial.seed}-killed")
    while (left := start + at - time.monotonic()) > 0 and proc.poll() is None:
        time.sleep(min(left, 0.005))
    if proc.poll() is not None:
        return time.monotonic() - start
    family = _family(proc.pid, ws)
    script = Path(stage_command(case.stage)[1]).name
    stage_running = any(script in " ".join(_cmdline(p)) for p in family)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        return time.monotonic() - start  # it exited between the last look and the signal
    trial.killed_at = round(time.monotonic() - start, 3)
    trial.served = _finished(proc, log, 0).served
    killed = time.monotonic()
    _, alive = psutil.wait_procs(list(family), timeout=SETTLE_S)
    while (stray := _processes_in(ws)) and time.monotonic() < killed + SETTLE_S:
        time.sleep(0.05)
    trial.settle_seconds = round(time.monotonic() - killed, 2)
    trial.phase = _phase(ws, case, stage_running)
    for p in {*alive, *stray}:
        with contextlib.suppress(psutil.Error):
            trial.processes_left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
    return None


# --- through DVC ---------------------------------------------------------------------------


class DvcRepo:
    """A git+DVC copy of the repository (shrunk params) in which ``dvc repro`` runs a stage
    and everything upstream; the reference is its first uninterrupted ``dvc repro <stage>``,
    the kill window the time of a forced ``dvc repro --single-item --force <stage>``."""

    def __init__(self, lab: Lab, case: Case):
        from segbench.workspace import commit, copy_repository

        self.lab, self.case = lab, case
        self.root = copy_repository(REPO, lab.root / f"dvc-{case.name}")
        (self.root / "params.yaml").write_text(lab.params)
        commit(self.root, "fault-injection params")
        run = self.dvc("repro", case.stage)
        assert run.returncode == 0, run.stderr[-3000:]
        self.outputs = self.digests()
        self.lock = (self.root / "dvc.lock").read_text()
        self.listing = self.files()
        forced = self.dvc("repro", "--single-item", "--force", case.stage)
        assert forced.returncode == 0, forced.stderr[-3000:]
        assert self.digests() == self.outputs, "a forced dvc repro wrote other outputs"
        self.seconds = forced.seconds

    def reset(self) -> None:
        """Back to the reference's state, so that each trial starts from it: its dvc.lock, its
        outputs (``dvc checkout``), none of an earlier trial's leftovers."""
        (self.root / "dvc.lock").write_text(self.lock)
        for rel in _topmost(self.files() - self.listing):
            path = self.root / rel.rstrip("/")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if self.digests() != self.outputs:
            run = self.dvc("checkout", "--force")
            assert run.returncode == 0 and self.digests() == self.outputs, run.stderr[-3000:]

    def dvc(self, *args: str) -> Run:
        argv = [str(Path(sys.executable).parent / "dvc"), *args]
        return self.lab.run(self.root, argv, f"dvc-{args[0]}")

    def digests(self) -> dict[str, str | None]:
        """Every DVC output of the stages run so far (``data/raw``, ``data/tiles``, ...)."""
        outs = ("code", "checks", "data/raw", "data/tiles")
        return {rel: tree_digest(self.root / rel) for rel in outs}

    def files(self) -> set[str]:
        """The repository's files and folders, less git's and DVC's own bookkeeping."""
        return {p for p in listing(self.root) if not p.startswith((".git/", ".dvc/"))}


def run_dvc_trial(repo: DvcRepo, seed: int) -> Trial:
    """Kill ``dvc repro --single-item --force <stage>`` at a seeded time, run ``dvc repro
    <stage>`` again: the outputs, ``dvc.lock`` and the repository's files must be the
    reference's, and ``dvc status`` clean. DVC deletes a stage's outputs before it runs it
    (restorable from its cache), so only the other stages' outputs must survive the kill."""
    case, lab = repo.case, repo.lab
    rng = random.Random(f"dvc-{case.name}-{seed}")
    # DVC removes a stage's outputs before it runs it (they stay in its cache): none is lost
    trial = Trial(f"dvc-{case.name}", f"{case.stage} (dvc repro)", seed, previous=False)
    argv = [str(Path(sys.executable).parent / "dvc"), "repro", "--single-item", "--force"]
    argv.append(case.stage)
    repo.reset()
    before = repo.digests()
    span = repo.seconds
    for _ in range(DRAWS):
        at = rng.uniform(KILL_FROM_S, KILL_UP_TO * span)
        trial.draws.append(round(at, 3))
        finished = _kill(lab, repo.root, argv, case, trial, at)
        if finished is None:
            break
        span = min(span, finished)
    else:
        return trial
    out = repo.root / case.output
    if not out.exists():
        trial.after_kill = "absent"
    else:
        complete = tree_digest(out) == repo.outputs[case.output]
        trial.after_kill = "complete" if complete else "broken"
    trial.left_by_kill = _topmost(repo.files() - repo.listing)
    others = [rel for rel in before if rel != case.output]
    trial.inputs_changed = [rel for rel in others if tree_digest(repo.root / rel) != before[rel]]
    rerun = repo.dvc("repro", case.stage)
    _record_rerun(trial, rerun, lab)
    now = repo.digests()
    trial.differences = [f"{rel}: other bytes" for rel in now if now[rel] != repo.outputs[rel]]
    if (repo.root / "dvc.lock").read_text() != repo.lock:
        trial.repo_state.append("dvc.lock differs from the reference's")
    status = repo.dvc("status", "--json", case.stage)
    if status.returncode != 0 or json.loads(status.stdout or "null") != {}:
        last = (status.stdout.strip() or status.stderr.strip()).splitlines()[-1:]
        trial.repo_state.append(f"dvc status is not clean: {' '.join(last)}")
    files = repo.files()
    trial.leftovers = _topmost(files - repo.listing)
    trial.leftovers += [f"{p} (missing)" for p in _topmost(repo.listing - files)]
    return trial


# --- the result table -----------------------------------------------------------------------


def summarise(trials: list[Trial], reference_seconds: dict[str, float]) -> list[dict]:
    """One row per case: its reference's wall time, kills landed and missed (the stage had
    finished before the drawn time), kill times, what the stage was doing, reruns that
    resumed and that matched the reference, outputs lost, leftovers (files and processes),
    the longest time from a kill until every process of the stage had ended, MLflow runs
    left RUNNING."""
    rows = []
    for name in dict.fromkeys(t.case for t in trials):
        ts = [t for t in trials if t.case == name]
        landed = [t for t in ts if t.landed]
        phases = Counter(t.phase.split(",")[0] for t in landed)
        rows.append(
            {
                "killed": ts[0].stage,
                "reference s": f"{reference_seconds.get(name, float('nan')):.1f}",
                "kills": len(landed),
                "missed": sum(len(t.draws) for t in ts) - len(landed),
                "kill times s": ", ".join(f"{t.killed_at:.2f}" for t in landed),
                "killed while": ", ".join(f"{n} {p}" for p, n in sorted(phases.items())),
                "resumed": sum(t.resumed for t in landed),
                "reruns ok": sum(not t.problems() for t in landed),
                "outputs lost": sum(t.lost_outputs for t in landed),
                "leftovers": sum(len(t.leftovers) + len(t.processes_left) for t in landed),
                "slowest end s": f"{max((t.settle_seconds for t in landed), default=0):.1f}",
                "MLflow runs left RUNNING": sum(len(t.mlflow_running) for t in landed),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines)


def describe(trial: Trial) -> str:
    buf = io.StringIO()
    print(
        f"{trial.case}-seed{trial.seed}: kill at {trial.killed_at} s (drawn {trial.draws}), "
        f"{trial.phase}, {'served' if trial.served else 'in-process'}, previous output "
        f"{'yes' if trial.previous else 'no'}, after the kill: {trial.after_kill}, left "
        f"{trial.left_by_kill or 'nothing'}, settled in {trial.settle_seconds} s; rerun "
        f"{trial.rerun_rc} in {trial.rerun_seconds} s{' (resumed)' if trial.resumed else ''}; "
        f"{trial.seconds}",
        file=buf,
    )
    for problem in trial.problems():
        print(f"  {problem}", file=buf)
    for run in trial.mlflow_running:
        print(f"  note: MLflow run left RUNNING: {run}", file=buf)
    return buf.getvalue().rstrip()
