"""``segbench check``: validate params.yaml as a whole before any stage runs."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "check", "validate params.yaml before any stage deletes an output"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory of params.json")


def run(args) -> None:
    from segbench.check import write_check
    from segbench.config import load_params

    params = load_params(args.params)
    with phase("compute"):
        models = write_check(params, args.out, source=args.params)
    print(f"check: {args.params} is valid ({len(models)} models); wrote {args.out}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
