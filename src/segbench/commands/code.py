"""``segbench code``: write the digest of the code each stage runs (``code/<script>.json``)."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "code", "write the digest of the files each stage script can run"


def add_arguments(parser) -> None:
    parser.add_argument("--stages", required=True, help="folder of the stage scripts")
    parser.add_argument("--src", required=True, help="folder holding the segbench package")
    parser.add_argument("--out", required=True, help="one <script>.json per stage script")


def run(args) -> None:
    from segbench.codedeps import write_code_digests

    with phase("compute"):
        digests = write_code_digests(".", args.stages, args.src, args.out)
    sizes = ", ".join(f"{stem} {len(d['files'])}" for stem, d in digests.items())
    print(f"code: wrote {args.out} (files per stage: {sizes})")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments, params=False).parse_args(argv))
