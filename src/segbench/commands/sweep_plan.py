"""``segbench sweep-plan``: write what the sweep depends on (``plans/sweep.json``)."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "sweep-plan", "write what the sweep depends on, for its DVC stage to track"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory of sweep.json")


def run(args) -> None:
    from segbench.config import load_params
    from segbench.sweep.plan import write_plan

    params = load_params(args.params)
    with phase("compute"):
        plan = write_plan(params, args.out)
    what = f"sweep of {plan['entry']}" if plan["enabled"] else "no sweep (sweep.enabled: false)"
    print(f"sweep-plan: {what}; wrote {args.out}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
