"""Ray Tune sweep scaling: parallel efficiency of 2 trials at once, and Ray's overhead per trial.

    python benchmarks/sweep_scaling.py [--trials 8] [--repeats 3] [--model unet] [--epochs 3]

Every run trains the same model on the same shrunk synthetic tiles (generated once into a
temporary directory: ``--images`` 192x256 particle images at scale 0.5, 64-pixel tiles, batch 4)
with the same values: ``params.yaml`` except the data, the epochs and the ``sweep`` section. Four
arms, all in each of ``--repeats`` repeats, their order reversed every other repeat:

* **1 worker / 2 workers**: :func:`segbench.sweep.run.run_sweep` on a local Ray of 2 CPUs
  (``num_cpus=2``), a one-value grid (``train.lr``) with ``num_samples = --trials``, scheduler
  ``fifo`` (every trial runs all its epochs), ``resources: {cpu: 1}`` (one torch thread per
  trial), ``max_concurrent`` 1 or 2. ``--sequential-by cpus`` runs the 1-worker arm on a 1-CPU
  Ray instead (the stand-in used while ``max_concurrent`` was not honoured, before d886f2c);
* **direct**: :func:`segbench.training.train` called in this process with the params a trial gets
  (:func:`segbench.sweep.space.trial_params`), ``torch.set_num_threads(1)``, after an untimed
  warm-up call (imports, first MLflow connection): the work itself;
* **fresh process** (a reference, no target): the same call as the first one in a new Python
  process that imports what a trial imports: what any process-per-trial design pays.

Each run gets its own MLflow store (absolute sqlite URI in ``MLFLOW_TRACKING_URI``; its tables and
the ``segbench`` experiment are created before the clock starts, as the pipeline's store exists
already), its own Ray state directory, and all runs a private ``RAY_TMPDIR`` (see ``main``).

Clocks. The script swaps ``ray_session`` in :mod:`segbench.sweep.run` for a wrapper that notes
when Ray is up and when its shutdown begins, so each ``run_sweep`` splits into Ray start-up,
*inside Ray* (Tuner, parent MLflow run, trials, outputs) and shutdown. Trials run the real
:func:`segbench.training.train` through ``run_sweep``'s ``train_fn`` hook, wrapped to note (on the
wall clock, which all processes of this machine share) when ``train`` was entered and returned.

Figures (median over repeats; spread = min to max of the per-repeat figures):

* **parallel efficiency** = T(1 worker) / (2 x T(2 workers)), for the whole ``run_sweep`` and for
  the time inside Ray. The target (>= 80%) applies to the time inside Ray: Ray's start-up and
  shutdown are paid once per sweep whatever the number of workers or trials.
* **overhead per trial** = the sequential run's per-trial cycle (from one trial's ``train``
  returning to the next one's returning: the trial's final report, the actor's teardown, a fresh
  worker process, imports, the trial's set-up, then training with per-epoch reports and
  checkpoints) minus the direct call. Target: < 2 s. Split into the part inside ``train`` and the
  part between two trials' ``train`` calls. What the sweep pays once (Tuner, parent run, outputs)
  is reported apart, and also amortised over the trials.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from segbench.config import parse_params

REPO = Path(__file__).resolve().parents[1]
EFFICIENCY_TARGET = 0.80
OVERHEAD_TARGET_S = 2.0

# The fresh-process arm: a new interpreter importing what run_trial imports, then one train().
FRESH_CHILD = """
import json, sys, time
import torch
from ray import tune  # noqa: F401 - run_trial imports it
from segbench.config import parse_params
from segbench.sweep.space import trial_params
from segbench.training import train
ready = time.time()
a = json.loads(sys.argv[1])
torch.set_num_threads(1)
params = trial_params(parse_params(a["raw"]), a["config"], a["epochs"])
start = time.time()
train(a["model"], params, a["tiles"], a["out"], run_name=a["model"] + " fresh process")
print(json.dumps({"ready": ready, "train": time.time() - start}))
"""


def make_raw(model: str, images: int, epochs: int, trials: int, workers: int) -> dict:
    """params.yaml with shrunk data (as tests/conftest.py's SHRINK) and N equal trials."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["synthetic"].update(n_images=images, height=192, width=256, radius=[3.0, 20.0])
    raw["data"]["split"].update(train=0.7, val=0.2, test=0.1)
    raw["prepare"].update(scale=0.5, tile_size=64, stride=64, random_crops=1)
    raw["train"].update(epochs=epochs, batch_size=4)
    if (raw["models"].get(model) or {}).get("image_size"):  # SAM: its input at the tiles' size
        raw["models"][model]["image_size"] = 64
    raw["sweep"] = {
        **raw["sweep"],
        "enabled": True,
        "model": model,
        "search": "grid",
        # One value: every trial trains exactly the same thing, so their times are comparable.
        "space": {"train": {"lr": [raw["train"]["lr"]]}},
        "num_samples": trials,
        "epochs": epochs,
        "scheduler": "fifo",
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": workers,
        "max_failures": 0,  # a crash must stop the benchmark, not be retried into the timings
        "storage": None,
    }
    return raw


def timed_train(log_file: str, *args, **kwargs):
    """``segbench.training.train``, noting when it was entered and when it returned. Defined in
    ``__main__``, so cloudpickle ships it to the trials by value (no import path needed there)."""
    import json as _json
    import os as _os
    import time as _time

    from segbench.training import train

    enter = _time.time()
    summary = train(*args, **kwargs)
    line = {"pid": _os.getpid(), "enter": enter, "exit": _time.time()}
    with open(log_file, "a") as fh:  # one short line per append: trials side by side do not mix
        fh.write(_json.dumps(line) + "\n")
    return summary


class RayClock:
    """Stands in for ``segbench.sweep.run.ray_session``: the same session, noting when Ray was
    up (``ready``) and when its shutdown began (``leave``)."""

    def __init__(self, session):
        self.session, self.ready, self.leave = session, None, None

    @contextlib.contextmanager
    def __call__(self, **kwargs):
        with self.session(**kwargs) as where:
            self.ready = time.time()
            try:
                yield where
            finally:
                self.leave = time.time()


def fresh_store(root: Path) -> None:
    """Point MLflow (and segbench's artifact root) at ``root``; create the store untimed."""
    import mlflow

    from segbench.tracking import EXPERIMENT, _experiment_id

    root.mkdir(parents=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["DVC_ROOT"] = str(root)  # artifacts under root, not the repository's mlartifacts/
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    _experiment_id(mlflow.MlflowClient(), EXPERIMENT)


def at_once(spans) -> int:
    """The most train() calls running at the same moment."""
    events = sorted([(s["enter"], 1) for s in spans] + [(s["exit"], -1) for s in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def sweep_arm(args, workers: int, cpus: int, tiles: Path, root: Path) -> dict:
    import segbench.sweep.run as sweep_run

    raw = make_raw(args.model, args.images, args.epochs, args.trials, workers)
    params = parse_params(raw)
    fresh_store(root)
    log = root / "trains.jsonl"
    clock = RayClock(sweep_run.ray_session)
    sweep_run.ray_session = clock
    try:
        start = time.time()
        summary = sweep_run.run_sweep(
            params,
            tiles,
            root / "out",
            state_dir=root / "state",
            train_fn=functools.partial(timed_train, str(log)),
            num_cpus=cpus,
        )
        end = time.time()
    finally:
        sweep_run.ray_session = clock.session
    bad = [r for r in summary["rows"] if r["status"] != "completed"]
    if bad or len(summary["rows"]) != args.trials:
        raise SystemExit(f"{workers} worker(s): not every trial completed: {bad}")
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    spans.sort(key=lambda s: s["enter"])
    if len(spans) != args.trials:
        raise SystemExit(
            f"{workers} worker(s): {len(spans)} train() calls for {args.trials} trials"
        )
    exits = sorted(s["exit"] for s in spans)
    return {
        "workers": workers,
        "ray_cpus": cpus,
        "at_once": at_once(spans),
        "total": end - start,
        "startup": clock.ready - start,
        "inside": clock.leave - clock.ready,
        "shutdown": end - clock.leave,
        "train_span": statistics.median(s["exit"] - s["enter"] for s in spans),
        # Meaningful for the sequential run: the period of the one-trial-at-a-time pipeline,
        # and the time from one train() returning to the next one entering.
        "cycle": statistics.median(b - a for a, b in itertools.pairwise(exits)),
        "gap": statistics.median(b["enter"] - a["exit"] for a, b in itertools.pairwise(spans)),
        "first_start": spans[0]["enter"] - clock.ready,  # Tuner, parent run, first trial's start
        "last_end": clock.leave - exits[-1],  # last trial's final report, results, outputs
    }


def trial_raw_params(args):
    from segbench.sweep.space import trial_params

    raw = make_raw(args.model, args.images, args.epochs, 1, 1)
    config = {"train.lr": raw["train"]["lr"]}
    return raw, config, trial_params(parse_params(raw), config, args.epochs)


def direct_arm(args, tiles: Path, root: Path) -> float:
    import torch

    from segbench.training import train

    _, _, params = trial_raw_params(args)
    fresh_store(root)
    torch.set_num_threads(1)  # what run_trial sets for a 1-CPU trial
    start = time.time()
    train(args.model, params, tiles, root / "model", run_name=f"{args.model} direct")
    return time.time() - start


def fresh_arm(args, tiles: Path, root: Path) -> dict:
    raw, config, _ = trial_raw_params(args)
    fresh_store(root)
    payload = {
        "raw": raw,
        "model": args.model,
        "config": config,
        "epochs": args.epochs,
        "tiles": str(tiles),
        "out": str(root / "model"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as Ray sets it for a 1-CPU worker
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", FRESH_CHILD, json.dumps(payload)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    return {"imports": child["ready"] - start, "train": child["train"]}


def sequential_error(workers: int, seen: int) -> str:
    if workers == 1:
        return (
            f"sweep.max_concurrent=1 was not honoured: {seen} trials trained at once on the "
            "2-CPU Ray (with a BasicVariantGenerator as search_alg, Ray Tune ignores "
            "TuneConfig.max_concurrent_trials and only logs a warning), so the sequential "
            "figures would be void. Fix the sweep, or run with --sequential-by cpus (a 1-CPU "
            "Ray as a stand-in)."
        )
    return f"max_concurrent={workers}: at most {seen} trial(s) trained at once"


def commit() -> str:
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "src").strip()
    return git("rev-parse", "--short", "HEAD").strip() + (" + uncommitted src/" if changed else "")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def spread(values, scale: float = 1.0) -> str:
    """``median (min-max)`` of per-repeat figures."""
    values = [scale * v for v in values]
    return f"{statistics.median(values):.2f} ({min(values):.2f} to {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trials",
        type=int,
        default=8,
        help="equal trials per sweep (>= 2); 8 keeps each worker's one-off start-up a small share",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="unet", help="a trained models entry of params.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=16, help="synthetic 192x256 images")
    parser.add_argument(
        "--sequential-by",
        choices=["max_concurrent", "cpus"],
        default="max_concurrent",
        help="how the 1-worker arm runs one trial at a time: sweep.max_concurrent=1 on a 2-CPU "
        "Ray (what is to be measured), or a 1-CPU Ray (a stand-in)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.trials < 2:
        parser.error("--trials: at least 2 (a per-trial cycle needs two trials in a row)")

    from segbench.fetch import fetch
    from segbench.prepare import prepare
    from segbench.sweep.cluster import ray_session

    load_before = os.getloadavg()
    began = time.time()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with (
        tempfile.TemporaryDirectory(prefix="segbench-sweep-") as tmp,
        tempfile.TemporaryDirectory(prefix="sbr", dir="/tmp") as ray_tmp,
    ):
        # A Ray of our own: its session files and sockets apart from other jobs' Rays on this
        # machine, and their `ray start` heads out of sight (ray.init() without an address joins
        # the one <RAY_TMPDIR>/ray/ray_current_cluster names). A short name keeps Ray's socket
        # paths under the 107-byte AF_UNIX limit.
        os.environ["RAY_TMPDIR"] = ray_tmp
        tmp = Path(tmp)
        params = parse_params(make_raw(args.model, args.images, args.epochs, args.trials, 1))
        fetch(params, tmp / "raw")
        prepare(params.prepare, tmp / "raw", tmp / "tiles")
        tiles = tmp / "tiles"
        # Untimed warm-ups: the first ray.init and the first train() in this process pay imports
        # and first-use costs that later runs do not, and that belong to no arm.
        with ray_session(num_cpus=2):
            pass
        direct_arm(args, tiles, tmp / "warm")
        runs = {"direct": [], "fresh": [], 1: [], 2: [], "load": []}
        arms = ["direct", "fresh", 1, 2]
        for rep in range(args.repeats):
            # Reverse the order every other repeat: a shared 2-core VM drifts in speed over
            # minutes, and the efficiency pairs the 1- and 2-worker runs of one repeat.
            for arm in arms if rep % 2 == 0 else arms[::-1]:
                where = tmp / f"r{rep}-{arm}"
                if arm == "direct":
                    runs[arm].append(direct_arm(args, tiles, where))
                elif arm == "fresh":
                    runs[arm].append(fresh_arm(args, tiles, where))
                else:
                    cpus = 1 if arm == 1 and args.sequential_by == "cpus" else 2
                    run = sweep_arm(args, arm, cpus, tiles, where)
                    if run["at_once"] != arm:
                        raise SystemExit(sequential_error(arm, run["at_once"]))
                    runs[arm].append(run)
                # Other jobs on this machine skew the 2-worker arm most (it needs both cores):
                # the 1-minute load average at the end of each arm goes with the figures.
                runs["load"].append({"repeat": rep, "arm": str(arm), "load": os.getloadavg()[0]})
                print(f"repeat {rep + 1}/{args.repeats}: {arm} done", flush=True)
    load_after = os.getloadavg()
    report(args, runs, load_before, load_after, time.time() - began)


def report(args, runs, load_before, load_after, seconds: float) -> None:
    import torch

    one, two, direct, fresh = runs[1], runs[2], runs["direct"], runs["fresh"]
    n, reps = args.trials, range(args.repeats)
    eff_total = [one[i]["total"] / (2 * two[i]["total"]) for i in reps]
    eff_inside = [one[i]["inside"] / (2 * two[i]["inside"]) for i in reps]
    overhead = [one[i]["cycle"] - direct[i] for i in reps]
    fresh_cost = [fresh[i]["imports"] + fresh[i]["train"] - direct[i] for i in reps]
    one_ray = "1-CPU Ray" if args.sequential_by == "cpus" else "max_concurrent 1"
    print(
        f"\n{datetime.date.today().isoformat()}, commit {commit()}, {cpu_model()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; {args.model}, {args.epochs} epochs, "
        f"{args.images} images; {n} trials per sweep, 1 CPU and 1 torch thread each; "
        f"median (min to max) of {args.repeats} repeats; load average {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after; {seconds:.0f} s in all"
    )
    print(f"\n| run_sweep (s) | 1 worker ({one_ray}) | 2 workers (max_concurrent 2, 2-CPU Ray) |")
    print("| --- | --- | --- |")
    for label, key in [
        ("whole run_sweep", "total"),
        ("Ray start-up", "startup"),
        ("inside Ray: Tuner, trials, outputs", "inside"),
        ("Ray shutdown and clean-up", "shutdown"),
        ("train() in one trial (median)", "train_span"),
    ]:
        print(f"| {label} | {spread(r[key] for r in one)} | {spread(r[key] for r in two)} |")
    print("\n| parallel efficiency T1 / (2 x T2), % | median (min to max) |")
    print("| --- | --- |")
    print(f"| whole run_sweep | {spread(eff_total, 100)} |")
    print(f"| inside Ray (the target's figure) | {spread(eff_inside, 100)} |")
    print("\n| per trial (s) | median (min to max) |")
    print("| --- | --- |")
    in_train = [r["train_span"] - d for r, d in zip(one, direct, strict=True)]
    amortised = [r["inside"] / n - d for r, d in zip(one, direct, strict=True)]
    rows = [
        ("direct train(), in this process, warm", direct),
        ("Ray, 1 worker: cycle, one train() return to the next", [r["cycle"] for r in one]),
        ("**overhead per trial**: cycle - direct (the target's figure)", overhead),
        ("- inside train(): Ray's train() - direct", in_train),
        ("- between trials: one train() return to the next's entry", [r["gap"] for r in one]),
        (
            "once per sweep: inside Ray - trials x cycle",
            [r["inside"] - n * r["cycle"] for r in one],
        ),
        ("amortised: inside Ray / trials - direct", amortised),
        ("reference, fresh process: start-up and imports", [f["imports"] for f in fresh]),
        ("reference, fresh process: first train()", [f["train"] for f in fresh]),
        ("reference, fresh process: both - direct", fresh_cost),
    ]
    for label, values in rows:
        print(f"| {label} | {spread(values)} |")
    print(
        "\n| repeat | efficiency inside Ray % | whole % | overhead s | 1-min load after each arm |"
    )
    print("| --- | --- | --- | --- | --- |")
    for i in reps:
        loads = ", ".join(f"{x['arm']} {x['load']:.1f}" for x in runs["load"] if x["repeat"] == i)
        print(
            f"| {i + 1} | {100 * eff_inside[i]:.1f} | {100 * eff_total[i]:.1f} | "
            f"{overhead[i]:.2f} | {loads} |"
        )
    e, o = statistics.median(eff_inside), statistics.median(overhead)
    print(
        f"\nverdict: parallel efficiency inside Ray {100 * e:.0f}% (target >= "
        f"{100 * EFFICIENCY_TARGET:.0f}%): {'met' if e >= EFFICIENCY_TARGET else 'NOT met'}; "
        f"whole run_sweep {100 * statistics.median(eff_total):.0f}%"
    )
    print(
        f"verdict: Ray overhead per trial {o:.2f} s (target < {OVERHEAD_TARGET_S:g} s): "
        f"{'met' if o < OVERHEAD_TARGET_S else 'NOT met'}; a fresh process alone costs "
        f"{statistics.median(fresh_cost):.2f} s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": datetime.date.today().isoformat(),
            "commit": commit(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "load_before": load_before,
            "load_after": load_after,
            "runs": {str(k): v for k, v in runs.items()},
            "efficiency_total": eff_total,
            "efficiency_inside": eff_inside,
            "overhead_per_trial": overhead,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
