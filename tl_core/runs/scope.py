"""A run's scope: what its training images look like in its feature space, and whether an image falls outside.

Training learns it once (``fit_scope``, called at the end of a run) from the pooled features that feed the
head (the frozen base's for a head-only run, the run's own fine-tuned base otherwise) and keeps it in the run
folder (``scope.npz``, written and read by ``artifacts.py``). An image's *distance* is how far its features lie
from the training images' (``SCOPE_METHODS``: the k-th nearest neighbour among L2-normalised training features,
Sun et al. 2022, or the class-conditional Mahalanobis distance with one shared, shrunk covariance); the
threshold is the distance that keeps ``KEEP`` of the run's validation images, so an image farther than that is
answered "unknown" (its nearest class is still shown). ``docs/unknowns.md`` has the measurements that chose
the default method.

Runs trained before scopes existed have none: ``scope_for`` returns None and their answers say
``"unknown": null`` (not measured), never a made-up false.

Public API: ``scope_for(run)`` -> ``Scope`` or None; ``Scope.distances(features)``, ``Scope.threshold``,
``Scope.threshold_for(keep)``, ``Scope.is_unknown(distances, threshold=None)``; ``fit_scope(...)``.
"""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from tl_core.errors import TLError

if TYPE_CHECKING:
    from tl_core.runs.store import Run

KEEP = 0.95  # the share of validation images the default threshold keeps in scope
REFERENCE_MAX = 5000  # training images kept as the k-NN reference (a deterministic sample beyond that)
PER_NEIGHBOUR = 1000  # k = one per this many reference images (Sun et al. scale k with the set), at least 1
CHUNK = 256  # images scored at a time: memory is CHUNK x reference rows
# thresholds sit this much (relative) above the validation distance they come from: the same image's features
# differ in their last digits between engines and batch sizes, and must not cross its own threshold
TOLERANCE = 1e-3


def _normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


class KnnScore:
    """Sun et al. 2022: the distance from an image's L2-normalised features to its k-th nearest training
    image's (Euclidean between unit vectors, 0 to 2)."""

    name = "knn"
    label = "k-th nearest training image (normalised features)"

    @staticmethod
    def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
        reference = _normalised(features)
        if len(reference) > REFERENCE_MAX:
            keep = np.sort(np.random.default_rng(0).choice(len(reference), REFERENCE_MAX, replace=False))
            reference = reference[keep]
        return {"reference": reference, "k": np.array(max(1, len(reference) // PER_NEIGHBOUR))}

    @staticmethod
    def score(arrays: dict, features: np.ndarray) -> np.ndarray:
        reference, k = arrays["reference"], int(arrays["k"])
        out = np.empty(len(features), np.float64)
        for start in range(0, len(features), CHUNK):
            z = _normalised(features[start : start + CHUNK])
            squared = np.maximum(2.0 - 2.0 * (z @ reference.T), 0.0)
            out[start : start + len(z)] = np.sqrt(np.partition(squared, k - 1, axis=1)[:, k - 1])
        return out


class MahalanobisScore:
    """Lee et al. 2018: the smallest Mahalanobis distance from an image's features to a class mean, under one
    covariance shared by the classes (Ledoit-Wolf shrinkage: there are usually fewer images than dimensions)."""

    name = "mahalanobis"
    label = "Mahalanobis distance to the nearest class mean"

    @staticmethod
    def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
        from sklearn.covariance import ledoit_wolf

        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        present = [c for c in range(num_classes) if (labels == c).any()]
        means = np.stack([features[labels == c].mean(axis=0) for c in present])
        centred = features - means[np.searchsorted(present, labels)]
        covariance, _ = ledoit_wolf(centred, assume_centered=True)
        values, vectors = np.linalg.eigh(covariance)
        whiten = vectors / np.sqrt(np.maximum(values, values.max() * 1e-9))  # x @ whiten: unit covariance
        return {"whiten": whiten.astype(np.float32), "means": (means @ whiten).astype(np.float32)}

    @staticmethod
    def score(arrays: dict, features: np.ndarray) -> np.ndarray:
        white, means = np.asarray(features, np.float32) @ arrays["whiten"], arrays["means"]
        squared = (white**2).sum(1)[:, None] - 2.0 * white @ means.T + (means**2).sum(1)[None, :]
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0)).astype(np.float64)


SCOPE_METHODS = {method.name: method for method in (KnnScore, MahalanobisScore)}
DEFAULT_METHOD = "knn"  # measured in docs/unknowns.md


@dataclass
class Scope:
    method: str
    arrays: dict = field(repr=False)  # the method's own arrays
    val_distances: np.ndarray = field(repr=False)  # the validation images' distances, sorted
    keep: float = KEEP
    # what the run's answers looked like on its own data, for monitoring: validation top-1 probabilities and
    # training images per class
    val_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    train_counts: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def threshold(self) -> float:
        """The distance beyond which an image is unknown: the one that keeps ``keep`` of the validation images."""
        return self.threshold_for(self.keep)

    def threshold_for(self, keep: float) -> float:
        if not 0.0 < keep <= 1.0:
            raise TLError(f"The share of validation images to keep must be in (0, 1]; got {keep!r}.")
        if not len(self.val_distances):
            return float("inf")
        return float(np.quantile(self.val_distances, keep, method="higher")) * (1.0 + TOLERANCE)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, D) pooled features -> (N,) distances from the training images (larger: farther out)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise TLError(f"Features must be one row per image; got an array of shape {features.shape}.")
        return SCOPE_METHODS[self.method].score(self.arrays, features)

    def is_unknown(self, distances: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
        return np.asarray(distances) > (self.threshold if threshold is None else threshold)

    def kept_share(self, threshold: float) -> float:
        """The share of validation images a threshold keeps in scope (what the Predict page's slider shows)."""
        return float(np.mean(self.val_distances <= threshold)) if len(self.val_distances) else 1.0

    # ------------------------------------------------------------ the file
    def to_arrays(self) -> dict:
        return {
            "method": np.array(self.method),
            "keep": np.array(self.keep),
            "val_distances": self.val_distances,
            "val_confidence": self.val_confidence,
            "train_counts": self.train_counts,
            **{f"m_{name}": value for name, value in self.arrays.items()},
        }

    @classmethod
    def from_arrays(cls, arrays) -> Scope:
        method = str(arrays["method"])
        if method not in SCOPE_METHODS:
            raise TLError(f"Unknown scope method {method!r} in a run's scope file; known: {sorted(SCOPE_METHODS)}.")
        return cls(
            method,
            {name[2:]: arrays[name] for name in arrays if name.startswith("m_")},
            np.sort(np.asarray(arrays["val_distances"], np.float64)),
            float(arrays["keep"]),
            np.asarray(arrays["val_confidence"], np.float64),
            np.asarray(arrays["train_counts"], np.int64),
        )

    def summary(self) -> dict:
        """What metrics.json and the model card say about it."""
        return {
            "method": self.method,
            "method_label": SCOPE_METHODS[self.method].label,
            "keep": self.keep,
            "threshold": round(self.threshold, 6),
            "validation_images": int(len(self.val_distances)),
            "reference_images": int(len(self.arrays.get("reference", ()))) or int(self.train_counts.sum()),
        }


def fit_scope(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    num_classes: int,
    val_confidence: Optional[np.ndarray] = None,
    train_counts: Optional[np.ndarray] = None,
    method: str = DEFAULT_METHOD,
    keep: float = KEEP,
) -> Scope:
    """The scope of a run from its training images' features (and labels), its threshold from its validation
    images'. Kept for monitoring: ``val_confidence``, the validation images' top-1 probabilities, and
    ``train_counts``, training images per class (default: counted from ``train_labels``)."""
    if method not in SCOPE_METHODS:
        raise TLError(f"Unknown scope method {method!r}; choose one of {sorted(SCOPE_METHODS)}.")
    if not len(train_features):
        raise TLError("A scope needs training images; this run has none.")
    scorer = SCOPE_METHODS[method]
    arrays = scorer.fit(np.asarray(train_features, np.float32), np.asarray(train_labels), num_classes)
    val = scorer.score(arrays, np.asarray(val_features, np.float32))
    return Scope(
        method,
        arrays,
        np.sort(val),
        keep,
        np.asarray(val_confidence if val_confidence is not None else [], np.float64),
        np.asarray(
            train_counts if train_counts is not None else np.bincount(np.asarray(train_labels), minlength=num_classes),
            np.int64,
        ),
    )


_LOADED: OrderedDict[Path, tuple[tuple, Scope]] = OrderedDict()  # scope file -> (its stamp, the scope)
LOADED_MAX = 4  # scopes kept loaded (each up to REFERENCE_MAX feature rows): the ones used last


def scope_for(run: Union[Run, str, Path]) -> Optional[Scope]:
    """The run's scope, or None for a run trained before scopes existed (its answers' unknown flag is null)."""
    from tl_core.runs.store import Run, get_run

    run = run if isinstance(run, Run) else get_run(run)
    path = run.artifacts.scope_path
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
    cached = _LOADED.get(path)
    if cached is None or cached[0] != stamp:
        try:
            arrays = run.artifacts.scope_arrays()
            if arrays is None:  # removed since the stat
                return None
            cached = (stamp, Scope.from_arrays(arrays))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise TLError(
                f"Run {run.id!r}: its scope file {path.name!r} is damaged ({type(exc).__name__}: {exc}). Delete it "
                "(the run then answers no 'unknown') or train the run again."
            ) from None
    _LOADED[path] = cached
    _LOADED.move_to_end(path)
    while len(_LOADED) > LOADED_MAX:
        _LOADED.popitem(last=False)
    return cached[1]
