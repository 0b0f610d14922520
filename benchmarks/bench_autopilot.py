"""Benchmark: the time budget's autopilot (``--budget``) against the head alone and the tutorial's fine-tune recipe.

    python benchmarks/bench_autopilot.py [--only colour,hymenoptera,oxford17,harder] [--repeat 1]

Every run is ``python -m tl_core train`` in its own process and its own empty workspace (no cached features, no
cached engine conversion), MobileNetV2 alpha 0.35 at 224 px, ImageNet weights from ../shared/keras_home. Per
dataset three settings:

- ``defaults``: nothing else (the budget's default for this host: 60 s on a CPU, 600 s with a GPU);
- ``head``: ``--budget 0``, today's head alone;
- ``budget300`` (harder set only): ``--budget 300``, room for a fine-tune phase on a CPU;
- ``tutorial`` (colour task only): the keras-io transfer-learning guide's recipe, the head then the whole base
  fine-tuned for 10 epochs at lr 1e-5 (``--budget 0 --fine-tune-depth 0 --fine-tune-epochs 10 --fine-tune-lr
  1e-5``; the head on cached features, so the recipe is faster here than in the guide).

Datasets: ``colour``, made here: coloured shapes pasted on real photos (../shared hymenoptera photos), two classes
told apart only by the shape's colour, 80 photos per class (60 train, 20 validation); ``hymenoptera`` and
``oxford17`` from ../shared; ``harder``: oxford17's 12 species downscaled to 40 px (upscaled again to the 224 px
input: the frozen base sees blur), 960 photos. Prints one JSON line per run, then the targets as key=value lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COMMON = ["--base", "MobileNetV2", "--alpha", "0.35", "--size", "224"]
SETTINGS = {
    "defaults": [],
    "head": ["--budget", "0"],
    "budget300": ["--budget", "300"],
    "tutorial": ["--budget", "0", "--fine-tune-depth", "0", "--fine-tune-epochs", "10", "--fine-tune-lr", "1e-5"],
}
COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 210)}  # the frozen base's pooled features barely keep it


def make_colour_task(target: Path, per_class: int = 80, val_per_class: int = 20, seed: int = 0) -> Path:
    """Coloured shapes (circle, square, triangle; random size, place and shade) pasted on real photos; the class
    is the shape's colour only. Each photo is used once."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageOps

    rng = np.random.default_rng(seed)
    photos = sorted((SHARED / "datasets" / "hymenoptera_data").rglob("*.jpg"))
    order = rng.permutation(len(photos))
    index = 0
    for name, colour in COLOURS.items():
        for i in range(per_class):
            image = ImageOps.fit(Image.open(photos[order[index]]).convert("RGB"), (256, 256))
            index += 1
            draw = ImageDraw.Draw(image)
            side = int(rng.integers(40, 90))
            x, y = (int(v) for v in rng.integers(0, 256 - side, 2))
            shade = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
            shape = rng.integers(3)
            if shape == 0:
                draw.ellipse((x, y, x + side, y + side), fill=shade)
            elif shape == 1:
                draw.rectangle((x, y, x + side, y + side), fill=shade)
            else:
                draw.polygon([(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=shade)
            split = "val" if i < val_per_class else "train"
            out = target / split / name / f"{i:03d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            image.save(out, "JPEG", quality=90)
    return target


def make_harder(target: Path, side: int = 40) -> Path:
    """oxford17's 12 species downscaled to ``side`` px, its train/test split kept."""
    from PIL import Image

    source = SHARED / "datasets" / "oxford17_subset12_224"
    for path in sorted(source.rglob("*.jpg")):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BILINEAR).save(out, "JPEG", quality=90)
    return target


def train(data: Path, setting: str, keras_home: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix="tl-bench-autopilot-"))
    env = {**os.environ, "TL_HOME": str(home), "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run_dir = home / "run"
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "tl_core", "train", "--data", str(data), *COMMON, *SETTINGS[setting],
         "--run-dir", str(run_dir)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.time() - start
    if out.returncode != 0:
        raise SystemExit(f"{setting} on {data.name} failed:\n{out.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shutil.rmtree(home, ignore_errors=True)
    pilot = metrics.get("autopilot", {})
    return {
        "data": data.name,
        "setting": setting,
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "wall_s": round(wall, 1),
        "run_s": metrics["duration_s"],
        "decision": pilot.get("decision"),
        "kept": pilot.get("kept"),
        "reason": pilot.get("reason"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="colour,hymenoptera,oxford17,harder")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tl-bench-data-"))
    keras_home = work / "keras_home"
    shutil.copytree(SHARED / "keras_home", keras_home)
    sets = {
        "colour": lambda: make_colour_task(work / "colour"),
        "hymenoptera": lambda: SHARED / "datasets" / "hymenoptera_data",
        "oxford17": lambda: SHARED / "datasets" / "oxford17_subset12_224",
        "harder": lambda: make_harder(work / "harder"),
    }
    results: dict[tuple[str, str], list[dict]] = {}
    for name in args.only.split(","):
        data = sets[name]()
        extra = {"colour": ["tutorial"], "harder": ["budget300"]}.get(name, [])
        for setting in ["defaults", "head"] + extra:
            for _ in range(args.repeat):
                row = train(data, setting, keras_home)
                print(json.dumps(row), flush=True)
                results.setdefault((name, setting), []).append(row)
    shutil.rmtree(work, ignore_errors=True)

    def median(name, setting, key):
        values = sorted(row[key] for row in results[(name, setting)])
        return values[len(values) // 2]

    for name in args.only.split(","):
        acc, head_acc = median(name, "defaults", "val_accuracy"), median(name, "head", "val_accuracy")
        wall, head_wall = median(name, "defaults", "wall_s"), median(name, "head", "wall_s")
        print(f"{name}_defaults_acc={acc} {name}_head_acc={head_acc} {name}_time_vs_head={wall / head_wall:.2f}")
        if name == "colour":
            tut_acc, tut_wall = median(name, "tutorial", "val_accuracy"), median(name, "tutorial", "wall_s")
            print(f"colour_tutorial_acc={tut_acc} colour_time_vs_tutorial={wall / tut_wall:.2f}")
        if name == "harder":
            rows = results[(name, "budget300")]
            over = max(row["run_s"] - 300 for row in rows)
            print(
                f"harder_budget300_acc={median(name, 'budget300', 'val_accuracy')} harder_budget300_over_s={over:.1f}"
            )


if __name__ == "__main__":
    main()
