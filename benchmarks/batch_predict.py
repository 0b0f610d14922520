"""Batch prediction throughput and peak memory: ``predict --input DIR_OR_ZIP --out FILE.csv`` on 2,000 and
20,000 photos.

    python benchmarks/batch_predict.py [--images 2000 20000] [--size 224] [--zip] [--run RUN_FOLDER] [--keep]

Trains one run in a fresh temporary workspace (hymenoptera, MobileNetV2 alpha 0.35 at ``--size`` px, 3 epochs
on cached features, weights from ../shared/keras_home), unless ``--run`` names a finished run folder. For each
count it makes a folder under /tmp of that many photos, nested 1,000 to a subfolder: hard links to the 398
hymenoptera photos, repeated (the batch path caches nothing by content, so every file is read and decoded;
the photos sit in the page cache after the first pass, as on a warm server). With ``--zip`` the same photos go
into a stored zip as well. Each input is predicted by ``python -m tl_core predict`` in a fresh process, alone
under a wrapper process, so its peak resident memory is its own.

Prints ``key=value`` lines per input (``KIND_N``: ``folder_2000``, ``zip_2000``...): ``images_per_s`` (the
batch's own rate, model already loaded), ``wall_s`` (the whole command: Python, TensorFlow, model load, the
batch), ``peak_rss_mb``, ``rows`` (CSV rows written), ``predicted`` and ``skipped``; then
``rss_ratio_largest_vs_smallest`` (about 1 when memory does not grow with the input).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
HYMENOPTERA = SHARED / "datasets" / "hymenoptera_data"

# Runs the command given and prints its peak resident memory (KiB on Linux): the wrapper's only child.
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def photos() -> list[Path]:
    found = sorted(p for p in HYMENOPTERA.glob("*/*/*.jpg"))
    if not found:
        sys.exit(f"no photos under {HYMENOPTERA}: the benchmark needs ../shared")
    return found


def make_folder(root: Path, count: int) -> Path:
    sources = photos()
    for i in range(count):
        source = sources[i % len(sources)]
        target = root / f"part{i // 1000:03d}" / f"{i:06d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another filesystem: copy
            shutil.copyfile(source, target)
    return root


def make_zip(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for file in sorted(folder.rglob("*.jpg")):
            archive.write(file, file.relative_to(folder).as_posix())
    return path


def env(home: Path, keras_home: Path) -> dict:
    return {**os.environ, "TL_HOME": str(home), "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}


def train(home: Path, keras_home: Path, size: int) -> str:
    run_dir = home / "runs" / "bench"
    command = [sys.executable, "-m", "tl_core", "train", "--data", str(HYMENOPTERA), "--base", "MobileNetV2"]
    command += ["--alpha", "0.35", "--size", str(size), "--epochs", "3", "--run-dir", str(run_dir)]
    done = subprocess.run(command, cwd=REPO, env=env(home, keras_home), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"training failed:\n{done.stderr[-3000:]}")
    return str(run_dir)


def predict(run: str, source: Path, out: Path, home: Path, keras_home: Path) -> dict:
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "tl_core", "predict", "--run", run]
    command += ["--input", str(source), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env(home, keras_home), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"predict failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    peak = next(line for line in done.stderr.splitlines() if line.startswith("peak_rss_kib"))
    with open(out, newline="", encoding="utf-8") as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    return {
        "images_per_s": summary["images_per_s"],
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(peak.split()[1]) / 1024),
        "rows": rows,
        "predicted": summary["predicted"],
        "skipped": summary["skipped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--zip", action="store_true", help="also predict each count from a stored zip")
    parser.add_argument("--run", help="a finished run folder to use instead of training one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args()

    temp = Path(tempfile.mkdtemp(prefix="tl-batch-bench-", dir="/tmp"))
    try:
        home, keras_home = temp / "home", temp / "keras_home"
        shutil.copytree(SHARED / "keras_home", keras_home)
        run = args.run or train(home, keras_home, args.size)
        print(f"run={run}", flush=True)
        results = {}
        for count in args.images:
            folder = make_folder(temp / f"in_{count}", count)
            inputs = {"folder": folder}
            if args.zip:
                inputs["zip"] = make_zip(folder, temp / f"in_{count}.zip")
            for kind, source in inputs.items():
                key = f"{kind}_{count}"
                results[key] = predict(run, source, temp / f"{key}.csv", home, keras_home)
                for name, value in results[key].items():
                    print(f"{key}.{name}={value}", flush=True)
            shutil.rmtree(folder)  # the next count's photos, not both, on /tmp
            if args.zip:
                inputs["zip"].unlink()
        peaks = [result["peak_rss_mb"] for result in results.values()]
        print(f"rss_ratio_largest_vs_smallest={max(peaks) / min(peaks):.2f}")
        print(f"cpu_cores={os.cpu_count()}")
    finally:
        if args.keep:
            print(f"kept={temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
