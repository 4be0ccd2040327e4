"""``segbench sweep``: Ray Tune over training keys (the ``sweep`` section of the params).

An interrupted sweep resumes from its verified saved progress when run again; ``--fresh``, or
``SEGBENCH_RESUME=0`` in the environment (through ``dvc repro`` too), starts it afresh.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

from segbench.commands import add_fresh_option, parser_for
from segbench.errors import SegbenchError, exit_on_user_error
from segbench.timing import phase

NAME, HELP = "sweep", "Ray Tune over training keys (sweep section of params)"


def add_arguments(parser) -> None:
    parser.add_argument("--tiles", required=True)
    parser.add_argument("--plan", required=True, help="the sweep_plan stage's directory")
    parser.add_argument("--out", required=True, help="trials.csv and best.json go here")
    parser.add_argument("--state", required=True, help="the sweep's state until it ends")
    add_fresh_option(parser, "the sweep")


def run(args) -> None:
    from segbench.config import load_params
    from segbench.sweep.plan import check_plan
    from segbench.sweep.run import run_sweep

    params = load_params(args.params)
    check_plan(params, args.plan)
    if params.sweep.enabled and importlib.util.find_spec("ray") is None:
        # Ray is in the pipeline extra, not in segbench itself.
        raise SegbenchError(
            "the sweep needs Ray, which is not installed: install the pipeline extra "
            "(`pip install 'segbench[pipeline]'`, or `make setup`), or set sweep.enabled: false"
        )
    with phase("compute"):
        summary = run_sweep(params, args.tiles, args.out, state_dir=args.state, fresh=args.fresh)
    if summary["best"] is not None:
        best = summary["best"]
        values = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        counts = Counter(row["status"] for row in summary["rows"])
        print(
            f"sweep@{best['model']}: {summary['trials']} trials ("
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"); best {best.get('metric', 'best_val_score')} {best['value']:.3f} with {values}"
        )
        print(f"sweep: wrote {args.out} (trials.csv, best.json)")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
