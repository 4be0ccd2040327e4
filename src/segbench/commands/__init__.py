"""The ``segbench`` subcommands, one module each, so that a DVC stage imports only its own.

Every module has ``NAME`` and ``HELP``, ``add_arguments(parser)``, ``run(args)`` and ``main(argv)``;
``stages/<stage>.py`` calls one ``main`` and :mod:`segbench.cli` gathers them all. Heavy modules
are imported inside ``run``, so building the parser costs nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def parser_for(name: str, help_: str, add_arguments: Callable, *, params: bool = True):
    """A stand-alone parser of one subcommand (``segbench <name>``)."""
    parser = argparse.ArgumentParser(prog=f"segbench {name}", description=help_)
    if params:
        add_params_option(parser)
    add_arguments(parser)
    return parser


def add_params_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file")
