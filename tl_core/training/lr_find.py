"""Learning-rate finder: fastai's range test, on the part of the model a run would train.

The base is cut at the config's freeze depth; its frozen part runs once over a sample of training images,
and the trainable rest is trained for a few dozen mini-batches while the learning rate grows exponentially.
The loss (smoothed) against the learning rate gives the suggestion (fastai's 'valley' rule). It builds its own model and seeds its own generators, so nothing a run trains afterwards changes,
and the same seed gives the same suggestion.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Optional

import numpy as np

from tl_core.errors import TLError
from tl_core.models.config import TrainConfig


def suggest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's 'valley': the longest stretch over which the loss keeps falling, and a point two thirds of
    the way down it (robust to the noisy start where the steepest-slope rule picks a tiny rate)."""
    n = len(losses)
    if n < 3:
        return float(lrs[0]) if n else 1e-3
    longest = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return float(lrs[min(n - 1, start + int(third) + int(third / 2))])


def lr_find(
    cfg: TrainConfig,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 80,
    max_images: int = 256,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict:
    """{"suggested_lr", "lrs", "losses"} for ``cfg`` (its dataset, base, size, freeze depth and optimizer)."""

    from tl_core.data.datasets import load_dataset
    from tl_core.data.images import load_batch
    from tl_core.models.modeling import build_classifier, suffix_model

    cfg = cfg.resolved()
    if not 0 < start_lr < end_lr:
        raise TLError(f"The range must grow: start {start_lr!r} < end {end_lr!r}.")
    state = random.getstate(), np.random.get_state()
    try:
        dataset = load_dataset(cfg.data)
        classes = dataset.classes
        items = dataset.split_items("train")
        rng = np.random.default_rng(cfg.seed)
        sample = [items[i] for i in sorted(rng.choice(len(items), min(max_images, len(items)), replace=False))]
        labels = np.array([classes.index(it["class"]) for it in sample])
        built = build_classifier(cfg, len(classes), with_augmentation=False)
        parts = suffix_model(built, built.frozen_layers)
        pixels = load_batch([dataset.root / it["path"] for it in sample], cfg.size, resize=cfg.resize)
        if parts is None:  # no clean cut: the whole model trains on pixels
            inputs, trainable = pixels.astype(np.float32), built.model
        else:
            prefix, trainable = parts
            inputs = prefix.predict(pixels.astype(np.float32), batch_size=32, verbose=0)
        lrs, losses = range_test(
            trainable,
            inputs,
            labels,
            cfg.optimizer,
            rng,
            start_lr,
            end_lr,
            steps,
            min(cfg.batch_size, len(labels)),
            progress,
        )
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    return {"suggested_lr": suggest(np.array(lrs), np.array(losses)), "lrs": lrs, "losses": losses}


def rates(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """The range test's learning rates: growing exponentially from ``start_lr`` to ``end_lr`` in ``steps``."""
    factor = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    return [start_lr * factor**step for step in range(steps)]


class Curve:
    """The range test's smoothed loss against the learning rate, one step at a time."""

    def __init__(self):
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.average, self.best = 0.0, np.inf

    def add(self, lr: float, loss: float) -> bool:
        """Adds a step's loss; False once the loss diverged (that step is not kept: the curve ends there)."""
        self.average = 0.9 * self.average + 0.1 * loss
        smoothed = self.average / (1 - 0.9 ** (len(self.lrs) + 1))
        if not np.isfinite(smoothed) or smoothed > 4 * self.best:
            return False
        self.best = min(self.best, smoothed)
        self.lrs.append(lr)
        self.losses.append(smoothed)
        return True


def range_test(
    trainable,
    inputs: np.ndarray,
    labels: np.ndarray,
    optimizer_name: Optional[str],
    rng: np.random.Generator,
    start_lr: float,
    end_lr: float,
    steps: int,
    batch: int,
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[list[float], list[float]]:
    """(learning rates, smoothed losses): ``trainable`` (changed: callers keep their own weights) trained one
    mini-batch per step while the rate grows exponentially, until the loss diverges. The autopilot runs the
    same rates and curve through the compiled model its fine-tune phase trains."""
    import keras

    from tl_core.models.modeling import make_optimizer

    if optimizer_name is None:  # compiled already (with a sparse cross-entropy loss): its optimizer goes on
        optimizer = trainable.optimizer
    else:
        optimizer = make_optimizer(optimizer_name, start_lr)
        trainable.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy())
    curve = Curve()
    for step, lr in enumerate(rates(start_lr, end_lr, steps)):
        optimizer.learning_rate.assign(lr)
        chosen = rng.choice(len(labels), batch, replace=False)
        loss = float(np.asarray(trainable.train_on_batch(inputs[chosen], labels[chosen])).ravel()[0])
        if not curve.add(lr, loss):
            break  # diverged: the curve past here says nothing
        if progress:
            progress(step + 1, steps)
    return curve.lrs, curve.losses
