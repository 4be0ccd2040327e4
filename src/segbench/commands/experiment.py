"""``segbench experiment FILE``: run a file of params differences as one DVC experiment.

A file in ``configs/`` holds only the keys that differ from ``params.yaml`` (e.g. the full-scale
settings, the reference study's sweep). This command checks that the two together are valid
params, then runs ``dvc exp run -S key=value ...`` with one ``-S`` per leaf of the file (a
whole value where ``params.yaml`` has no mapping at that key), so ``params.yaml`` itself is never
edited and DVC records the experiment. ``--print`` shows the command without running it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from segbench.commands import add_params_option, parser_for
from segbench.errors import SegbenchError, exit_on_user_error

NAME, HELP = "experiment", "run a file of params differences (configs/) as a DVC experiment"


def add_arguments(parser) -> None:
    parser.add_argument("overrides", help="a YAML file of keys that differ, e.g. configs/x.yaml")
    add_params_option(parser)
    parser.add_argument("--print", action="store_true", help="print the command, run nothing")
    # More `dvc exp run` arguments come after `--` (split off by parse_args below: an argparse
    # positional with nargs="*" would be matched, empty, before a later --print).
    parser.usage = "segbench experiment [-h] [--params PARAMS] [--print] FILE [-- DVC_EXP_RUN_ARGS]"
    parser.set_defaults(dvc_args=[])


def parse_args(parser, argv: list[str]):
    """``argv`` parsed, with everything after the first ``--`` as ``dvc_args`` verbatim."""
    head, tail = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    args = parser.parse_args(head)
    args.dvc_args = tail
    return args


def set_params(base: dict, overrides: dict, prefix: str = "") -> list[str]:
    """``key=value`` for ``dvc exp run -S``: one per leaf of ``overrides``, descending only
    where ``base`` has a mapping too (so a list or a new entry is set whole). A key ``base``
    does not have (an entry's own ``train`` keys, a new entry) is written ``++key=value``:
    DVC's Hydra overrides refuse to add a key without it."""
    out = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out += set_params(base[key], value, f"{dotted}.")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
            text = text.removesuffix("...\n").strip()  # a bare scalar ends its document
            out.append(f"{'' if key in base else '++'}{dotted}={text}")
    return out


def command(params_file: str, overrides_file: str, dvc_args: list[str]) -> list[str]:
    """The ``dvc exp run`` command line; the merged params are validated first."""
    from segbench.config import load_raw, parse_params
    from segbench.config.params import merge_raw

    base = load_raw(params_file)
    overrides: Any = load_raw(overrides_file)
    if not isinstance(overrides, dict):
        raise SegbenchError(f"{overrides_file}: expected a mapping of params keys")
    if "study" in overrides:  # a study file also removes entries, which -S cannot say
        raise SegbenchError(
            f"{overrides_file} is a study file (it has a study: section); apply it with "
            f"`segbench study {overrides_file}`, then run `dvc exp run`"
        )
    parse_params(merge_raw(base, overrides), source=f"{params_file} + {overrides_file}")
    sets = [arg for pair in set_params(base, overrides) for arg in ("-S", pair)]
    return [sys.executable, "-m", "dvc", "exp", "run", *sets, *dvc_args]


def run(args) -> None:
    if Path(args.params).resolve() != Path("params.yaml").resolve():
        raise SegbenchError(
            f"--params {args.params}: DVC experiments change params.yaml of the repository; "
            "run this from the repository root with its params.yaml"
        )
    cmd = command(args.params, args.overrides, args.dvc_args)
    print(shlex.join(["dvc", *cmd[3:]]))
    if not args.print:
        sys.exit(subprocess.run(cmd).returncode)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(parser_for(NAME, HELP, add_arguments, params=False), argv))
