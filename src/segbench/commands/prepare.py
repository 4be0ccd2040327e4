"""``segbench prepare``: cut train/val images into tiles."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "prepare", "cut train/val images into tiles"


def add_arguments(parser) -> None:
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from segbench.config import load_params
    from segbench.prepare import prepare

    params = load_params(args.params)
    with phase("compute"):
        summary = prepare(params.prepare, args.raw, args.out)
    print(
        f"prepare: wrote {summary['tiles']} tiles ({summary['train_tiles_by_kind']} train, "
        f"augment {summary['augment']}) to {args.out}"
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
