"""Benchmark: what logging to MLflow costs a training run, with MLflow off, a tracking server that does not
answer (a closed port), and (with ``--uri``) a live one.

    python benchmarks/mlflow_overhead.py [--uri http://127.0.0.1:5000] [--repeat 3] [--epochs 3]

One process, a fresh workspace, a synthetic three-class dataset, MobileNetV2 alpha 0.35 at 96 px (offline
weights from ../shared/keras_home); one warm-up run, then the modes alternate ``--repeat`` times. For each
run: ``finished_s``, the time until the run's status is *finished* (what a user waits for), and ``total_s``,
until ``train`` returns (a live log then has sent the model and files). Prints medians and ratios against
MLflow off as key=value lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def closed_port_uri() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again once the socket is


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", help="a live tracking server (else only off and dead are measured)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tl-mlflow-bench-"))
    os.environ["TL_HOME"] = str(tmp / "workspace")
    shutil.copytree(REPO.parent / "shared" / "keras_home", tmp / "keras_home")
    os.environ["KERAS_HOME"] = str(tmp / "keras_home")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from tests.factories import colors_dataset, small_config
    from tl_core.training.runner import train

    colors_dataset(tmp, classes=("red", "blue", "green"), per_class=20, size=96)
    modes = {"off": "", "dead": closed_port_uri()}
    if args.uri:
        modes["live"] = args.uri
    os.environ["TL_MLFLOW_EXPERIMENT"] = "mlflow-overhead-benchmark"

    def one(uri: str) -> tuple[float, float, object]:
        os.environ["TL_MLFLOW_TRACKING_URI"] = uri
        started = time.time()
        run, _ = train(small_config(size=96, epochs=args.epochs))
        total = time.time() - started
        return run.path("status.json").stat().st_mtime - started, total, run

    one("")  # warm-up: TensorFlow's first graphs, the engine conversion, the feature cache
    times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):
        for mode, uri in modes.items():
            finished, total, run = one(uri)
            times[mode].append((finished, total))
            if mode != "off":
                logged = run.mlflow().get("complete", False)
                print(f"# {mode}: finished {finished:.2f} s, returned {total:.2f} s, logged={logged}", flush=True)
    print(f"cores={os.cpu_count()} load_1min={os.getloadavg()[0]:.1f} repeat={args.repeat} epochs={args.epochs}")
    off = statistics.median(f for f, _ in times["off"])
    for mode, pairs in times.items():
        finished, total = statistics.median(f for f, _ in pairs), statistics.median(t for _, t in pairs)
        print(f"{mode}_finished_s={finished:.2f}")
        print(f"{mode}_total_s={total:.2f}")
        if mode != "off":
            print(f"{mode}_finished_ratio={finished / off:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
