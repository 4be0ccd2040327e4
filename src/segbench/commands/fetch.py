"""``segbench fetch``: materialise ``data.source`` as images, masks and a manifest."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "fetch", "materialise data.source as images, masks and a manifest"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from segbench.config import load_params
    from segbench.fetch import describe, fetch

    params = load_params(args.params)
    with phase("compute"):
        summary = fetch(params, args.out)
    print(describe(summary))
    print(f"fetch: wrote {args.out} (manifest.csv, summary.json)")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
