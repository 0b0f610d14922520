"""How much of a whole run is done and how long the rest will take, from what each stage has measured.

A run's stages cost unlike amounts: a feature pass (per image), a head phase (per batch: negligible on cached
features, a full forward and backward pass on the plain path), a fine-tune phase (per batch, far dearer than a
head batch) and the finish (evaluation, calibration, saving, and after a fine-tune a new engine conversion).
A feature pass's cost per image is its *recent* rate (over the later half of the images it has done, so a
first chunk's engine conversion does not stand for every later one). A training phase's cost is measured per
epoch, steps and the epoch's end (validation, checkpoint) together, and never from its first epoch alone when
a later one has ended: on a real CPU run the first fine-tune epoch traces the training step and the evaluation
(4.5 s of validation against 1 s in later epochs, the first step 20x the others), and a step rate taken across
that epoch's end promised three times the real remaining time. So: after two epoch ends, the mean time between
epoch ends from the first on; after one, the first epoch's steps other than its first plus its end; within
the first epoch, its steps other than the first. A stage not yet started is estimated from the closest measured
one (the plain path's steps, else the feature pass's forwards) or left unknown rather than guessed. The share
done is elapsed / (elapsed + remaining), so it follows costs, and never goes back: a stage that turns out
dearer than estimated holds the bar where it is instead of moving it backwards.
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
# A phase's first epoch end (its evaluation traced, then run) against its first step (the training step traced):
# 3.8-4.5 s against 17-20 s on real CPU fine-tunes of MobileNetV2 alpha 0.35.
FIRST_END_PER_FIRST_STEP = 0.25
# A later epoch's end (validation, and a checkpoint when it improved) against the first one (which also traced
# the evaluation): 0.1-2.4 s against 3.2-3.8 s on those runs.
LATER_END_PER_FIRST_END = 0.5
# A training phase's start (model built, training step traced) against the feature pass's engine conversion.
START_PER_CONVERSION = 2.0


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
        self.batches: dict[str, list[tuple[float, int]]] = {}  # phase -> (time, units done) at batch ends only
        self.epoch_ends: dict[str, list[tuple[float, int]]] = {}  # phase -> (time, units done) at epoch ends
        self.shown = 0.0  # the largest share reported so far
        self.features: dict[str, tuple[list[tuple[float, int]], int]] = {}  # what -> (points, total)
        self.priors: dict[str, float] = {}  # phase -> seconds per step measured before it started (the autopilot)
        self.start_costs: dict[str, float] = {}  # phase -> its start's cost, measured before it started

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
            ends = self.epoch_ends if kind == "epoch" else self.batches
            ends.setdefault(phase.name, []).append(points[-1])

    # ------------------------------------------------------------ estimating
    def _seconds_per_image(self) -> Optional[float]:
        rates = [rate for points, _ in self.features.values() if (rate := _recent_rate(points)) is not None]
        return min(rates) if rates else None

    def _measured_step(self, name: str) -> Optional[float]:
        """Seconds per step of phase ``name`` from its epochs (module docstring), or None before two steps."""
        steps = self.phases[name].steps
        ends = [end for end in self.epoch_ends.get(name, []) if end[1] > 0]
        if len(ends) >= 2 and ends[-1][1] > ends[0][1]:
            return (ends[-1][0] - ends[0][0]) / (ends[-1][1] - ends[0][1])
        first_epoch = [b for b in self.batches.get(name, []) if 0 < b[1] <= steps]
        if len(first_epoch) >= 2 and first_epoch[-1][1] > first_epoch[0][1]:  # the first step (tracing) left out
            per_step = (first_epoch[-1][0] - first_epoch[0][0]) / (first_epoch[-1][1] - first_epoch[0][1])
            if ends:  # and an epoch's end (validation, a checkpoint), spread over its steps: the first one
                # traced the evaluation, so later ends are taken as a share of it
                per_step += LATER_END_PER_FIRST_END * max(0.0, ends[0][0] - first_epoch[-1][0]) / steps
            return per_step
        if first_epoch and not ends:
            return None  # only the first step, which traced the model: it says nothing of the others
        return _recent_rate(self.progress[name]) if name in self.progress else None

    def _first_end(self, name: str) -> float:
        """The first epoch's end, not measured yet: evaluation traced and run once, a share of what tracing
        the training step took (the phase's start to its first step's end)."""
        batches = self.batches.get(name)
        return FIRST_END_PER_FIRST_STEP * (batches[0][0] - self.progress[name][0][0]) if batches else 0.0

    def _seconds_per_step(self, name: str) -> Optional[float]:
        if name in self.progress and (rate := self._measured_step(name)) is not None:
            return rate
        if self.phases[name].cheap:
            return 0.0
        if name in self.priors:
            return self.priors[name]
        for measured in ("train", "fine-tune"):  # the whole model's steps, measured
            if measured != name and measured in self.progress and (rate := self._measured_step(measured)):
                return rate
        per_image = self._seconds_per_image()
        if per_image is not None:
            return per_image * self.batch_size * STEP_PER_FORWARD
        # nothing else measured: its first step, tracing included (an upper side)
        return _recent_rate(self.progress[name]) if name in self.progress else None

    def _finish(self) -> float:
        """Evaluation, calibration and saving; after a fine-tune also a new engine conversion of the changed
        model and TensorFlow's reference outputs: the set-up again plus what the feature pass's first chunk
        took beyond its images (it waited for the base's conversion)."""
        if "fine-tune" not in self.phases:
            return self.setup * FINISH_PER_SETUP
        return self.setup + self._conversion(default=self.setup)

    def _conversion(self, default: float) -> float:
        """What the feature pass's first chunk took beyond its images (it waited for the engine's conversion)."""
        overheads = []
        for points, _ in self.features.values():
            first = next((point for point in points if point[1] > 0), None)
            rate = _recent_rate(points)
            if first is not None and rate is not None:
                overheads.append(max(0.0, first[0] - points[0][0] - first[1] * rate))
        return max(overheads, default=default)

    def _start(self) -> float:
        """A training phase's start: the model built and its training step traced. On a real CPU fine-tune it
        took 16-18 s against a 3 s set-up and a 6-10 s engine conversion: about twice the conversion."""
        return max(self.setup, START_PER_CONVERSION * self._conversion(default=0.0))

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
            if name in self.progress and not phase.cheap and not self.epoch_ends.get(name):
                left += self._first_end(name)
            if name not in self.progress and not phase.cheap:
                # a phase's start (its model built, its training step traced): measured by the autopilot when it
                # planned the phase, else from the set-up and the conversion
                left += self.start_costs[name] if name in self.start_costs else self._start()
        return left

    def observe(self, event: dict, now: float) -> dict:
        self._record(event, now)
        self.last_at = now
        left = self.remaining()
        if left is None or math.isnan(left):
            return {}
        left = max(0.0, left - (now - self._stage_time()))  # time already spent in the unit under way
        elapsed = now - self.started_at
        self.shown = max(self.shown, elapsed / (elapsed + left) if elapsed + left > 0 else 1.0)
        return {"overall_fraction": round(self.shown, 4), "remaining_s": round(left, 1)}

    def _stage_time(self) -> float:
        """When the latest measured unit ended (rates say nothing of the time since)."""
        times = [points[-1][0] for points in self.progress.values()]
        times += [points[-1][0] for points, _ in self.features.values()]
        return max(times, default=self.last_at)
