"""The end of a run: learn its scope (``runs/scope.py``) from the features its head reads.

A head-only run's training and validation features are in the feature cache already (no forward pass);
a fine-tuned run's base changed, so its own model computes them, in chunks (memory bounded by the chunk,
not the dataset), on at most ``scope.REFERENCE_MAX`` training images.
"""

from __future__ import annotations

import numpy as np

from tl_core.data.images import load_batch
from tl_core.models.head_fit import apply_temperature
from tl_core.runs import scope as scopes
from tl_core.runs.loaded_model import LoadedModel
from tl_core.training.context import TrainingContext

CHUNK = 128  # images decoded at a time for a fine-tuned run


def _sample(items: list, limit: int) -> list[int]:
    if len(items) <= limit:
        return list(range(len(items)))
    return sorted(np.random.default_rng(0).choice(len(items), limit, replace=False).tolist())


def _features(ctx: TrainingContext, outcome, loaded: LoadedModel, items: list, split: str) -> np.ndarray:
    if outcome.cache is not None and ctx.cfg.fine_tune_depth is None:  # the base is the cached one
        return ctx.features(outcome.cache, items, views=1, what=f"scope ({split})")[:, 0, :]
    paths = ctx.image_paths(items)
    return np.concatenate(
        [
            loaded.features(load_batch(paths[start : start + CHUNK], ctx.cfg.size, resize=ctx.cfg.resize))
            for start in range(0, len(paths), CHUNK)
        ]
        or [loaded.features(np.zeros((0, ctx.cfg.size, ctx.cfg.size, 3), np.float32))]
    )


def learn_scope(ctx: TrainingContext, outcome, loaded: LoadedModel, val_probs: np.ndarray, temperature: float) -> dict:
    """Fit the run's scope, save it in the run folder, and return its summary for metrics.json. A failure
    leaves the run without a scope (its answers' unknown flag is then null) and says why in its log."""
    ctx.reporter({"kind": "stage", "stage": "learning what its images look like"})
    try:
        picked = _sample(ctx.train_items, scopes.REFERENCE_MAX)
        train = _features(ctx, outcome, loaded, [ctx.train_items[i] for i in picked], "train")
        val = _features(ctx, outcome, loaded, ctx.val_items, "validation")
        scope = scopes.fit_scope(
            train,
            ctx.y_train[picked],
            val,
            ctx.num_classes,
            val_confidence=apply_temperature(np.asarray(val_probs, np.float64), temperature).max(axis=1),
            train_counts=np.bincount(ctx.y_train, minlength=ctx.num_classes),
        )
        ctx.run.artifacts.save_scope(scope.to_arrays())
    except (ValueError, np.linalg.LinAlgError, MemoryError) as exc:
        ctx.note(f"scope not learned ({type(exc).__name__}: {exc}): this run answers no 'unknown'")
        return {"error": str(exc)}
    summary = scope.summary()
    ctx.note(
        f"scope: {summary['method_label']}, threshold {summary['threshold']:.4f} keeps {scope.keep:.0%} of "
        f"{summary['validation_images']} validation images"
    )
    return summary
