"""``segbench train``: train (or fit) one entry of ``models`` on the tiles.

A killed training continues from its checkpoint when run again (same settings, data and code);
``--fresh``, or ``SEGBENCH_RESUME=0`` in the environment (which reaches the stage through
``dvc repro`` and Prefect), starts from the first epoch instead.
"""

from __future__ import annotations

import json
import os
import sys

from segbench.commands import add_fresh_option, parser_for
from segbench.errors import SegbenchError, exit_on_user_error
from segbench.timing import phase

NAME, HELP = "train", "train (or fit) one model on the tiles"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="an entry of models in the params file")
    parser.add_argument("--tiles", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--promoted", default=None, help="the promote stage's file for this entry (from_sweep)"
    )
    add_fresh_option(parser, "training")
    parser.add_argument(
        "--skip-not-applicable",
        action="store_true",
        help="an entry that cannot run on this data (zero-shot SAM on several classes) writes "
        "why to --out and succeeds (the pipeline's stages); without it that is an error",
    )


def run(args) -> None:
    from segbench.config import load_params, not_applicable
    from segbench.devices import check_devices
    from segbench.skipped import write_skipped_model
    from segbench.sweep.promote import promoted_params
    from segbench.training.repeats import train_repeats

    params = load_params(args.params)
    reason = not_applicable(params).get(args.model)
    if reason and args.skip_not_applicable:
        write_skipped_model(args.out, reason)
        print(f"train@{args.model}: skipped: {reason}")
        return
    if args.model in params.ensembles:
        raise SegbenchError(
            f"ensembles.{args.model}: ensembles are not trained; `segbench ensemble "
            f"{args.model}` (DVC stage ensemble@{args.model}) chooses their weights"
        )
    params.entry(args.model)  # an entry that is not configured lists those that are
    params, promoted = promoted_params(params, args.model, args.promoted)
    if promoted is not None:
        values = ", ".join(f"{k}={v}" for k, v in promoted["config"].items())
        print(f"train@{args.model}: the sweep's best configuration ({values})")
    entry = params.entry(args.model)
    devices = entry.train_config(params.train).devices if entry.kind == "torch" else 1
    if "LOCAL_RANK" not in os.environ:
        if entry.kind == "torch":  # the check stage's rule, again here: GPUs come and go
            check_devices(args.model, entry, params.train)
        if devices > 1:
            sys.exit(_launch_local(devices, args))
    with phase("compute"):
        metrics = train_repeats(
            args.model, params, args.tiles, args.out, promoted=promoted, resume=not args.fresh
        )
    if int(os.environ.get("RANK", 0)) == 0:
        # The fit's score at every candidate (an edge baseline tries ~60 thresholds) goes to
        # MLflow; the terminal gets how many there were.
        fits = [k for k in metrics if k.startswith("fit_")]
        shown = {k: v for k, v in metrics.items() if k not in fits}
        shown |= {"fit_candidates": len(fits)} if fits else {}
        print(f"train@{args.model}: " + json.dumps(shown, default=str))


def _launch_local(devices: int, args) -> int:
    """Re-run this very command as ``devices`` DDP processes; their exit status."""
    from segbench.training.distributed import launch_local

    argv = ["train", args.model, "--tiles", args.tiles, "--out", args.out]
    argv += ["--params", args.params]
    if args.promoted:
        argv += ["--promoted", args.promoted]
    if args.fresh:
        argv.append("--fresh")
    print(
        f"train@{args.model}: launching {devices} processes (DDP; they meet through a file, "
        "sockets on the loopback interface only)"
    )
    return launch_local(devices, argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
