"""Suspects: the images of a dataset most likely to be wrong, from a frozen base's cached features.

| kind | how it is found | score | suggested |
|---|---|---|---|
| ``mislabelled`` | confident learning on calibrated out-of-fold probabilities (below) | 1 - p(label) | that class |
| ``duplicate`` | a training image and a validation image nearly the same (leakage) | cosine similarity | None |
| ``outlier`` | far from the rest of its class | z / (z + 3), z = distance z-score | None |
| ``low-detail`` | flagged at import: few colours (blank, placeholder, sketch) | 0.5 | None |

Mislabelled, in the manner of confident learning (Northcutt et al.): a logistic-regression probe on the
features gives every image out-of-fold class probabilities, calibrated by a temperature fitted on the
*other* folds' out-of-fold logits (a plain probe is overconfident on hard data: p(label) = 0.00 for hundreds
of images). Class j's threshold t_j is the mean calibrated p_j over the images labelled j; an image counts
towards class k in the confident joint when p_k clears t_k (the likeliest such k), and the joint's
off-diagonal, calibrated to the class sizes, estimates how many labels are wrong. That many images are
flagged: those whose likeliest class is another one, lowest p(label) first (confident learning's
"low self-confidence" filter); the likeliest other class is the suggestion. Ranking by self-confidence
alone flags every image the probe gets wrong (a third of a hard set); the estimate cuts the list to what
the thresholds say is wrong, and calibration keeps p(label) from collapsing to 0.00 in ties.

Scores are in [0, 1]; the list is most suspect first, ties broken by the next key (for mislabelled the
margin p(suggested) - p(label)) and then by a hash of the image's content and kind, never by file name.

The whole result (rows, the trust summary, the PCA map) is computed once per dataset version, base and
method version (``report_key``) and kept in the workspace (``cache/suspects/<key>.json``), so every user,
session and process after the first reads it instead of computing it (``suspects_report``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from tl_core.clock import now_iso
from tl_core.data.datasets import Dataset, load_dataset
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.models.features import dataset_features, model_key
from tl_core.workspace import cache_dir, write_json

from .embedding import project

METHOD_VERSION = 2  # in the cache key: raise it whenever the same features would give another result
FOLDS = 5
PROBE_C = 0.1  # L2 penalty of the probe on standardized, L2-normalized features
DUPLICATE_SIMILARITY = 0.95
OUTLIER_Z = 3.0
# (lowest out-of-fold accuracy, level, what the list is worth at that level)
TRUST_LEVELS = (
    (
        0.9,
        "high",
        "it tells these classes apart well, so a flagged image is usually worth fixing.",
    ),
    (
        0.75,
        "moderate",
        "it confuses some classes, so some flags are hard images rather than wrong labels: "
        "confirm each before you fix it, starting at the top.",
    ),
    (
        0.0,
        "low",
        "it often confuses these classes, so most flags are likely hard or ambiguous images, not wrong "
        "labels. Use the list as an order to look in and fix only what you can confirm; a larger base "
        "or image size gives a better probe.",
    ),
)

# (stage, done, total): "features" counts images, "probe" the probe's fits, "checks" the other checks
Progress = Optional[Callable[[str, int, int], None]]


def _normalized(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _standardized(features: np.ndarray) -> np.ndarray:
    """L2-normalized then standardized per dimension (label-free, so the folds may share it)."""
    unit = _normalized(np.asarray(features, dtype=np.float64))
    return (unit - unit.mean(axis=0)) / np.maximum(unit.std(axis=0), 1e-6)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimizes the negative log-likelihood of softmax(logits / T)."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-_log_softmax(logits / np.exp(log_t))[rows, labels].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded").x))


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    seed: int = 0,
    progress: Progress = None,
    start: Optional[dict] = None,
    keep: Optional[dict] = None,
) -> Optional[np.ndarray]:
    """Calibrated out-of-fold class probabilities (N, n_classes), or None when some labelled class has fewer
    than 2 images or fewer than 2 classes have images (no fold could hold each class out).

    Each image's probabilities come from a probe fitted without it; its fold's temperature is fitted on the
    out-of-fold logits of the other folds only, so no image calibrates its own probabilities.

    ``start`` (a ``keep`` of an earlier computation on mostly the same images, re-indexed to these: "fold_of",
    one fold per image, -1 for an image it did not have; "coef" and "intercept" per fold) reuses that
    computation: the same folds (a new image joins a fold by its index) and each fold's fit started from the
    earlier solution, so a few changed labels cost a few solver steps instead of a full fit. The problem is
    strictly convex: a started fit ends at the same optimum as a cold one on those folds. ``keep``, if given,
    receives this computation's folds and fits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=n_classes)
    present = np.flatnonzero(counts > 0)
    folds = int(min(FOLDS, counts[present].min())) if len(present) else 0
    if folds < 2 or len(present) < 2:
        return None
    # float32 halves the fits' time; the coefficients differ from float64 fits by ~1e-7
    x = _standardized(features).astype(np.float32)
    logits = np.full((len(labels), n_classes), -np.inf)
    fold_of = _reused_folds(start, labels, folds, n_classes)
    if fold_of is None:
        start, fold_of = None, np.zeros(len(labels), dtype=int)
        for fold, (_, held_out) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels)):
            fold_of[held_out] = fold
    coefs, intercepts, iterations = [], [], 0
    for fold in range(folds):
        train, held_out = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        probe = LogisticRegression(C=PROBE_C, max_iter=3000, warm_start=start is not None)
        if start is not None and np.array_equal(np.unique(labels[train]), start["classes"][fold]):
            probe.coef_, probe.intercept_ = start["coef"][fold], start["intercept"][fold]
        probe.fit(x[train], labels[train])
        iterations += int(np.max(probe.n_iter_))
        coefs.append(probe.coef_)
        intercepts.append(probe.intercept_)
        scores = probe.decision_function(x[held_out])
        logits[np.ix_(held_out, probe.classes_)] = scores if scores.ndim == 2 else np.c_[-scores, scores] / 2
        if progress:
            progress("probe", fold + 1, folds)
    if keep is not None:
        keep.update(fold_of=fold_of, coef=np.stack(coefs) if len({c.shape for c in coefs}) == 1 else None)
        keep.update(intercept=np.stack(intercepts) if keep["coef"] is not None else None)
        keep.update(classes=[np.unique(labels[fold_of != fold]) for fold in range(folds)], iterations=iterations)
    finite = np.where(np.isfinite(logits), logits, -1e9)  # classes with no image: probability 0
    probs = np.zeros_like(finite)
    for fold in range(folds):
        others, mine = fold_of != fold, fold_of == fold
        t = _temperature(finite[others][:, present], np.searchsorted(present, labels[others]))
        probs[mine] = np.exp(_log_softmax(finite[mine] / t))
    return probs


def _reused_folds(start: Optional[dict], labels: np.ndarray, folds: int, n_classes: int) -> Optional[np.ndarray]:
    """The earlier computation's folds for these images (new images spread over them by index), or None
    when they cannot serve: another number of folds or classes, no fits kept, or a fold whose training
    images would lack a class that has images."""
    if start is None or start.get("coef") is None or start["coef"].shape[0] != folds:
        return None
    if start["coef"].shape[1] not in (n_classes, 1):
        return None
    fold_of = np.asarray(start["fold_of"]).copy()
    new = np.flatnonzero(fold_of < 0)
    fold_of[new] = new % folds
    present = np.unique(labels)
    for fold in range(folds):
        if not np.array_equal(np.unique(labels[fold_of != fold]), present) or not (fold_of == fold).any():
            return None
    return fold_of


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confident learning's per-class thresholds: t_j = mean p_j over the images labelled j (1.0, never
    cleared, for a class with no image)."""
    return np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(probs.shape[1])])


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Confident learning's calibrated confident joint (K, K): row i, column j estimates how many images
    labelled i belong to class j. An image is counted in the likeliest of the classes whose threshold its
    probability clears (not at all if none does); each row is then scaled to the number of images labelled i."""
    n_classes = probs.shape[1]
    clears = probs >= thresholds
    counted = clears.any(axis=1)
    assigned = np.where(clears, probs, -1.0).argmax(axis=1)
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (labels[counted], assigned[counted]), 1.0)
    totals = joint.sum(axis=1, keepdims=True)
    return (
        np.divide(joint, totals, out=np.zeros_like(joint), where=totals > 0)
        * np.bincount(labels, minlength=n_classes)[:, None]
    )


def label_issues(
    probs: np.ndarray, labels: np.ndarray, tiebreak: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(flagged, suggested, thresholds, estimate). ``estimate`` is confident learning's count of wrong labels:
    the off-diagonal sum of the calibrated confident joint under the per-class thresholds. ``flagged`` holds
    the indices of that many images, most suspect first, taken from the images whose likeliest class is not
    their label, by lowest p(label), then highest margin p(suggested) - p(label), then ``tiebreak`` (default:
    index). ``suggested`` is each image's likeliest class other than its label."""
    rows = np.arange(len(labels))
    thresholds = class_thresholds(probs, labels)
    joint = confident_joint(probs, labels, thresholds)
    estimate = int(round(float(joint.sum() - np.trace(joint))))
    others = probs.copy()
    others[rows, labels] = -1.0
    suggested = others.argmax(axis=1)
    own, margin = probs[rows, labels], probs[rows, suggested] - probs[rows, labels]
    candidates = np.flatnonzero(margin > 0)
    ties = rows if tiebreak is None else np.asarray(tiebreak)
    order = np.lexsort((ties[candidates], -margin[candidates], own[candidates]))
    return candidates[order][:estimate], suggested, thresholds, estimate


def trust_summary(probs: Optional[np.ndarray], labels: np.ndarray, classes: list[str], flagged: int) -> dict:
    """How far to trust the mislabelled list: the probe's out-of-fold accuracy on the labels as given, a
    level and a sentence saying what that means, and each class's out-of-fold accuracy and threshold."""
    if probs is None:
        return {
            "accuracy": None,
            "images": int(len(labels)),
            "flagged": 0,
            "level": "none",
            "message": "Too few images per class for an out-of-fold probe (each class needs 2): no image "
            "is flagged as mislabelled.",
            "classes": [],
        }
    predicted = probs.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    thresholds = class_thresholds(probs, labels)
    _, level, meaning = next(t for t in TRUST_LEVELS if accuracy >= t[0])
    per_class = [
        {
            "class": name,
            "images": int((labels == j).sum()),
            "accuracy": round(float((predicted[labels == j] == j).mean()), 3) if (labels == j).any() else None,
            "threshold": round(float(thresholds[j]), 3),
        }
        for j, name in enumerate(classes)
    ]
    weakest = sorted((c for c in per_class if c["accuracy"] is not None), key=lambda c: c["accuracy"])[:3]
    message = (
        f"Trust: {level}. The probe behind this list puts {accuracy:.0%} of the {len(labels):,} images in their "
        f"labelled class out of fold; {meaning} {flagged:,} image(s) flagged as mislabelled."
    )
    if level != "high" and weakest:
        message += " Weakest classes: " + ", ".join(f"{c['class']} {c['accuracy']:.0%}" for c in weakest) + "."
    return {
        "accuracy": round(accuracy, 4),
        "images": int(len(labels)),
        "flagged": int(flagged),
        "level": level,
        "message": message,
        "classes": per_class,
    }


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


def _tie_hash(item: dict, kind: str) -> str:
    """A stable order for rows equal on score and margin: content and kind, never the file name."""
    return hashlib.sha256(f"{kind}:{item['sha256']}".encode()).hexdigest()


def analyse(
    dataset: Dataset,
    features: np.ndarray,
    seed: int = 0,
    progress: Progress = None,
    start: Optional[dict] = None,
    keep: Optional[dict] = None,
) -> dict:
    """``{"rows": every suspect, most suspect first (one row per image and kind), "trust": trust_summary}``.
    ``start`` and ``keep``: as ``out_of_fold_probabilities`` (reuse an earlier probe, keep this one)."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these fits are small, and BLAS threads spinning against other busy processes made
    # them tens of times slower on a shared host
    with threadpool_limits(1):
        return _analyse(dataset, features, seed, progress, start, keep)


def _analyse(dataset: Dataset, features: np.ndarray, seed: int, progress: Progress, start, keep) -> dict:
    items, classes = dataset.items, dataset.classes
    labels = np.array([classes.index(it["class"]) for it in items], dtype=int)
    splits = np.array([it["split"] for it in items])
    unit = _normalized(features)
    ranked: list[tuple[float, float, str, dict]] = []  # (score, margin, tie hash, row)

    def add(index: int, kind: str, score: float, suggested=None, detail: str = "", margin: float = 0.0) -> None:
        row = {
            "file": items[index]["path"],
            "label": items[index]["class"],
            "suggested": suggested,
            "score": round(float(score), 4),
            "kind": kind,
            "split": items[index]["split"],
            "detail": detail,
        }
        ranked.append((float(score), float(margin), _tie_hash(items[index], kind), row))

    probs = (
        out_of_fold_probabilities(features, labels, len(classes), seed, progress, start, keep) if len(items) else None
    )
    flagged_count = 0
    if probs is not None:
        hashes = np.array([_tie_hash(item, "mislabelled") for item in items])
        flagged, suggested, _, _ = label_issues(probs, labels, hashes)
        flagged_count = len(flagged)
        for index in flagged:
            own, other = probs[index, labels[index]], probs[index, suggested[index]]
            name = classes[suggested[index]]
            add(
                index,
                "mislabelled",
                1 - own,
                name,
                f"calibrated out-of-fold p({items[index]['class']}) = {own:.2f}, p({name}) = {other:.2f}",
                margin=other - own,
            )
    if progress:
        progress("checks", 0, 1)
    for val_index, train_index, similarity in _duplicates(unit, splits, dataset.validation_split):
        add(
            val_index,
            "duplicate",
            similarity,
            detail=f"near-duplicate of training image {items[train_index]['path']} (similarity {similarity:.3f})",
        )
    z = _outliers(unit, labels)
    for index in np.flatnonzero(z > OUTLIER_Z):
        add(
            index,
            "outlier",
            z[index] / (z[index] + 3),
            detail=f"{z[index]:.1f} standard deviations from the centre of {items[index]['class']!r}",
            margin=z[index],
        )
    for index, item in enumerate(items):
        if item.get("low_detail"):
            add(index, "low-detail", 0.5, detail="few distinct colours (blank, placeholder or drawing)")
    ranked.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return {"rows": [r[3] for r in ranked], "trust": trust_summary(probs, labels, classes, flagged_count)}


# ---------------------------------------------------------------- the result, computed once and kept


def feature_config(dataset: Dataset, base: str, alpha: Optional[float], size: Optional[int]) -> TrainConfig:
    """The settings whose features the suspects use (alpha and size resolved as a run would resolve them)."""
    return TrainConfig(data=dataset.name, base=base, alpha=alpha, size=size).resolved()


def report_key(dataset: Dataset, cfg: TrainConfig) -> str:
    """What the result depends on: the dataset version's content (fingerprint) and its items' paths and
    order, the features (``model_key``: base, alpha, size, weights file, decoding) and ``METHOD_VERSION``."""
    paths = hashlib.sha256("\n".join(it["path"] for it in dataset.items).encode()).hexdigest()
    ident = {"fingerprint": dataset.fingerprint, "paths": paths, "features": model_key(cfg), "method": METHOD_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _report_path(key: str, suffix: str = "") -> Path:
    return cache_dir() / "suspects" / f"{key}{suffix}.json"


_READ: dict[Path, tuple[int, dict]] = {}  # path -> (mtime_ns, parsed): a rerun re-parses nothing


def _read(path: Path) -> Optional[dict]:
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    if path in _READ and _READ[path][0] == stamp:
        return _READ[path][1]
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # torn or unreadable: computed again and rewritten
    _READ[path] = (stamp, payload)
    return payload


def cached_report(
    dataset: Dataset, base: str = "MobileNetV2", alpha: Optional[float] = None, size: Optional[int] = None
) -> Optional[dict]:
    """The kept result for this dataset version and base, or None if none was computed yet."""
    report = _read(_report_path(report_key(dataset, feature_config(dataset, base, alpha, size))))
    return report if report and report.get("method") == METHOD_VERSION else None


def compute_report(dataset: Dataset, cfg: TrainConfig, progress: Progress = None) -> dict:
    """Features (through the feature cache), every check and the PCA map of one dataset version: the
    expensive part, which ``suspects_report`` runs once per key."""
    features = dataset_features(
        dataset,
        cfg.base,
        cfg.alpha,
        cfg.size,
        (lambda done, total: progress("features", done, total)) if progress else None,
    )
    from threadpoolctl import threadpool_limits

    keep: dict = {}
    result = analyse(dataset, features, progress=progress, start=_parent_probe(dataset, cfg), keep=keep)
    _keep_probe(dataset, report_key(dataset, cfg), keep)
    with threadpool_limits(1):
        coords = project(features, "PCA") if len(features) else np.zeros((0, 2))
    if progress:
        progress("checks", 1, 1)
    return {
        "method": METHOD_VERSION,
        "key": report_key(dataset, cfg),
        "dataset": dataset.name,
        "version": dataset.version,
        "fingerprint": dataset.fingerprint,
        "base": cfg.base,
        "alpha": cfg.alpha,
        "size": cfg.size,
        "created": now_iso(),
        **result,
        "map": {"PCA": np.round(coords, 5).tolist()},
    }


def _keep_probe(dataset: Dataset, key: str, keep: dict) -> None:
    """The probe's folds and fits beside the report (``<key>.probe.npz``), for the versions saved from this one."""
    if keep.get("coef") is None:
        return
    path = _report_path(key, ".probe").with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.npz")
    try:
        np.savez(
            partial,
            paths=np.array([it["path"] for it in dataset.items]),
            fold_of=keep["fold_of"],
            coef=keep["coef"].astype(np.float32),
            intercept=keep["intercept"],
            classes=np.array([",".join(map(str, c)) for c in keep["classes"]]),
        )
        os.replace(partial, path)
    except OSError:  # only a speed-up for the next version: without it, that one is computed from scratch
        partial.unlink(missing_ok=True)


def _parent_probe(dataset: Dataset, cfg: TrainConfig) -> Optional[dict]:
    """The probe kept for the version this one was saved from (``manifest["parent"]``), re-indexed to this
    version's images, or None (an imported version, or its parent's suspects were never computed)."""
    parent = dataset.manifest.get("parent")
    if not parent:
        return None
    try:
        earlier = load_dataset(f"{dataset.name}@v{int(parent)}")
        with np.load(_report_path(report_key(earlier, cfg), ".probe").with_suffix(".npz")) as kept:
            index = {path: i for i, path in enumerate(kept["paths"].tolist())}
            folds = kept["fold_of"]  # read once: each lookup in the archive reads the array anew
            fold_of = np.array([folds[index[it["path"]]] if it["path"] in index else -1 for it in dataset.items])
            return {
                "fold_of": fold_of,
                "coef": kept["coef"].astype(np.float64),
                "intercept": kept["intercept"].astype(np.float64),
                "classes": [np.array([int(c) for c in row.split(",")]) for row in kept["classes"].tolist()],
            }
    except (OSError, ValueError, KeyError, TLError):
        return None


def suspects_report(
    dataset: Dataset,
    base: str = "MobileNetV2",
    alpha: Optional[float] = None,
    size: Optional[int] = None,
    progress: Progress = None,
) -> dict:
    """The kept result if there is one, else computed (``progress`` told), written atomically and returned.
    Keys: rows (as ``analyse``), trust (``trust_summary``), map ({"PCA": [[x, y], ...]} in manifest
    order), and what it was computed from (dataset, version, fingerprint, base, alpha, size, method, key)."""
    cfg = feature_config(dataset, base, alpha, size)
    path = _report_path(report_key(dataset, cfg))
    report = _read(path)
    if report and report.get("method") == METHOD_VERSION:
        return report
    report = compute_report(dataset, cfg, progress)
    write_json(path, report)
    try:  # the next rerun reads it from memory, not parsed again from the file just written
        _READ[path] = (path.stat().st_mtime_ns, report)
    except OSError:
        pass
    return report


def map_coordinates(dataset: Dataset, report: dict, method: str, progress: Progress = None) -> np.ndarray:
    """(N, 2) map coordinates of the report's dataset by ``method`` (``embedding.METHODS``): PCA from the
    report, others computed once from the cached features and kept beside it."""
    if method in report["map"]:
        return np.asarray(report["map"][method], dtype=float).reshape(-1, 2)
    path = _report_path(report["key"], f".{method}")
    kept = _read(path)
    if kept is not None:
        return np.asarray(kept["coords"], dtype=float).reshape(-1, 2)
    features = dataset_features(
        dataset,
        report["base"],
        report["alpha"],
        report["size"],
        (lambda done, total: progress("features", done, total)) if progress else None,
    )
    coords = project(features, method)
    write_json(path, {"method": method, "coords": np.round(coords, 5).tolist()})
    return coords


def suspects_of(
    name: str,
    base: str = "MobileNetV2",
    alpha: Optional[float] = None,
    size: Optional[int] = None,
    progress: Progress = None,
) -> list[dict]:
    """The suspects of dataset ``name`` (or ``name@vN``), most suspect first, from the kept result if any."""
    return suspects_report(load_dataset(name), base, alpha, size, progress)["rows"]
