"""``segbench promote``: hand the sweep's best configuration to ``train@<entry>``."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "promote", "hand the sweep's best configuration to train@<entry>"


def add_arguments(parser) -> None:
    parser.add_argument("--best", required=True, help="the sweep's best.json")
    parser.add_argument("--out", required=True, help="one <entry>.json per models entry")


def run(args) -> None:
    from segbench.config import load_params
    from segbench.sweep.promote import promote

    params = load_params(args.params)
    with phase("compute"):
        files = promote(params, args.best, args.out)
    taken = [name for name, f in files.items() if f["from_sweep"]]
    print(
        f"promote: {', '.join(taken)} train with the sweep's best configuration"
        if taken
        else "promote: no models entry has from_sweep: true"
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
