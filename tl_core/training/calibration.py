"""Confidence you can act on: temperature scaling fitted on the validation split, the calibration error
before and after, and the accuracy-against-coverage curve that prices a "not sure" threshold.

Temperature scaling divides the log-probabilities by one number T (fitted by minimising the validation
negative log-likelihood), so the predicted class never changes, only how sure the model says it is. The run saves its model with T
folded in (``LoadedModel.calibrate``): every way of running the model gives the calibrated probabilities.
"""

from __future__ import annotations

import numpy as np

from tl_core.models.head_fit import apply_temperature

ECE_BINS = 15


def _nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    calibrated = apply_temperature(probs, temperature)
    return float(-np.mean(np.log(np.clip(calibrated[np.arange(len(labels)), labels], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising validation NLL: a log-spaced grid, then a golden-section refinement."""
    if len(labels) < 2:
        return 1.0
    grid = np.logspace(np.log10(0.05), np.log10(20), 60)
    best = int(np.argmin([_nll(probs, labels, t) for t in grid]))
    low, high = np.log(grid[max(best - 1, 0)]), np.log(grid[min(best + 1, len(grid) - 1)])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if _nll(probs, labels, np.exp(a)) < _nll(probs, labels, np.exp(b)):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by how many images fall in each."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(np.mean(predicted[inside] == labels[inside]) - confidence[inside].mean())
    return float(error)


def calibrate(probs: np.ndarray, labels: np.ndarray) -> dict:
    """What a run records: the temperature and the calibration error before and after it."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    temperature = fit_temperature(probs, labels)
    return {
        "temperature": round(temperature, 4),
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(apply_temperature(probs, temperature), labels),
    }


def coverage_curve(probs: np.ndarray, labels: np.ndarray, points: int = 51) -> list[dict]:
    """For thresholds 0..1: the share of images answered (top probability at least the threshold) and the
    accuracy on those; below the threshold the answer is "not sure"."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    rows = []
    for threshold in np.linspace(0, 1, points):
        answered = confidence >= threshold
        rows.append(
            {
                "threshold": float(threshold),
                "coverage": float(answered.mean()),
                "accuracy": float(correct[answered].mean()) if answered.any() else None,
            }
        )
    return rows
