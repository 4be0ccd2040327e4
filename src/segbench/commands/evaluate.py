"""``segbench evaluate``: evaluate a trained model on the full-size test images."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "evaluate", "evaluate a trained model on the full-size test images"


def add_arguments(parser) -> None:
    parser.add_argument("model_dir")
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from segbench.config import load_params
    from segbench.evaluate import evaluate

    params = load_params(args.params)
    with phase("compute"):
        metrics = evaluate(args.model_dir, params, args.raw, args.out)
    print(f"evaluate: Dice {metrics['dice']:.3f} over {metrics['n_images']} test images")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
