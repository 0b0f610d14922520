"""How much of a whole run is done and how long the rest will take, from what each stage has measured.

A run's stages cost unlike amounts: a feature pass (per image), a head phase (per batch: negligible on cached
features, a full forward and backward pass on the plain path), a fine-tune phase (per batch, far dearer than a
head batch) and the finish (evaluation, calibration, saving, and after a fine-tune a new engine conversion).
Each stage's cost per unit is its *recent* rate (over the later half of the units it has done, so a first
epoch's tracing or a first chunk's engine conversion does not stand for every later one); a stage not yet
started is estimated from the closest measured one (the plain path's steps, else the feature pass's forwards)
or left unknown rather than guessed. The share done is elapsed / (elapsed + remaining), so it follows costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

# A training step on one image (forward and backward in TensorFlow) against one forward of the feature pass
# (often on the faster inference engine): an upper-side ratio, so a fine-tune not yet started is not
# promised sooner than it comes.
STEP_PER_FORWARD = 20.0
# Without a fine-tune the finish reuses the feature pass's engine: a small share of the set-up (loading and
# building) before the first stage. After a fine-tune it converts the changed model for the engine again.
FINISH_PER_SETUP = 0.2


@dataclass(frozen=True)
class Phase:
    name: str  # as events name it: "head", "train", "fine-tune", or a scikit-learn head's kind
    epochs: int
    steps: int  # batches per epoch
    cheap: bool = False  # a head on cached features: its cost is negligible beside the others


def _recent_rate(points: list[tuple[float, int]]) -> Optional[float]:
    """Seconds per unit over the later half of ``points`` ((time, units done) in order, starting at (start, 0))."""
    last_time, last_done = points[-1]
    if last_done <= 0:
        return None
    mid_time, mid_done = next(point for point in points if point[1] >= last_done / 2)
    if last_done == mid_done:  # one jump: all that is known is its average
        mid_time, mid_done = points[0]
    return (last_time - mid_time) / (last_done - mid_done) if last_done > mid_done else None


class Timeline:
    """Feed it every progress event with its time; it answers ``overall_fraction`` and ``remaining_s``
    (absent while the remaining time cannot be estimated)."""

    def __init__(self, phases: list[Phase], batch_size: int, started_at: float, now: float):
        """``started_at``: when the run started (elapsed counts from it); ``now``: when its stages begin."""
        self.phases = {phase.name: phase for phase in phases}
        self.order = [phase.name for phase in phases]
        self.batch_size = batch_size
        self.started_at = started_at
        self.last_at = now
        self.setup = now - started_at
        self.first_epoch: dict[str, int] = {}
        self.progress: dict[str, list[tuple[float, int]]] = {}  # phase -> (time, units done)
        self.features: dict[str, tuple[list[tuple[float, int]], int]] = {}  # what -> (points, total)
        self.priors: dict[str, float] = {}
        self.start_costs: dict[
            str, float
        ] = {}  # phase -> its start's cost, when known better than the set-up's  # phase -> seconds per step measured before it started

    def add(self, phase: Phase, seconds_per_step: Optional[float] = None, setup_s: float = 0.0) -> None:
        """A phase planned while the run goes (the autopilot's fine-tune phase), with the cost per step it measured
        for it and its one-time start (its frozen prefix's pass): counted until the phase measures its own."""
        self.phases[phase.name] = phase
        if phase.name not in self.order:
            self.order.append(phase.name)
        if seconds_per_step is not None:
            self.priors[phase.name] = seconds_per_step
        self.start_costs[phase.name] = setup_s

    # ------------------------------------------------------------ measuring
    def _units_done(self, phase: Phase, event: dict) -> int:
        epoch = int(event.get("epoch") or 0)
        self.first_epoch.setdefault(phase.name, epoch - 1)
        if event["kind"] == "batch":
            return (epoch - 1 - self.first_epoch[phase.name]) * phase.steps + int(event.get("batch") or 0)
        return (epoch - self.first_epoch[phase.name]) * phase.steps

    def _record(self, event: dict, now: float) -> None:
        kind = event.get("kind")
        if kind == "features":
            points, _ = self.features.setdefault(event["what"], ([(self.last_at, 0)], 0))
            points.append((now, int(event["done"])))
            self.features[event["what"]] = (points, int(event["total"]))
        elif kind in ("batch", "epoch") and event.get("phase") in self.phases:
            phase = self.phases[event["phase"]]
            points = self.progress.setdefault(phase.name, [(self.last_at, 0)])
            points.append((now, max(points[-1][1], self._units_done(phase, event))))

    # ------------------------------------------------------------ estimating
    def _seconds_per_image(self) -> Optional[float]:
        rates = [rate for points, _ in self.features.values() if (rate := _recent_rate(points)) is not None]
        return min(rates) if rates else None

    def _seconds_per_step(self, name: str) -> Optional[float]:
        if name in self.progress and (rate := _recent_rate(self.progress[name])) is not None:
            return rate
        if self.phases[name].cheap:
            return 0.0
        if name in self.priors:
            return self.priors[name]
        for measured in ("train", "fine-tune"):  # the whole model's steps, measured
            if measured in self.progress and (rate := _recent_rate(self.progress[measured])) is not None:
                return rate
        per_image = self._seconds_per_image()
        return None if per_image is None else per_image * self.batch_size * STEP_PER_FORWARD

    def _finish(self) -> float:
        """Evaluation, calibration and saving; after a fine-tune also a new engine conversion of the changed
        model and TensorFlow's reference outputs: the set-up again plus what the feature pass's first chunk
        took beyond its images (it waited for the base's conversion)."""
        if "fine-tune" not in self.phases:
            return self.setup * FINISH_PER_SETUP
        overheads = []
        for points, _ in self.features.values():
            first = next((point for point in points if point[1] > 0), None)
            rate = _recent_rate(points)
            if first is not None and rate is not None:
                overheads.append(max(0.0, first[0] - points[0][0] - first[1] * rate))
        return self.setup + max(overheads, default=self.setup)

    def remaining(self) -> Optional[float]:
        left = self._finish()
        for points, total in self.features.values():
            done = points[-1][1]
            if done < total:
                rate = _recent_rate(points)
                if rate is None:
                    return None
                left += (total - done) * rate
        for name in self.order:
            phase = self.phases[name]
            done = self.progress[name][-1][1] if name in self.progress else 0
            units_left = phase.epochs * phase.steps - done
            if units_left <= 0:
                continue
            rate = self._seconds_per_step(name)
            if rate is None:
                return None
            left += units_left * rate
            if name not in self.progress and not phase.cheap:
                # a phase's start (decoding, tracing its training step) costs like the set-up
                left += self.start_costs.get(name, self.setup)
        return left

    def observe(self, event: dict, now: float) -> dict:
        self._record(event, now)
        self.last_at = now
        left = self.remaining()
        if left is None or math.isnan(left):
            return {}
        left = max(0.0, left - (now - self._stage_time()))  # time already spent in the unit under way
        elapsed = now - self.started_at
        return {"overall_fraction": round(elapsed / (elapsed + left), 4), "remaining_s": round(left, 1)}

    def _stage_time(self) -> float:
        """When the latest measured unit ended (rates say nothing of the time since)."""
        times = [points[-1][0] for points in self.progress.values()]
        times += [points[-1][0] for points, _ in self.features.values()]
        return max(times, default=self.last_at)
