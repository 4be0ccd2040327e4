"""``segbench predict``: segment a folder of images with a trained model."""

from __future__ import annotations

from segbench.commands import parser_for
from segbench.errors import SegbenchError, exit_on_user_error

NAME, HELP = "predict", "segment a folder of images with a trained model"


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="a trained model or ensemble, e.g. models/unet")
    parser.add_argument("input_dir", help="folder of png/jpg/jpeg/tif/tiff images (not recursive)")
    parser.add_argument(
        "output_dir",
        help="where <image stem>.png masks are written ({0, 255}; class indices for a model "
        "of several classes)",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="probability -> mask")
    parser.add_argument("--min-area", type=int, default=0, help="drop smaller components (pixels)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--blend", choices=("gaussian", "mean"), default="gaussian")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--overlays", action="store_true", help="also write overlays/<stem>.png")
    parser.add_argument(
        "--tta",
        choices=("none", "flips", "d4"),
        default="none",
        help="test-time augmentation: average the probabilities over 4 flips or the 8 "
        "rotations and reflections (x4 / x8 the time)",
    )
    parser.add_argument(
        "--objects",
        action="store_true",
        help="two-class models: also write objects/<stem>.tif (object labels) and "
        "objects/<stem>.csv (id, area, diameter, centroid, bbox), and objects/summary.csv",
    )
    parser.add_argument(
        "--split",
        choices=("none", "watershed"),
        default="none",
        help="with --objects: connected components, or touching objects split by a "
        "distance-transform watershed",
    )
    parser.add_argument(
        "--min-distance",
        type=int,
        default=5,
        help="with --split watershed: least distance between object centres (px)",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names, background first, that the model must predict "
        "(refused if it was trained for others)",
    )


def run(args) -> None:
    from segbench.predict_folder import predict_folder

    summary = predict_folder(
        args.model_dir,
        args.input_dir,
        args.output_dir,
        threshold=args.threshold,
        min_area=args.min_area,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size,
        overlays=args.overlays,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        tta=args.tta,
        objects=args.objects,
        split=args.split,
        min_distance=args.min_distance,
    )
    if summary["ignored"]:
        print(f"predict: ignored {len(summary['ignored'])} files that are not images")
    overlays = f" (overlays in {summary['overlays_dir']})" if summary["overlays_dir"] else ""
    print(f"predict: wrote {summary['written']} masks to {summary['output_dir']}{overlays}")
    if summary["objects_dir"]:
        print(
            f"predict: {summary['objects']} objects, labels and tables in {summary['objects_dir']}"
        )
    if summary["skipped"]:
        # Raised only now, so that one bad file does not cost the masks of all the others.
        raise SegbenchError(
            f"{len(summary['skipped'])} image(s) skipped, see the warnings above: "
            + ", ".join(summary["skipped"])
        )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments, params=False).parse_args(argv))
