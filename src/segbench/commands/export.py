"""``segbench export``: a trained model -> a portable graph (ONNX) and the card to run it."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import exit_on_user_error

NAME, HELP = "export", "export a trained model to ONNX, with a card saying how to run it"
FORMATS = ("onnx",)


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="a trained model or ensemble, e.g. models/unet")
    parser.add_argument(
        "--format", choices=FORMATS, default="onnx", help="the format to write (default: onnx)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="the folder to write (replaced as a whole): model.onnx, export.json, README.md "
        "and the model's card.json (default: exports/<model name>-onnx, e.g. "
        "exports/unet-onnx)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the probability -> mask threshold the card states (default: the evaluation's "
        "with --eval, else 0.5; two-class models only)",
    )
    parser.add_argument(
        "--eval",
        dest="eval_dir",
        default=None,
        help="the model's evaluation, e.g. eval/unet: its tuned threshold, min_area and blend "
        "go into the card",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, 13 .. 20 (default: 17)"
    )
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="sliding-window overlap the card states"
    )
    parser.add_argument(
        "--blend",
        choices=("gaussian", "mean"),
        default=None,
        help="sliding-window blend the card states (default: the evaluation's, else gaussian)",
    )


def run(args) -> None:
    from segbench.export import export_onnx

    out = export_onnx(
        args.model_dir,
        args.out,
        threshold=args.threshold,
        eval_dir=args.eval_dir,
        opset=args.opset,
        overlap=args.overlap,
        blend=args.blend,
    )
    threshold = (
        "argmax over classes"
        if out["threshold"] is None
        else f"threshold {out['threshold']:g} ({out['threshold_source']})"
    )
    print(
        f"export: wrote {out['out_dir']} (model.onnx {out['bytes'] / 1e6:.1f} MB, opset "
        f"{out['opset']}, onnxruntime within {out['max_abs_diff']:.1e} of torch; {threshold})"
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments, params=False).parse_args(argv))
