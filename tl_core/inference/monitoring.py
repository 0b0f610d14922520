"""A watch on each deployed model: every prediction recorded, and a report that says when the inputs drift.

**Recording.** The Predict page and the REST server record, per image predicted, the time, the answer (class
index), its probability, the unknown flag and the distance from the training images (``runs/scope.py``); never
the image. Each run has an append-only log, ``$TL_HOME/monitoring/<run id>/predictions.bin``: fixed-size binary
records (``RECORD``, 22 bytes), appended in whole records under a file lock, so the app and the server can write
the same run's log. A ``Recorder`` buffers records in memory and writes them together, in a thread of its own
(when ``FLUSH_EVERY`` records wait, or ``FLUSH_AFTER_S`` after the first waiting one, and at exit): a request
pays for building a few bytes, never for a write. The log is bounded: past ``MAX_RECORDS`` it becomes ``predictions.1.bin`` (replacing the
older one) and a new log starts, so at most twice that is kept.

**Report.** ``report(run)`` reads the log (100,000 records in a few milliseconds) and compares the recent
window (``days``, default 7) with what the run saw at training time (its scope keeps the validation images'
top-1 probabilities and the training images per class):

- unknown rate: a one-sided exact binomial test against the rate the threshold lets through on validation
  images (1 - keep), flagged when p < ``ALPHA`` and the rate is at least twice that; at least ``MIN_UNKNOWN``
  measured predictions;
- confidence: a one-sided two-sample Kolmogorov-Smirnov test, recorded top-1 probabilities lower than the
  validation images' (Smirnov's asymptotic p-value), flagged when p < ``ALPHA`` and the statistic is at least
  ``MIN_KS``; at least ``MIN_CONFIDENCE`` predictions;
- class mix: Pearson's chi-square goodness-of-fit test of the answers per class against the training images'
  class shares (classes expected fewer than 5 times pooled; the Wilson-Hilferty approximation of the chi-square
  tail), flagged when p < ``ALPHA``; at least ``MIN_CLASS_MIX`` predictions.

The tests are written here in NumPy (``tests/test_unknowns.py`` checks them against SciPy's): importing
``scipy.stats`` costs a fresh server more than the whole report of 100,000 predictions.

``drift`` is true when any test is flagged; ``warnings`` says which, in sentences.
"""

from __future__ import annotations

import atexit
import fcntl
import math
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from tl_core.errors import TLError
from tl_core.workspace import safe_name, subdir

if TYPE_CHECKING:
    from tl_core.runs.scope import Scope
    from tl_core.runs.store import Run

RECORD = np.dtype(
    [
        ("time", "<f8"),  # seconds since the epoch (UTC)
        ("label", "<i4"),  # the answer: the top class's index (shown even when unknown)
        ("probability", "<f4"),  # its probability
        ("unknown", "i1"),  # 1 unknown, 0 in scope, -1 not measured (a run without a scope)
        ("source", "i1"),  # SOURCES' index
        ("distance", "<f4"),  # from the training images; NaN when not measured
    ]
)
SOURCES = ("app", "rest")
LOG, ROTATED = "predictions.bin", "predictions.1.bin"
MAX_RECORDS = 1_000_000  # per file (22 MB); the file before it is kept as ROTATED
FLUSH_EVERY = 256
FLUSH_AFTER_S = 1.0
ALPHA = 0.01
MIN_UNKNOWN, MIN_CONFIDENCE, MIN_CLASS_MIX = 10, 20, 20
MIN_KS = 0.1
DAY = 86400.0


def log_dir(run_id: str) -> Path:
    return subdir("monitoring") / safe_name(run_id, "run id")


# ------------------------------------------------------------------ recording
def records(
    labels: Sequence[int],
    probabilities: Sequence[float],
    unknown: Sequence[Optional[bool]],
    distances: Sequence[Optional[float]],
    source: str,
    when: Optional[float] = None,
) -> np.ndarray:
    """One record per prediction (``when``: their time, default now)."""
    if source not in SOURCES:
        raise TLError(f"Unknown prediction source {source!r}; one of {list(SOURCES)}.")
    out = np.empty(len(labels), RECORD)
    out["time"] = time.time() if when is None else when
    out["label"] = labels
    out["probability"] = probabilities
    out["unknown"] = [-1 if flag is None else int(flag) for flag in unknown]
    out["distance"] = [np.nan if d is None else d for d in distances]
    out["source"] = SOURCES.index(source)
    return out


def append(run_id: str, rows: np.ndarray) -> None:
    """Write whole records at the end of the run's log, under its lock; past ``MAX_RECORDS`` the log is
    rotated first."""
    if not len(rows):
        return
    folder = log_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(rows, RECORD).tobytes()
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / LOG
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size >= MAX_RECORDS * RECORD.itemsize:
            os.replace(path, folder / ROTATED)
            size = 0
        with open(path, "ab") as log:
            if size % RECORD.itemsize:  # a torn record from a crash: start the next on a record boundary
                log.truncate(size - size % RECORD.itemsize)
            log.write(data)


class Recorder:
    """Buffered appends to one run's log: ``record`` costs building the records and a list append; one writer
    thread per recorder (started with the first record, never the request's) writes when ``flush_every``
    records wait or ``flush_after_s`` after the first waiting one, and at exit. ``flush`` writes what waits now,
    in the caller's thread."""

    def __init__(self, run_id: str, flush_every: int = FLUSH_EVERY, flush_after_s: float = FLUSH_AFTER_S):
        self.run_id = run_id
        self.flush_every, self.flush_after_s = flush_every, flush_after_s
        self._pending: list[np.ndarray] = []
        self._count = 0
        self._wake = threading.Condition()  # guards the buffer; held only to swap it, never while writing
        self._write_lock = threading.Lock()  # one write at a time, in order
        self._writer: Optional[threading.Thread] = None
        _RECORDERS.add(self)

    def record(self, rows: np.ndarray) -> None:
        with self._wake:
            self._pending.append(rows)
            self._count += len(rows)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name=f"monitor-{self.run_id}", daemon=True)
                self._writer.start()
            elif self._count >= self.flush_every or len(self._pending) == 1:
                self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                if self._count < self.flush_every:  # the first waiting record: give others a moment to join it
                    self._wake.wait_for(lambda: self._count >= self.flush_every, timeout=self.flush_after_s)
            try:
                self.flush()
            except OSError:  # a full or vanished disk: monitoring loses these records, serving goes on
                pass

    def flush(self) -> None:
        with self._write_lock:
            with self._wake:
                pending, self._pending, self._count = self._pending, [], 0
            if pending:
                append(self.run_id, np.concatenate(pending))


_RECORDERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for recorder in list(_RECORDERS):
        try:
            recorder.flush()
        except OSError:
            pass


def read(run_id: str) -> np.ndarray:
    """Every kept record of the run, oldest first (a torn last record ignored)."""
    folder = log_dir(run_id)
    parts = []
    for name in (ROTATED, LOG):
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            continue
        parts.append(np.frombuffer(data[: len(data) - len(data) % RECORD.itemsize], RECORD))
    return np.concatenate(parts) if parts else np.zeros(0, RECORD)


# ------------------------------------------------------------------ the tests (NumPy; checked against SciPy)
def binomial_upper(successes: int, trials: int, rate: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, rate), exactly: the terms are summed away from the mode (the
    upper tail above it, else one minus the lower tail), until they stop counting; a few hundred terms, not
    ``trials``."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if rate <= 0.0 or rate >= 1.0:
        return float(rate >= 1.0)
    log_rate, log_rest, log_all = math.log(rate), math.log1p(-rate), math.lgamma(trials + 1)

    def term(i: int) -> float:
        return math.exp(
            log_all - math.lgamma(i + 1) - math.lgamma(trials - i + 1) + i * log_rate + (trials - i) * log_rest
        )

    upper = successes > math.floor((trials + 1) * rate)
    total, i, step = 0.0, (successes if upper else successes - 1), (1 if upper else -1)
    while 0 <= i <= trials:
        value = term(i)
        total += value
        if value <= total * 1e-17:
            break
        i += step
    return float(min(1.0, total)) if upper else float(max(0.0, 1.0 - total))


def ks_lower(sample: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(D+, p): the one-sided two-sample Kolmogorov-Smirnov statistic for ``sample`` lying below ``reference``
    (the largest amount by which the sample's CDF exceeds the reference's) and Smirnov's asymptotic p-value,
    exp(-2 D+^2 mn / (m + n))."""
    sample, reference = np.sort(sample), np.sort(reference)
    points = np.concatenate([sample, reference])
    above = np.searchsorted(sample, points, side="right") / len(sample)
    below = np.searchsorted(reference, points, side="right") / len(reference)
    statistic = float(max(0.0, (above - below).max()))
    m, n = len(sample), len(reference)
    return statistic, float(min(1.0, math.exp(-2.0 * statistic**2 * m * n / (m + n))))


def chi_square(observed: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(statistic, p): Pearson's goodness-of-fit test, the tail by the Wilson-Hilferty approximation."""
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(observed) - 1
    z = ((statistic / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return statistic, float(0.5 * math.erfc(z / math.sqrt(2)))


# ------------------------------------------------------------------ the report
def _pooled(observed: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes expected fewer than 5 times merged into one bin (the chi-square test's rule of thumb)."""
    small = expected < 5
    if small.sum() <= 1:
        return observed, expected
    return (
        np.append(observed[~small], observed[small].sum()),
        np.append(expected[~small], expected[small].sum()),
    )


def report(run: Run, days: float = 7.0, now: Optional[float] = None, scope: Optional[Scope] = None, rows=None) -> dict:
    """The run's predictions so far and the recent window's drift tests (module docstring). ``scope``, ``rows``:
    already loaded ones (default: the run's)."""
    from tl_core.runs.scope import scope_for

    if days <= 0:
        raise TLError(f"--days must be a positive number of days; got {days!r}.")
    now = time.time() if now is None else now
    scope = scope if scope is not None else scope_for(run)
    rows = read(run.id) if rows is None else rows
    classes = run.artifacts.class_names()
    window = rows[rows["time"] >= now - days * DAY]
    day_index = (rows["time"] // DAY).astype(np.int64)
    days_seen, per_day = np.unique(day_index, return_counts=True)
    out: dict = {
        "run": run.id,
        "predictions": int(len(rows)),
        "window_days": days,
        "window_predictions": int(len(window)),
        "per_day": {time.strftime("%Y-%m-%d", time.gmtime(int(d) * DAY)): int(c) for d, c in zip(days_seen, per_day)},
        "by_source": {s: int((rows["source"] == i).sum()) for i, s in enumerate(SOURCES)},
        "scope": scope is not None,
        "unknown_rate": None,
        "drift": False,
        "warnings": [],
        "tests": {},
    }
    warnings = out["warnings"]
    if scope is None:
        warnings.append(
            "This run was trained before scopes existed: its answers carry no unknown flag (null), so the unknown "
            "rate is not measured. Train it again to get one."
        )
    measured = window[window["unknown"] >= 0]
    if len(measured):
        out["unknown_rate"] = round(float(measured["unknown"].mean()), 4)
        out["median_distance"] = round(float(np.median(measured["distance"])), 4)
    if scope is not None:
        expected = 1.0 - scope.keep
        test = {"test": "one-sided exact binomial", "expected_rate": round(expected, 4), "n": int(len(measured))}
        if len(measured) >= MIN_UNKNOWN:
            unknowns = int(measured["unknown"].sum())
            p = binomial_upper(unknowns, len(measured), expected)
            test.update(p_value=p, flagged=bool(p < ALPHA and out["unknown_rate"] >= 2 * expected))
            if test["flagged"]:
                warnings.append(
                    f"{out['unknown_rate']:.0%} of the last {days:g} days' {len(measured)} predictions fell outside "
                    f"what the model was trained on (unknown), against {expected:.0%} of its validation images "
                    f"(binomial test p = {p:.1e}): it is being shown things it was not taught."
                )
        out["tests"]["unknown_rate"] = test
    out.update(_confidence(window, scope, days, warnings, out["tests"]))
    out.update(_class_mix(window, classes, scope, days, warnings, out["tests"]))
    out["drift"] = any(t.get("flagged") for t in out["tests"].values())
    return out


def _confidence(window, scope, days, warnings, tests) -> dict:
    recorded = window["probability"].astype(np.float64)
    validation = scope.val_confidence if scope is not None else np.zeros(0)
    edges = np.linspace(0.0, 1.0, 21)
    out = {
        "confidence": {
            "median": round(float(np.median(recorded)), 4) if len(recorded) else None,
            "validation_median": round(float(np.median(validation)), 4) if len(validation) else None,
            "histogram_edges": edges.round(2).tolist(),
            "histogram": np.histogram(recorded, edges)[0].tolist(),
            "validation_histogram": np.histogram(validation, edges)[0].tolist(),
        }
    }
    test = {"test": "one-sided two-sample Kolmogorov-Smirnov", "n": int(len(recorded))}
    if len(recorded) >= MIN_CONFIDENCE and len(validation) >= MIN_CONFIDENCE:
        statistic, p = ks_lower(recorded, validation)
        test.update(statistic=round(statistic, 4), p_value=p, flagged=bool(p < ALPHA and statistic >= MIN_KS))
        if test["flagged"]:
            warnings.append(
                f"The model is less sure than on its validation images: median top probability "
                f"{np.median(recorded):.0%} over the last {days:g} days against {np.median(validation):.0%} "
                f"(Kolmogorov-Smirnov test p = {p:.1e})."
            )
    tests["confidence"] = test
    return out


def _class_mix(window, classes, scope, days, warnings, tests) -> dict:
    counts = np.bincount(window["label"], minlength=len(classes))[: len(classes)] if len(window) else np.zeros(0)
    training = scope.train_counts.astype(np.float64) if scope is not None else np.zeros(0)
    out = {
        "class_mix": {
            "answers": {c: int(n) for c, n in zip(classes, counts)},
            "training_share": (
                {c: round(float(n / training.sum()), 4) for c, n in zip(classes, training)} if training.sum() else {}
            ),
        }
    }
    test = {"test": "chi-square goodness of fit", "n": int(counts.sum()) if len(counts) else 0}
    if len(counts) and test["n"] >= MIN_CLASS_MIX and training.sum() and len(training) == len(counts):
        observed, expected = _pooled(counts.astype(np.float64), training / training.sum() * counts.sum())
        if len(observed) >= 2 and (expected > 0).all():
            statistic, p = chi_square(observed, expected)
            test.update(statistic=round(statistic, 2), p_value=p, flagged=bool(p < ALPHA))
            if test["flagged"]:
                share = counts / counts.sum()
                gap = int(np.argmax(np.abs(share - training / training.sum())))
                warnings.append(
                    f"The answers' class mix differs from the training images' (chi-square test p = "
                    f"{p:.1e}): {classes[gap]!r} is {share[gap]:.0%} of the last {days:g} days' "
                    f"answers against {training[gap] / training.sum():.0%} of the training images."
                )
    tests["class_mix"] = test
    return out
