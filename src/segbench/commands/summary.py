"""``segbench summary``: print the comparison table of a written report."""

from __future__ import annotations

from pathlib import Path

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error

NAME, HELP = "summary", "print the comparison table of a written report"


def add_arguments(parser) -> None:
    parser.add_argument("report_dir")


def run(args) -> None:
    from segbench.comparison import rows_from_csv, terminal_table
    from segbench.io import read_csv

    report_dir = Path(args.report_dir)
    print(terminal_table(rows_from_csv(read_csv(report_dir / "comparison.csv"))))
    print(f"\nHTML report: {(report_dir / 'report.html').resolve()}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments, params=False).parse_args(argv))
