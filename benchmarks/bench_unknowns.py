"""Benchmark: "unknown" answers. Which score tells a run's own kind of photo from photos of other subjects?

    python benchmarks/bench_unknowns.py [--size 224] [--keras-home DIR]

In a temporary workspace (never the repository's), imports the shared oxford17 flowers subset (12 classes,
train/test) and the hymenoptera ants and bees (train/val), trains one head-only run on each (MobileNetV2
alpha 0.35, ImageNet weights from ../shared/keras_home copied to a temporary KERAS_HOME), then scores:

- in-scope: the run's own validation photos, two-fold (the threshold set on one half to keep 95% of it, the
  other half counted, then the halves swapped; averaged), so "kept" is measured on photos the threshold never
  saw;
- out-of-scope: every photo of the other dataset, and the four photos in ../shared/samples (cat, hot dog,
  owl, parrot), against the same thresholds.

Scores: the maximum softmax probability (what the "not sure" threshold uses), k-th nearest neighbour on
L2-normalised features (Sun et al. 2022; k = 1, 5, 10, 50) and the class-conditional Mahalanobis distance
(shared Ledoit-Wolf covariance). Then the run's own stored scope (``scope.npz``, the default method, its
threshold from all its validation photos) answers the out-of-scope photos through ``Predictor.predict_each``,
as the CLI and the app do. Prints key=value lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
DATASETS = {
    "flowers": SHARED / "datasets" / "oxford17_subset12_224",
    "antsbees": SHARED / "datasets" / "hymenoptera_data",
}
KEEP = 0.95


def features_of(loaded, paths: list[Path], size: int, resize: str) -> np.ndarray:
    from tl_core.data.images import ImageRejected, load_array

    rows = []
    for start in range(0, len(paths), 64):
        pixels = []
        for path in paths[start : start + 64]:
            try:
                pixels.append(load_array(path, size, resize))
            except ImageRejected:  # the placeholder GIF among the ants
                continue
        rows.append(loaded.features(np.stack(pixels)))
    return np.concatenate(rows)


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--keras-home", default=str(SHARED / "keras_home"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-unknowns-"))
    shutil.copytree(args.keras_home, tmp / "keras_home")
    os.environ.update(TL_HOME=str(tmp / "workspace"), KERAS_HOME=str(tmp / "keras_home"), TF_CPP_MIN_LOG_LEVEL="3")
    sys.path.insert(0, str(REPO))
    try:
        run_benchmark(args.size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_benchmark(size: int) -> None:
    from tl_core.data import datasets
    from tl_core.inference.predict import Predictor
    from tl_core.models.config import TrainConfig
    from tl_core.models.features import FeatureCache, model_key  # noqa: F401
    from tl_core.runs.scope import SCOPE_METHODS, KnnScore, scope_for
    from tl_core.training.runner import train

    samples = photos(SHARED / "samples")
    print(f"size={size} keep={KEEP} samples={len(samples)}")
    for name, folder in DATASETS.items():
        datasets.add_folder(folder, name)
    for name, other in (("flowers", "antsbees"), ("antsbees", "flowers")):
        started = time.perf_counter()
        run, metrics = train(TrainConfig(data=name, base="MobileNetV2", alpha=0.35, size=size, epochs=30))
        print(
            f"{name}.train_seconds={time.perf_counter() - started:.1f} {name}.val_accuracy={metrics['val_accuracy']:.3f}"
        )
        loaded = run.load_model()
        dataset = datasets.load_dataset(name)
        train_items = dataset.split_items("train")
        val_items = dataset.split_items(dataset.validation_split)
        index = {c: i for i, c in enumerate(dataset.classes)}
        train_y = np.array([index[it["class"]] for it in train_items])
        train_f = features_of(loaded, [dataset.root / it["path"] for it in train_items], size, loaded.resize)
        val_f = features_of(loaded, [dataset.root / it["path"] for it in val_items], size, loaded.resize)
        outside = {
            other: features_of(loaded, photos(DATASETS[other]), size, loaded.resize),
            "samples": features_of(loaded, samples, size, loaded.resize),
        }
        halves = np.arange(len(val_f)) % 2 == 0
        scores = {
            "max_softmax": lambda f, loaded=loaded: -loaded.head_probabilities(f).max(axis=1)
        }  # larger: farther out
        for k in (1, 5, 10, 50):
            arrays = {**KnnScore.fit(train_f, train_y, len(index)), "k": np.array(k)}
            scores[f"knn_k{k}"] = lambda f, arrays=arrays: KnnScore.score(arrays, f)
        maha = SCOPE_METHODS["mahalanobis"].fit(train_f, train_y, len(index))
        scores["mahalanobis"] = lambda f, maha=maha: SCOPE_METHODS["mahalanobis"].score(maha, f)
        for method, score in scores.items():
            started = time.perf_counter()
            val = score(val_f)
            far = {where: score(f) for where, f in outside.items()}
            kept, caught = [], {where: [] for where in far}
            for fit_half in (halves, ~halves):
                threshold = np.quantile(val[fit_half], KEEP, method="higher")
                kept.append(np.mean(val[~fit_half] <= threshold))
                for where, distances in far.items():
                    caught[where].append(np.mean(distances > threshold))
            seconds = time.perf_counter() - started
            line = f"{name}.{method}.kept={np.mean(kept):.3f}"
            line += "".join(f" {name}.{method}.caught_{where}={np.mean(c):.3f}" for where, c in caught.items())
            print(
                line
                + f" {name}.{method}.score_ms_per_image={1000 * seconds / (len(val_f) + sum(map(len, far.values()))):.3f}"
            )
        scope = scope_for(run)
        predictor = Predictor(loaded, scope)
        val_kept = np.mean(~scope.is_unknown(scope.distances(val_f)))
        other_caught = np.mean(scope.is_unknown(scope.distances(outside[other])))
        answers = predictor.predict_each([p.read_bytes() for p in samples], top_k=1)
        print(
            f"{name}.run_scope.method={scope.method} {name}.run_scope.threshold={scope.threshold:.4f} "
            f"{name}.run_scope.val_kept={val_kept:.3f} {name}.run_scope.caught_{other}={other_caught:.3f} "
            f"{name}.run_scope.samples_unknown={sum(a['unknown'] for a in answers)}/{len(answers)} "
            + " ".join(
                f"{name}.sample.{p.stem}={a['top_k'][0]['label']}:{a['top_k'][0]['probability']:.3f}:"
                f"{'unknown' if a['unknown'] else 'known'}"
                for p, a in zip(samples, answers)
            )
        )


if __name__ == "__main__":
    main()
