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
    parser.add_argument(
        "--skip-not-applicable",
        action="store_true",
        help="a model directory its train stage skipped (it cannot run on this data) gives an "
        "evaluation directory that says why (the pipeline's stages); without it, an error",
    )


def run(args) -> None:
    from segbench.config import load_params
    from segbench.errors import SegbenchError
    from segbench.evaluate import evaluate
    from segbench.skipped import skipped_model, write_skipped_eval

    params = load_params(args.params)
    reason = skipped_model(args.model_dir)
    if reason:
        if not args.skip_not_applicable:
            raise SegbenchError(f"{args.model_dir}: not trained: {reason}")
        write_skipped_eval(args.out, reason)
        print(f"evaluate: skipped: {reason}")
        return
    with phase("compute"):
        metrics = evaluate(args.model_dir, params, args.raw, args.out)
    primary = "dice" if "num_classes" not in metrics else "miou"
    print(
        f"evaluate: {'Dice' if primary == 'dice' else 'mIoU'} {metrics[primary]:.3f} over "
        f"{metrics['n_images']} test images"
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
