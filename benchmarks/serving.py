"""The chosen model at work: served over loopback against in-process, ONNX Runtime against torch.

    python benchmarks/serving.py [--repeats 5] [--model NAME] [--json PATH]

Run after `make run` (it reads the pipeline's outputs: the registered champion in the project's
MLflow store, ``models/<name>/``, ``eval/<name>/metrics.json`` and the test images in
``data/raw``). In one run, on the same test images:

* **served**: ``mlflow models serve -m models:/<registered name>@champion --env-manager local``
  on 127.0.0.1 (one worker), one image per ``POST /invocations`` request (JSON ``inputs``),
  timed at the client: images per second, p50 and p95 latency;
* **in-process**: segbench's predictor (:func:`segbench.predict.load_predictor` with the
  evaluation's settings) and the same mask step (:func:`segbench.postprocess.to_labels`), per
  image, in this process;
* **ONNX Runtime vs torch**: the champion (or ``--model``, when the champion has no ONNX graph)
  exported with ``segbench export`` into a temporary folder, then
  :func:`segbench.export.load_onnx_predictor` against the torch predictor, the same
  preprocessing, sliding window and blending, probabilities per image.

Each figure is the median over ``--repeats`` passes over the test images (after one untimed
warm-up pass each; the sides alternate order from repeat to repeat). Latencies pool all requests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_images(raw: Path):
    from segbench.classes import read_channels
    from segbench.io import read_csv, read_image

    channels = read_channels(raw)
    rows = [r for r in read_csv(raw / "manifest.csv") if r["split"] == "test"]
    return [read_image(raw / r["image"], channels) for r in rows]


def champion(params) -> tuple[str, str, str]:
    """(registered name, alias, segbench entry) of the champion in this project's store."""
    import mlflow

    from segbench.registry import registered_name
    from segbench.tracking import tracking_uri

    name, alias = registered_name(params), params.report.registry.alias
    client = mlflow.MlflowClient(tracking_uri())
    version = client.get_model_version_by_alias(name, alias)
    return name, alias, version.tags["segbench.model"]


def serve(uri: str, log: Path):
    port = free_port()
    # MLflow starts `uvicorn` by name: the virtualenv's bin goes first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": _tracking(), "PATH": path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"the model server did not come up; see {log}")


def _tracking() -> str:
    from segbench.tracking import tracking_uri

    return tracking_uri()


def post(url: str, image: np.ndarray) -> np.ndarray:
    body = json.dumps({"inputs": image[None].tolist()}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as r:
        return np.asarray(json.loads(r.read())["predictions"], dtype=np.uint8)[0]


def timed(fn, images) -> list[float]:
    out = []
    for image in images:
        start = time.perf_counter()
        fn(image)
        out.append(time.perf_counter() - start)
    return out


def summary(passes: list[list[float]]) -> dict:
    """Median images/s over passes; p50/p95 latency over every call (ms)."""
    pooled = np.array([t for p in passes for t in p]) * 1000
    return {
        "images_per_second": statistics.median(len(p) / sum(p) for p in passes),
        "p50_ms": float(np.percentile(pooled, 50)),
        "p95_ms": float(np.percentile(pooled, 95)),
        "calls": int(pooled.size),
    }


def compare(sides: dict, images, repeats: int) -> dict:
    """Each side over the images ``repeats`` times (one warm-up pass first), order alternated."""
    for fn in sides.values():
        timed(fn, images[:1])
    passes = {k: [] for k in sides}
    names = list(sides)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            passes[k].append(timed(sides[k], images))
    return {k: summary(v) for k, v in passes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="unet", help="exported when the champion cannot be")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.chdir(ROOT)
    from segbench.config import load_params
    from segbench.errors import SegbenchError
    from segbench.evalmetrics import EvalMetrics
    from segbench.export import export_onnx, load_onnx_predictor
    from segbench.postprocess import to_labels
    from segbench.predict import load_predictor

    params = load_params("params.yaml")
    name, alias, entry = champion(params)
    metrics = EvalMetrics.read(Path("eval") / entry, stage=f"evaluate@{entry}")
    images = test_images(Path("data/raw"))
    local = load_predictor(
        Path("models") / entry,
        overlap=params.evaluate.overlap,
        batch_size=params.evaluate.batch_size,
        blend=params.evaluate.blend,
        tta=metrics.tta,
    )

    def in_process(image):
        return to_labels(local.predict_proba(image), metrics.threshold, metrics.min_area)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = serve(f"models:/{name}@{alias}", Path(tmp) / "serve.log")
        try:
            agree = all(np.array_equal(post(url, i), in_process(i)) for i in images[:2])
            served = compare(
                {"served (HTTP, loopback)": lambda i: post(url, i), "in-process": in_process},
                images,
                args.repeats,
            )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        onnx_model = entry
        try:
            export_onnx(Path("models") / entry, Path(tmp) / "onnx", eval_dir=Path("eval") / entry)
        except SegbenchError as exc:
            print(f"{entry}: {exc}; exporting {args.model} instead", file=sys.stderr)
            onnx_model = args.model
            export_onnx(Path("models") / onnx_model, Path(tmp) / "onnx")
        torch_side = load_predictor(
            Path("models") / onnx_model,
            overlap=params.evaluate.overlap,
            batch_size=params.evaluate.batch_size,
            blend=params.evaluate.blend,
        )
        ort_side = load_onnx_predictor(
            Path(tmp) / "onnx", overlap=params.evaluate.overlap, blend=params.evaluate.blend
        )
        diff = max(
            float(np.abs(ort_side.predict_proba(i) - torch_side.predict_proba(i)).max())
            for i in images
        )
        runtimes = compare(
            {"onnxruntime": ort_side.predict_proba, "torch": torch_side.predict_proba},
            images,
            args.repeats,
        )
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "champion": f"models:/{name}@{alias} ({entry})",
        "images": len(images),
        "image_shape": list(images[0].shape),
        "repeats": args.repeats,
        "served_equals_in_process": agree,
        "serving": served,
        "onnx_model": onnx_model,
        "onnx_max_abs_diff": diff,
        "runtimes": runtimes,
    }
    print(json.dumps(result, indent=2))
    for title, table in (("serving", served), ("runtimes", runtimes)):
        print(f"\n{title}: {result['champion'] if title == 'serving' else onnx_model}")
        for side, s in table.items():
            print(
                f"  {side:26s} {s['images_per_second']:7.2f} img/s   p50 {s['p50_ms']:8.1f} ms"
                f"   p95 {s['p95_ms']:8.1f} ms"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
