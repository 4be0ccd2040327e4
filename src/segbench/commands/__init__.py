"""The ``segbench`` subcommands, one module each, so that a DVC stage imports only its own.

Every module has ``NAME`` and ``HELP``, ``add_arguments(parser)``, ``run(args)`` and ``main(argv)``;
``stages/<stage>.py`` calls one ``main`` and :mod:`segbench.cli` gathers them all. Heavy modules
are imported inside ``run``, so building the parser costs nothing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

FRESH = ("0", "false", "no", "off")  # SEGBENCH_RESUME values that mean "start afresh"


def parser_for(name: str, help_: str, add_arguments: Callable, *, params: bool = True):
    """A stand-alone parser of one subcommand (``segbench <name>``)."""
    parser = argparse.ArgumentParser(prog=f"segbench {name}", description=help_)
    if params:
        add_params_option(parser)
    add_arguments(parser)
    return parser


def add_params_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file")


def add_fresh_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--fresh``: start ``what`` afresh instead of continuing where a killed run stopped; its
    default comes from ``SEGBENCH_RESUME`` (``0``, ``false``, ``no``, ``off``), which reaches a
    stage through ``dvc repro`` and Prefect, where no argument can be added."""
    parser.add_argument(
        "--fresh",
        action="store_true",
        default=os.environ.get("SEGBENCH_RESUME", "1").strip().lower() in FRESH,
        help=f"start {what} afresh even where a killed run left its progress (default: "
        "continue it; SEGBENCH_RESUME=0 sets this too)",
    )
