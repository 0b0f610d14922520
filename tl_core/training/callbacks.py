"""Progress, cancellation and early-stopping hooks for training phases (Keras ``fit`` and the NumPy head fit).

A ``Reporter`` sends progress events to the caller and (throttled) to the run's ``progress.json``;
nothing here draws anything: pages read the run folder. A ``cancel`` file in the run folder stops
training at the next batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

import keras
import numpy as np

from tl_core.runs.store import Run
from tl_core.training.timeline import Phase, Timeline

ProgressFn = Optional[Callable[[dict], None]]


class Reporter:
    """Sends progress events to the caller's callback and (throttled) to the run's progress.json."""

    def __init__(self, run: Run, callback: ProgressFn, min_interval: float = 0.5):
        self.run, self.callback, self.min_interval = run, callback, min_interval
        self.last_write = 0.0
        self.started = time.time()
        self.timeline: Optional[Timeline] = None

    def plan(self, phases: list[Phase], batch_size: int) -> None:
        """From now on each event also carries the whole run's ``overall_fraction`` and ``remaining_s``."""
        self.timeline = Timeline(phases, batch_size, started_at=self.started, now=time.time())

    def add_phase(self, phase: Phase, seconds_per_step: Optional[float] = None, setup_s: float = 0.0) -> None:
        """A phase decided while the run goes (the autopilot's): the time-left estimate counts it from now on."""
        if self.timeline is not None:
            self.timeline.add(phase, seconds_per_step, setup_s)

    def __call__(self, event: dict) -> None:
        now = time.time()
        event = {**event, "elapsed_s": round(now - self.started, 2)}
        if self.timeline is not None:
            event.update(self.timeline.observe(event, now))
        if self.callback:
            self.callback(event)
        if event["kind"] != "batch" or time.time() - self.last_write >= self.min_interval:
            self.run.write_progress(event)
            self.last_write = time.time()

    def should_stop(self) -> bool:
        return self.run.cancel_requested()


class PhaseProgress:
    """Epoch and batch events of one training phase, a checkpoint hook on improvement, and cancellation.
    Plain Python: the NumPy head fit (``head_fit.py``) calls it directly, Keras' ``fit`` through ``KerasProgress``."""

    def __init__(
        self,
        reporter: Reporter,
        phase: str,
        total_epochs: int,
        steps: int,
        on_improved: Optional[Callable[[int, str], None]] = None,
    ):
        self.reporter, self.phase, self.total_epochs, self.steps = reporter, phase, total_epochs, steps
        self.on_improved = on_improved
        self.best = np.inf
        self.cancelled = False
        self.epoch_start = time.time()
        self.epoch_index = 0

    def epoch_begin(self, epoch: int) -> None:
        self.epoch_start = time.time()
        self.epoch_index = epoch  # absolute: fit passes initial_epoch-based indices

    def batch_end(self, batch: int, logs: dict, learning_rate: float) -> bool:
        """Report a batch; True when the run was asked to stop."""
        self.reporter(
            {
                "kind": "batch",
                "phase": self.phase,
                "epoch": self.epoch_index + 1,
                "total_epochs": self.total_epochs,
                "batch": batch + 1,
                "batches": self.steps,
                "loss": float(logs.get("loss", np.nan)),
                "accuracy": float(logs.get("accuracy", np.nan)),
                "learning_rate": learning_rate,
            }
        )
        self.cancelled = self.cancelled or self.reporter.should_stop()
        return self.cancelled

    def epoch_end(self, epoch: int, logs: dict, learning_rate: float) -> bool:
        """Record the epoch's history row, checkpoint on improvement; True when the run was asked to stop."""
        if self.cancelled:
            return True  # a partial epoch: not a history row
        row = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "seconds": round(time.time() - self.epoch_start, 3),
            "learning_rate": learning_rate,
            **{k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs},
        }
        self.reporter.run.append_history(row)
        self.reporter({"kind": "epoch", "total_epochs": self.total_epochs, **row})
        monitored = row.get("val_loss", row.get("loss", np.inf))
        if self.on_improved and monitored < self.best:
            self.best = monitored
            self.on_improved(epoch + 1, self.phase)
        self.cancelled = self.reporter.should_stop()
        return self.cancelled


class KerasProgress(PhaseProgress, keras.callbacks.Callback):
    """``PhaseProgress`` as a Keras callback for ``fit``."""

    def __init__(self, *args, **kwargs):
        PhaseProgress.__init__(self, *args, **kwargs)
        keras.callbacks.Callback.__init__(self)

    def _lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begin(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.batch_end(batch, logs or {}, self._lr()):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.epoch_end(epoch, logs or {}, self._lr()):
            self.model.stop_training = True


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that, in a resumed run, starts from the checkpoint's best value and weights: an
    epoch worse than the checkpoint is not taken as a new best, and restoring goes back to the checkpoint."""

    def __init__(self, resumed_best: Optional[float] = None, **kwargs):
        super().__init__(**kwargs)
        self.resumed_best = resumed_best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed_best is not None and np.isfinite(self.resumed_best):
            self.best = self.resumed_best
            self.best_weights = self.model.get_weights()  # just restored from the checkpoint


def with_early_stopping(cfg, progress: KerasProgress, resumed_best: Optional[float] = None) -> list:
    callbacks = [progress]
    if cfg.early_stopping:
        callbacks.append(
            ResumableEarlyStopping(resumed_best, monitor="val_loss", patience=cfg.patience, restore_best_weights=True)
        )
    return callbacks
