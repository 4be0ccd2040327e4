"""The ``segbench`` command: the pipeline's functions outside DVC, plus ``summary``, ``predict``,
``experiment`` and ``study``.

Each subcommand is a module of :mod:`segbench.commands`; the DVC stage scripts in ``stages/``
call the same modules' ``main``, so a stage run by DVC, by Prefect, or by hand goes through
exactly the same code.
"""

from __future__ import annotations

import argparse
import sys

from segbench.commands import (
    add_params_option,
    check,
    code,
    ensemble,
    evaluate,
    experiment,
    export,
    fetch,
    predict,
    prepare,
    promote,
    report,
    study,
    summary,
    sweep,
    sweep_plan,
    train,
)
from segbench.errors import exit_on_user_error

COMMANDS = (
    code,
    check,
    fetch,
    prepare,
    sweep_plan,
    sweep,
    promote,
    train,
    ensemble,
    evaluate,
    report,
    summary,
    predict,
    export,
    experiment,
    study,
)
# Commands that do not read the params file, or take it as their own argument.
_NO_PARAMS = {summary.NAME, predict.NAME, export.NAME, experiment.NAME, code.NAME}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        p.set_defaults(func=command.run)
        if command.NAME not in _NO_PARAMS:
            add_params_option(p)
        command.add_arguments(p)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == [experiment.NAME]:  # its `-- DVC_ARGS` are handed on verbatim
        args = experiment.parse_args(parser, argv)
    else:
        args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
