"""Choosing a base: a quick scan (a linear probe on each base's cached features, seconds per base) and a
leaderboard of full runs with the same settings (accuracy, balanced accuracy, time, size, parameters,
single-image latency)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Optional

import numpy as np

from tl_core.data.datasets import Dataset
from tl_core.models import architectures
from tl_core.models.config import TrainConfig
from tl_core.runs.store import Run

LEADERBOARD = (
    "run",
    "base",
    "alpha",
    "val_accuracy",
    "balanced_accuracy",
    "macro_f1",
    "training_s",
    "model_mb",
    "params",
    "latency_ms",
    "run_dir",
)


def offline_bases() -> list[tuple[str, Optional[float]]]:
    """(base, alpha) for every base whose ImageNet weights are on disk, at an alpha whose weights are there."""
    return [
        (row["name"], (row["offline_alphas"] or [None])[0])
        for row in architectures.availability()
        if row["weights_offline"]
    ]


def parse_bases(text: Optional[str]) -> list[tuple[str, Optional[float]]]:
    """'A,B' -> [(A, alpha on disk or default), ...]; None -> every base with weights on disk."""
    if not text:
        return offline_bases()
    offline = dict(offline_bases())
    return [
        (architectures.get(name.strip()).name, offline.get(architectures.get(name.strip()).name))
        for name in text.split(",")
        if name.strip()
    ]


def quick_scan(
    dataset: Dataset, bases: list[tuple[str, Optional[float]]], progress: Optional[Callable[[str], None]] = None
) -> dict:
    """Rank bases by a logistic-regression probe on their frozen features (train split -> validation split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tl_core.models.features import dataset_features

    items, classes = dataset.items, dataset.classes
    labels = np.array([classes.index(it["class"]) for it in items])
    train = np.array([it["split"] == "train" for it in items])
    val = np.array([it["split"] == dataset.validation_split for it in items])
    rows = []
    for name, alpha in bases:
        if progress:
            progress(name)
        start = time.time()
        about: dict = {}
        features = dataset_features(dataset, name, alpha, about=about)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced"))
        probe.fit(features[train], labels[train])
        predicted = probe.predict(features[val])
        rows.append(
            {
                "base": name,
                "alpha": alpha,
                "probe_accuracy": float(np.mean(predicted == labels[val])),
                "probe_balanced_accuracy": float(balanced_accuracy_score(labels[val], predicted)),
                "params": about["params"],
                "seconds": round(time.time() - start, 2),
            }
        )
    # within a point of balanced accuracy the probe cannot tell bases apart: the smaller one goes first
    rows.sort(key=lambda r: (-round(r["probe_balanced_accuracy"], 2), r["params"]))
    best = rows[0] if rows else None
    why = (
        ""
        if not best
        else (
            f"{best['base']} separates the classes best with a linear probe on its frozen features "
            f"(balanced accuracy {best['probe_balanced_accuracy']:.3f}"
            + (f" vs {rows[1]['probe_balanced_accuracy']:.3f} for {rows[1]['base']}" if len(rows) > 1 else "")
            + f"; {best['params']:,} parameters). Bases within a point of each other count as tied, and the smaller "
            "one is recommended: a full run usually keeps the probe's order."
        )
    )
    return {"ranking": rows, "recommended": best["base"] if best else None, "why": why}


def measure_latency(run: Run, repeats: int = 10) -> float:
    """Median milliseconds to classify one image (raw pixels to probabilities) with the saved model, after two
    warm-up calls; recorded in the run's metrics. Measured when a comparison asks, so training never pays it."""
    loaded = run.load_model()
    pixels = np.zeros((1, loaded.input_size, loaded.input_size, 3), dtype=np.float32)
    times = []
    for index in range(repeats + 2):
        start = time.perf_counter()
        loaded.probabilities(pixels)
        if index >= 2:
            times.append(time.perf_counter() - start)
    latency = round(float(np.median(times)) * 1000, 2)
    run.artifacts.write_metrics({**run.artifacts.metrics(), "latency_ms": latency})
    return latency


def leaderboard_row(run: Run) -> dict:
    metrics, cfg = run.artifacts.metrics(), run.config
    return {
        "run": run.id,
        "base": cfg.base,
        "alpha": cfg.alpha,
        "val_accuracy": metrics.get("val_accuracy"),
        "balanced_accuracy": metrics.get("val_balanced_accuracy"),
        "macro_f1": metrics.get("val_macro_f1"),
        "training_s": metrics.get("duration_s"),
        "model_mb": round((metrics.get("model_bytes") or 0) / 1e6, 3),
        "params": (metrics.get("params") or {}).get("total"),
        "latency_ms": metrics.get("latency_ms"),
        "run_dir": str(run.root),
    }


def configs_for(
    template: TrainConfig, bases: list[tuple[str, Optional[float]]], template_layers: Optional[int] = None
) -> list[TrainConfig]:
    """The same settings on each base (each at its own input size unless the template fixes one). A freeze
    depth given in layers of the template's base (``template_layers`` of them) becomes the same fraction of
    each base; every config is checked before any is returned, so none is queued when one is wrong."""
    from tl_core.models import freeze

    depth = template.freeze_depth
    if isinstance(depth, int) and template_layers:
        depth = "all" if depth >= template_layers else round(depth / template_layers, 4)
    configs = [dataclasses.replace(template, base=name, alpha=alpha, freeze_depth=depth) for name, alpha in bases]
    for cfg in configs:
        freeze.check_config(cfg.resolved())
    return configs
