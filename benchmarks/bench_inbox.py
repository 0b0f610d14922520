"""Benchmark: a dataset's inbox of unlabelled images with a run's suggestions.

    python benchmarks/bench_inbox.py [--images 1000] [--size 96] [--pixels 160] [--keras-home DIR]

In a temporary workspace (never the repository's): a synthetic three-colour dataset and one run on it
(MobileNetV2 alpha 0.35 at ``--size`` px, two epochs, weights from ../shared/keras_home copied to a temporary
KERAS_HOME); then ``--images`` new photo-like JPEGs of ``--pixels`` px (mixed colours: each its own content)
are added to the inbox and listed with the run's suggestions twice. Prints key=value lines:

- ``add_s``: adding them (each checked as an import checks it, stored once by content);
- ``first_s`` / ``first_computed``: the first listing, which runs the model on every image (load included);
- ``second_s`` / ``second_computed``: listing again: the kept answers read back, the model not loaded;
- ``speedup``: first_s / second_s;
- ``capture_offer_us_p50`` / ``_p99``: what ``serve --capture`` adds to a ``:classify`` request (queueing one
  image for the inbox's writer thread), over 1,000 requests; ``capture_written_s``: until all are in the inbox.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))


def photo(rng, pixels: int) -> bytes:
    import numpy as np
    from PIL import Image

    base = rng.uniform(20, 230, 3)
    image = np.clip(base + rng.normal(0, 30, (pixels, pixels, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--pixels", type=int, default=160)
    parser.add_argument("--keras-home", default=str(SHARED / "keras_home"))
    args = parser.parse_args()

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="bench_inbox_"))
    try:
        shutil.copytree(args.keras_home, tmp / "keras_home")
        os.environ.update(TL_HOME=str(tmp / "home"), KERAS_HOME=str(tmp / "keras_home"), TF_CPP_MIN_LOG_LEVEL="3")
        from tests.factories import make_class_folders
        from tl_core.data import datasets, inbox
        from tl_core.inference import suggest
        from tl_core.models.config import TrainConfig
        from tl_core.training.runner import train

        source = make_class_folders(tmp / "src", classes=("red", "blue", "green"), per_class=20, size=64)
        datasets.add_folder(source, "colors")
        run, _ = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=args.size, epochs=2))
        rng = np.random.default_rng(0)
        files = [(f"photo_{i:05d}.jpg", photo(rng, args.pixels)) for i in range(args.images)]

        start = time.perf_counter()
        added = inbox.add_bytes("colors", files, source="bench")
        add_s = time.perf_counter() - start
        assert len(added.added) == args.images, added.skipped[:3]

        start = time.perf_counter()
        first = suggest.suggest("colors", run)
        first_s = time.perf_counter() - start

        def no_model(run):
            raise AssertionError("the second listing loaded the model")

        start = time.perf_counter()
        second = suggest.suggest("colors", run, load=no_model)
        second_s = time.perf_counter() - start
        assert second.rows == first.rows

        capturer = inbox.Capturer("colors")
        shots = [(f"shot_{i:05d}.jpg", photo(rng, args.pixels)) for i in range(1000)]
        offers = []
        start = time.perf_counter()
        for shot in shots:
            begin = time.perf_counter()
            capturer.offer([shot], f"serve:{run.id}")
            offers.append((time.perf_counter() - begin) * 1e6)
        capturer.wait()
        written_s = time.perf_counter() - start
        offers.sort()

        print(f"images={args.images}")
        print(f"size={args.size}")
        print(f"add_s={add_s:.2f}")
        print(f"first_s={first_s:.2f}")
        print(f"first_computed={first.computed}")
        print(f"second_s={second_s:.3f}")
        print(f"second_computed={second.computed}")
        print(f"speedup={first_s / second_s:.0f}")
        print(f"capture_offer_us_p50={statistics.median(offers):.1f}")
        print(f"capture_offer_us_p99={offers[int(len(offers) * 0.99)]:.1f}")
        print(f"capture_kept={capturer.kept}")
        print(f"capture_written_s={written_s:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
