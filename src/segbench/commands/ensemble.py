"""``segbench ensemble``: choose an ensemble's weights on the validation split."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error
from segbench.timing import phase

NAME, HELP = "ensemble", "choose an ensemble's weights on the validation split"


def add_arguments(parser) -> None:
    parser.add_argument("name", help="a key of the ensembles section")
    parser.add_argument("--raw", required=True)
    parser.add_argument("--models", required=True, help="directory of the trained members")
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from segbench.config import load_params
    from segbench.ensemble import fit_ensemble

    params = load_params(args.params)
    with phase("compute"):
        metrics = fit_ensemble(args.name, params, args.raw, args.models, args.out)
    weights = ", ".join(f"{k[7:]} {v:.2f}" for k, v in metrics.items() if k.startswith("weight_"))
    alone = ", ".join(f"{k[9:]} {v:.3f}" for k, v in metrics.items() if k.startswith("val_dice_"))
    print(
        f"ensemble@{args.name}: weights {weights}; validation Dice {metrics['val_dice']:.3f} "
        f"(members alone: {alone})"
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
