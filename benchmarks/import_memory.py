"""Peak memory of importing a large zip: ~1 GB of real photos plus one oversized entry.

    python benchmarks/import_memory.py [--gb 1.0]

Builds, in a temporary folder, a zip of the shared hymenoptera photos repeated (each copy made
unique by bytes appended after the JPEG's end, which decoders ignore) up to ``--gb`` gigabytes, plus
one 300 MiB entry compressed about 137:1 (under the ratio guard, over the per-entry cap). Imports it
in a fresh process and prints ``zip_mb``, ``entries``, ``imported``, ``skipped``, ``seconds`` and
``peak_rss_mb`` (the import process's maximum resident memory, TensorFlow not loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))


def build_zip(path: Path, gigabytes: float) -> int:
    photos = sorted((SHARED / "datasets" / "hymenoptera_data" / "train").glob("*/*.jpg"))
    target, written, entries, copy = gigabytes * 1024**3, 0, 0, 0
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        while written < target:
            for photo in photos:
                data = photo.read_bytes() + copy.to_bytes(4, "little")
                archive.writestr(f"bugs/{photo.parent.name}/{copy:03d}_{photo.name}", data)
                written += len(data)
                entries += 1
                if written >= target:
                    break
            copy += 1
        block = np.zeros(1 << 20, dtype=np.uint8)
        with archive.open("bugs/ants/huge.png", "w", force_zip64=True) as handle:
            for _ in range(300):
                block[::600] = rng.integers(0, 255, block[::600].shape, dtype=np.uint8)
                handle.write(block.tobytes())
    return entries + 1


IMPORT = """
import json, sys, time
from tl_core.data import datasets


def peak_rss_mb():   # VmHWM: this program's own peak (ru_maxrss would include the parent's, through fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)


start = time.time()
ds = datasets.add_zip(sys.argv[1], "big")
print(json.dumps({"imported": ds.manifest["num_images"], "skipped": len(ds.manifest["skipped"]),
                  "seconds": round(time.time() - start, 1),
                  "peak_rss_mb": peak_rss_mb()}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tl_import_") as tmp:
        archive = Path(tmp) / "big.zip"
        entries = build_zip(archive, args.gb)
        env = {**os.environ, "TL_HOME": str(Path(tmp) / "workspace")}
        out = subprocess.run(
            [sys.executable, "-c", IMPORT, str(archive)], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        result = {
            "zip_mb": round(archive.stat().st_size / 1024**2),
            "entries": entries,
            **json.loads(out.stdout.strip().splitlines()[-1]),
        }
    for key, value in result.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
