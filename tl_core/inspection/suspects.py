"""Suspects: the images of a dataset most likely to be wrong, from a frozen base's cached features.

| kind | how it is found | score | suggested |
|---|---|---|---|
| ``mislabelled`` | out-of-fold logistic regression gives another class with confidence | 1 - p(label) | that class |
| ``duplicate`` | a training image and a validation image nearly the same (leakage) | cosine similarity | None |
| ``outlier`` | far from the rest of its class | z / (z + 3), z = distance z-score | None |
| ``low-detail`` | flagged at import: few colours (blank, placeholder, sketch) | 0.5 | None |

Scores are in [0, 1]; the list is most suspect first. Features come from the feature cache, so a second
look costs only the fits (seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np

from tl_core.data.datasets import Dataset, load_dataset
from tl_core.models.features import dataset_features

DUPLICATE_SIMILARITY = 0.95
OUTLIER_Z = 3.0
MISLABEL_MIN_SCORE = 0.5


def _normalized(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _mislabelled(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of each image's own label, and the most likely class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels)
    folds = int(min(5, counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        return np.ones(len(labels)), labels
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=3000))
    probs = cross_val_predict(
        model, features, labels, method="predict_proba", cv=StratifiedKFold(folds, shuffle=True, random_state=seed)
    )
    present = np.flatnonzero(counts > 0)  # predict_proba's columns are the classes present
    own = probs[np.arange(len(labels)), np.searchsorted(present, labels)]
    return own, present[probs.argmax(axis=1)]


def _duplicates(unit: np.ndarray, splits: np.ndarray, val_split: str) -> list[tuple[int, int, float]]:
    """(validation index, training index, similarity) for validation images nearly equal to a training one."""
    train, val = np.flatnonzero(splits == "train"), np.flatnonzero(splits == val_split)
    found = []
    for start in range(0, len(val), 512):  # bounded memory for large sets
        chunk = val[start : start + 512]
        similarity = unit[chunk] @ unit[train].T
        best = similarity.argmax(axis=1) if len(train) else np.zeros(len(chunk), dtype=int)
        for row, index in enumerate(chunk):
            if len(train) and similarity[row, best[row]] >= DUPLICATE_SIMILARITY:
                found.append((int(index), int(train[best[row]]), float(similarity[row, best[row]])))
    return found


def _outliers(unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's distance to its class centre as a z-score within the class."""
    z = np.zeros(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 5:
            continue
        distance = np.linalg.norm(unit[members] - unit[members].mean(axis=0), axis=1)
        z[members] = (distance - distance.mean()) / max(distance.std(), 1e-9)
    return z


def find_suspects(dataset: Dataset, features: np.ndarray, seed: int = 0) -> list[dict]:
    """Every suspect of the dataset, most suspect first (one row per image and kind)."""
    items, classes = dataset.items, dataset.classes
    labels = np.array([classes.index(it["class"]) for it in items])
    splits = np.array([it["split"] for it in items])
    unit = _normalized(features)
    rows = []

    def row(index: int, kind: str, score: float, suggested: Optional[str] = None, detail: str = "") -> dict:
        return {
            "file": items[index]["path"],
            "label": items[index]["class"],
            "suggested": suggested,
            "score": round(float(score), 4),
            "kind": kind,
            "split": items[index]["split"],
            "detail": detail,
        }

    own, likely = _mislabelled(features, labels, seed)
    for index in np.flatnonzero((likely != labels) & (1 - own >= MISLABEL_MIN_SCORE)):
        rows.append(
            row(
                index,
                "mislabelled",
                1 - own[index],
                classes[likely[index]],
                f"out-of-fold p({items[index]['class']}) = {own[index]:.2f}",
            )
        )
    for val_index, train_index, similarity in _duplicates(unit, splits, dataset.validation_split):
        rows.append(
            row(
                val_index,
                "duplicate",
                similarity,
                detail=f"near-duplicate of training image {items[train_index]['path']} (similarity {similarity:.3f})",
            )
        )
    z = _outliers(unit, labels)
    for index in np.flatnonzero(z > OUTLIER_Z):
        rows.append(
            row(
                index,
                "outlier",
                z[index] / (z[index] + 3),
                detail=f"{z[index]:.1f} standard deviations from the centre of {items[index]['class']!r}",
            )
        )
    for index, item in enumerate(items):
        if item.get("low_detail"):
            rows.append(row(index, "low-detail", 0.5, detail="few distinct colours (blank, placeholder or drawing)"))
    return sorted(rows, key=lambda r: (-r["score"], r["file"]))


def suspects_of(
    name: str,
    base: str = "MobileNetV2",
    alpha: Optional[float] = None,
    size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> list[dict]:
    dataset = load_dataset(name)
    return find_suspects(dataset, dataset_features(dataset, base, alpha, size, progress))
