"""Page cost in a large workspace: 50 datasets and 500 runs, each page timed through the router.

    python benchmarks/page_load.py [--datasets 50] [--runs 500] [--images 400]

Builds a temporary workspace: one real dataset and one real trained run (MobileNetV2 alpha 0.35 at
64 px, weights from ../shared/keras_home), plus copies of the dataset's manifest (``--images`` items
each) and of the run's small files, so listings have real sizes. Then opens every page with
Streamlit's AppTest (a fresh session each time, warm caches as on a running server) and prints the
median seconds per page over 5 opens, as ``page_<name>_s=...`` lines, and ``worst_page_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
PAGES = ["home", "data", "train", "results", "predict"]


def build_workspace(n_datasets: int, n_runs: int, n_images: int) -> None:
    sys.path.insert(0, str(REPO))
    from tl_core.clock import now_iso
    from tl_core.data import datasets
    from tl_core.models.config import TrainConfig
    from tl_core.training.runner import train
    from tl_core.workspace import datasets_dir, runs_dir

    hymenoptera = SHARED / "datasets" / "hymenoptera_data"
    real = datasets.add_folder(hymenoptera, "real")
    run, _ = train(TrainConfig(data="real", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    manifest = json.loads((real.root / "dataset.json").read_text())
    items = (manifest["items"] * (n_images // len(manifest["items"]) + 1))[:n_images]
    for i in range(n_datasets - 1):
        folder = datasets_dir() / f"copy{i:03d}"
        folder.mkdir()
        (folder / "images").symlink_to(real.root / "images")
        (folder / "dataset.json").write_text(
            json.dumps({**manifest, "name": folder.name, "items": items, "num_images": len(items)})
        )
    small = [
        p
        for p in run.root.iterdir()
        if p.is_file() and p.suffix in (".json", ".csv", ".txt") and p.name not in ("model_info.json",)
    ]
    for i in range(n_runs - 1):
        copy = runs_dir() / f"20200101-000000-copy-{i:04d}"
        copy.mkdir()
        for p in small:
            shutil.copy(p, copy / p.name)
    # the real run is the newest, as the pages pick it first
    status = json.loads((run.root / "status.json").read_text())
    status["created"] = now_iso()
    (run.root / "status.json").write_text(json.dumps(status))


def time_pages(repeats: int = 5) -> dict:
    from streamlit.testing.v1 import AppTest

    from tl_app.streamlit_internals import run_app_tests_as_a_server_past_its_first_request

    run_app_tests_as_a_server_past_its_first_request()
    results = {}
    for page in PAGES:
        times = []
        for _ in range(repeats + 1):  # the first open warms caches (model load, base description)
            at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=300).run()
            start = time.perf_counter()
            at.switch_page(f"pages/{page}.py").run()
            times.append(time.perf_counter() - start)
            assert not at.exception, [e.value for e in at.exception]
        results[page] = statistics.median(times[1:])
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tl_pages_") as tmp:
        os.environ["TL_HOME"] = str(Path(tmp) / "workspace")
        keras_home = Path(tmp) / "keras_home"
        shutil.copytree(SHARED / "keras_home", keras_home)
        os.environ["KERAS_HOME"] = str(keras_home)
        os.environ.pop("TL_PASSWORD", None)
        os.chdir(REPO)
        build_workspace(args.datasets, args.runs, args.images)
        results = time_pages()
    print(f"datasets={args.datasets} runs={args.runs} images_per_dataset={args.images}")
    for page, seconds in results.items():
        print(f"page_{page}_s={seconds:.3f}")
    print(f"worst_page_s={max(results.values()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
