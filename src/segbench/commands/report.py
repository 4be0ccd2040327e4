"""``segbench report``: write the HTML report, the Markdown summary and DVC plots data."""

from __future__ import annotations

from pathlib import Path

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "report", "write the HTML report and Markdown summary"


def add_arguments(parser) -> None:
    parser.add_argument("--raw", required=True)
    parser.add_argument("--eval", required=True, help="one directory per model and ensemble")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sweeps", default=None, help="a sweep's output (plotted if trials.csv)")


def run(args) -> None:
    from segbench.comparison import terminal_table
    from segbench.config import load_params
    from segbench.report import report

    params = load_params(args.params)
    with phase("compute"):
        rows = report(
            params, raw_dir=args.raw, eval_dir=args.eval, out_dir=args.out, sweeps_dir=args.sweeps
        )
    print(terminal_table(rows))
    print(f"\nreport: {Path(args.out, 'report.html').resolve()}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
