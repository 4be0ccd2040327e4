"""The ``segbench`` command: the pipeline's functions outside DVC, plus ``summary`` and ``predict``.

The DVC stage scripts in ``stages/`` call :func:`main` with their subcommand, so a stage run by
DVC, by Prefect, or by hand goes through exactly the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from segbench.errors import SegbenchError, exit_on_user_error
from segbench.io import read_json


def _cmd_fetch(args) -> None:
    from segbench.config import load_params
    from segbench.fetch import describe, fetch

    summary = fetch(load_params(args.params), args.out)
    print(describe(summary))
    print(f"fetch: wrote {args.out} (manifest.csv, summary.json)")


def _cmd_prepare(args) -> None:
    from segbench.config import load_params
    from segbench.prepare import prepare

    summary = prepare(load_params(args.params).prepare, args.raw, args.out)
    print(
        f"prepare: wrote {summary['tiles']} tiles ({summary['train_tiles_by_kind']} train, "
        f"augment {summary['augment']}) to {args.out}"
    )


def _cmd_train(args) -> None:
    from segbench.config import load_raw, parse_params
    from segbench.models import get_spec
    from segbench.sweep.promote import promoted_params
    from segbench.train import train

    raw = load_raw(args.params)
    params = parse_params(raw, source=args.params)
    if args.model in params.ensembles or (
        args.model not in params.models and get_spec(args.model).kind == "ensemble"
    ):  # get_spec: an unknown name lists the valid ones
        raise SegbenchError(
            "ensembles are not trained: list them under `ensembles:` in params.yaml; "
            "`segbench ensemble NAME` (DVC stage ensemble@NAME) chooses their weights"
        )
    if args.model not in params.models:
        raise SegbenchError(f"models.{args.model}: not configured in {args.params}; add it there")
    tuned = promoted_params(params, raw, args.model, args.promoted)
    if tuned is not params:
        values = ", ".join(f"{k}={v}" for k, v in read_json(args.promoted)["config"].items())
        print(f"train@{args.model}: the sweep's best configuration ({values})")
        params = tuned
    if params.train.devices > 1 and "LOCAL_RANK" not in os.environ:
        sys.exit(_launch_local(params.train.devices, args))
    metrics = train(args.model, params, args.tiles, args.out)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"train@{args.model}: " + json.dumps(metrics, default=str))


def _launch_local(devices: int, args) -> int:
    """Re-run this very command as ``devices`` DDP processes (segbench.launch); exit status."""
    from segbench.launch import launch_local

    argv = ["train", args.model, "--tiles", args.tiles, "--out", args.out]
    argv += ["--params", args.params]
    if args.promoted:
        argv += ["--promoted", args.promoted]
    print(
        f"train@{args.model}: launching {devices} processes (DDP; they meet through a file, "
        "sockets on the loopback interface only)"
    )
    return launch_local(devices, argv)


def _cmd_sweep(args) -> None:
    from segbench.config import load_raw, parse_params
    from segbench.sweep.run import run_sweep

    raw = load_raw(args.params)
    summary = run_sweep(
        parse_params(raw, source=args.params), raw, args.tiles, args.out, state_dir=args.state
    )
    if summary["best"] is not None:
        best = summary["best"]
        values = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        counts = Counter(row["status"] for row in summary["rows"])
        print(
            f"sweep@{best['model']}: {summary['trials']} trials ("
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"); best validation Dice {best['value']:.3f} with {values}"
        )
        print(f"sweep: wrote {args.out} (trials.csv, best.json)")


def _cmd_promote(args) -> None:
    from segbench.config import load_params
    from segbench.sweep.promote import promote

    files = promote(load_params(args.params), args.best, args.out)
    taken = [name for name, f in files.items() if f["from_sweep"]]
    print(
        f"promote: {', '.join(taken)} train with the sweep's best configuration"
        if taken
        else "promote: no models entry has from_sweep: true"
    )


def _cmd_ensemble(args) -> None:
    from segbench.config import load_params
    from segbench.ensemble import fit_ensemble

    metrics = fit_ensemble(args.name, load_params(args.params), args.raw, args.models, args.out)
    weights = ", ".join(f"{k[7:]} {v:.2f}" for k, v in metrics.items() if k.startswith("weight_"))
    alone = ", ".join(f"{k[9:]} {v:.3f}" for k, v in metrics.items() if k.startswith("val_dice_"))
    print(
        f"ensemble@{args.name}: weights {weights}; validation Dice {metrics['val_dice']:.3f} "
        f"(members alone: {alone})"
    )


def _cmd_evaluate(args) -> None:
    from segbench.config import load_params
    from segbench.evaluate import evaluate

    metrics = evaluate(args.model_dir, load_params(args.params), args.raw, args.out)
    print(f"evaluate: Dice {metrics['dice']:.3f} over {metrics['n_images']} test images")


def _cmd_report(args) -> None:
    from segbench.comparison import terminal_table
    from segbench.config import load_params
    from segbench.report import report

    rows = report(
        load_params(args.params),
        raw_dir=args.raw,
        models_dir=args.models,
        ensembles_dir=args.ensembles,
        eval_dir=args.eval,
        out_dir=args.out,
        sweeps_dir=args.sweeps,
    )
    print(terminal_table(rows))
    print(f"\nreport: {Path(args.out, 'report.html').resolve()}")


def _cmd_summary(args) -> None:
    from segbench.comparison import rows_from_csv, terminal_table
    from segbench.io import read_csv

    report_dir = Path(args.report_dir)
    print(terminal_table(rows_from_csv(read_csv(report_dir / "comparison.csv"))))
    print(f"\nHTML report: {(report_dir / 'report.html').resolve()}")


def _cmd_predict(args) -> None:
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
    )
    if summary["ignored"]:
        print(f"predict: ignored {len(summary['ignored'])} files that are not images")
    overlays = f" (overlays in {summary['overlays_dir']})" if summary["overlays_dir"] else ""
    print(f"predict: wrote {summary['written']} masks to {summary['output_dir']}{overlays}")
    if summary["skipped"]:
        # Raised only now, so that one bad file does not cost the masks of all the others.
        raise SegbenchError(
            f"{len(summary['skipped'])} image(s) skipped, see the warnings above: "
            + ", ".join(summary["skipped"])
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        if name not in ("summary", "predict"):
            p.add_argument("--params", default="params.yaml", help="params file")
        return p

    p = add("fetch", _cmd_fetch, "materialise data.source as images, masks and a manifest")
    p.add_argument("--out", required=True)
    p = add("prepare", _cmd_prepare, "cut train/val images into tiles")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p = add("train", _cmd_train, "train (or fit) one model on the tiles")
    p.add_argument("model")
    p.add_argument("--tiles", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--promoted", default=None, help="the promote stage's file for this entry (from_sweep)"
    )
    p = add("sweep", _cmd_sweep, "Ray Tune over training keys (sweep section of params)")
    p.add_argument("--tiles", required=True)
    p.add_argument("--out", required=True, help="trials.csv and best.json go here")
    p.add_argument("--state", required=True, help="Ray Tune's state until the sweep finishes")
    p = add("promote", _cmd_promote, "hand the sweep's best configuration to train@<entry>")
    p.add_argument("--best", required=True, help="the sweep's best.json")
    p.add_argument("--out", required=True, help="one <entry>.json per models entry")
    p = add("ensemble", _cmd_ensemble, "choose an ensemble's weights on the validation split")
    p.add_argument("name", help="a key of the ensembles section")
    p.add_argument("--raw", required=True)
    p.add_argument("--models", required=True, help="directory of the trained members")
    p.add_argument("--out", required=True)
    p = add("evaluate", _cmd_evaluate, "evaluate a trained model on the full-size test images")
    p.add_argument("model_dir")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p = add("report", _cmd_report, "write the HTML report and Markdown summary")
    for flag in ("--raw", "--models", "--eval", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--ensembles", default="ensembles", help="directory of the fitted ensembles")
    p.add_argument("--sweeps", default=None, help="a sweep's output (plotted if trials.csv exists)")
    p = add("summary", _cmd_summary, "print the comparison table of a written report")
    p.add_argument("report_dir")
    p = add("predict", _cmd_predict, "segment a folder of images with a trained model")
    p.add_argument("model_dir", help="a trained model or ensemble, e.g. models/unet")
    p.add_argument("input_dir", help="folder of png/jpg/jpeg/tif/tiff images (not recursive)")
    p.add_argument("output_dir", help="where <image stem>.png masks ({0, 255}) are written")
    p.add_argument("--threshold", type=float, default=0.5, help="probability -> mask")
    p.add_argument("--min-area", type=int, default=0, help="drop smaller components (pixels)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap fraction")
    p.add_argument("--blend", choices=("gaussian", "mean"), default="gaussian")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--overlays", action="store_true", help="also write overlays/<stem>.png")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
