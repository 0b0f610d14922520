"""Training paths: each a small unit with a declared rule for when it applies.

The first path in ``PATHS`` whose rule holds trains the run's first phase:

| path | applies when |
|---|---|
| ``resumed-fine-tune`` | a resumed run's checkpoint is in the fine-tune phase (the first phase is done) |
| ``sklearn-on-cached-features`` | the head is logistic regression or SVM |
| ``cached-features`` | the whole base is frozen and the feature cache is on: each image's pooled base output is computed once, the head trains on vectors |
| ``plain`` | otherwise: images go through the (partly trainable) base every epoch, as in the Keras guide; a frozen prefix ending at a clean cut runs once when augmentation is off |

``fine_tune`` is the optional second phase: unfreeze down to a second depth, recompile, continue at a
lower learning rate. Every path leaves ``built.model`` holding the trained weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from tl_core.models import freeze
from tl_core.models.features import FeatureCache
from tl_core.models.head_fit import HeadFit, fit_head
from tl_core.models.heads import head_kind
from tl_core.models.modeling import Built, compile_classifier, probabilities_by_class, suffix_model
from tl_core.training.callbacks import KerasProgress, PhaseProgress, with_early_stopping
from tl_core.training.context import TrainingContext
from tl_core.training.timeline import Phase


@dataclass
class Outcome:
    cancelled: bool = False
    # validation probabilities when the path computed them exactly as the saved model would (heads on
    # cached features), so evaluation needs no second pass through the base
    val_probs: Optional[np.ndarray] = None
    cache: Optional[FeatureCache] = None
    sklearn_head: object = None
    # the head's probabilities on the training images as they are (no augmentation, no dropout): how well the
    # frozen features separate the training set (the autopilot reads it)
    train_probs: Optional[np.ndarray] = None


@dataclass
class Prepared:
    """A fine-tune phase's trainable part made before the phase (the autopilot measured its steps there): built,
    compiled with the phase's loss and optimizer, its train and test steps traced, its weights and optimizer as
    before any step. The phase trains it as it is, at its own learning rate."""

    model: object  # the part above the cut, or the whole model where there is no clean cut
    prefix: object = None  # the frozen prefix (None: no clean cut, the model trains on pixels)
    forward: object = None  # the engine that runs the prefix
    known: Optional[tuple] = None  # (training rows, the prefix's outputs for them), computed already


class TrainingPath:
    name = ""

    @staticmethod
    def applies(ctx: TrainingContext, built: Built) -> bool:
        raise NotImplementedError

    def fit(self, ctx: TrainingContext, built: Built) -> Outcome:
        raise NotImplementedError

    def head_phase(self, ctx: TrainingContext) -> Optional[Phase]:
        """What this path's own phase will do, for the run's time estimate (None: no phase of its own)."""
        return Phase("train", ctx.cfg.epochs, _steps(len(ctx.train_items), ctx.cfg.batch_size))


def _steps(images: int, batch_size: int) -> int:
    return max(1, math.ceil(images / batch_size))


def fine_tune_phase(ctx: TrainingContext) -> Phase:
    return Phase("fine-tune", ctx.cfg.fine_tune_epochs, _steps(len(ctx.train_items), ctx.cfg.batch_size))


def phases(path: TrainingPath, ctx: TrainingContext) -> list[Phase]:
    """The run's phases in order: the path's own, then the fine-tune phase if the config asks for one."""
    planned = [phase for phase in [path.head_phase(ctx)] if phase is not None]
    if ctx.cfg.fine_tunes:
        planned.append(fine_tune_phase(ctx))
    return planned


class ResumedFineTune(TrainingPath):
    name = "resumed-fine-tune"

    @staticmethod
    def applies(ctx, built):
        return ctx.resumes("fine-tune")

    def fit(self, ctx, built):
        return Outcome()  # the fine-tune phase restores the checkpoint and goes on

    def head_phase(self, ctx):
        return None


class SklearnHead(TrainingPath):
    name = "sklearn-on-cached-features"

    @staticmethod
    def applies(ctx, built):
        return not head_kind(ctx.cfg.head).in_model

    def head_phase(self, ctx):
        return Phase(ctx.cfg.head, 1, 1, cheap=True)

    def fit(self, ctx, built):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        cfg, views = ctx.cfg, ctx.train_views
        cache = ctx.feature_cache(built.extractor)
        x_train, x_val = ctx.feature_splits(cache)
        start = time.time()
        pipeline = make_pipeline(StandardScaler(), ESTIMATORS[cfg.head](ctx))
        pipeline.fit(x_train.reshape(-1, x_train.shape[-1]), np.repeat(ctx.y_train, views))
        val_probs = probabilities_by_class(pipeline, x_val, ctx.num_classes)
        row = {
            "epoch": 1,
            "phase": cfg.head,
            "seconds": round(time.time() - start, 3),
            "accuracy": float(pipeline.score(x_train[:, 0], ctx.y_train)),
            "val_accuracy": float((val_probs.argmax(axis=1) == ctx.y_val).mean()),
        }
        ctx.run.append_history(row)
        ctx.reporter({"kind": "epoch", "total_epochs": 1, **row})
        return Outcome(val_probs=val_probs, cache=cache, sklearn_head=pipeline)


def _logistic_regression(ctx: TrainingContext):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=ctx.cfg.classifier_c,
        max_iter=5000,
        random_state=ctx.cfg.seed,
        class_weight="balanced" if ctx.class_weight else None,
    )


def _platt_svm(ctx: TrainingContext):
    """Platt-calibrated probabilities, as SVC(probability=True) gave (deprecated in scikit-learn 1.9)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    folds = max(2, min(5, int(np.bincount(ctx.y_train).min())))
    svc = SVC(
        C=ctx.cfg.classifier_c,
        kernel="rbf",
        random_state=ctx.cfg.seed,
        class_weight="balanced" if ctx.class_weight else None,
    )
    return CalibratedClassifierCV(svc, cv=folds, ensemble=False)


# each scikit-learn head kind's estimator (its step in the saved pipeline is HeadKind.sklearn_estimator)
ESTIMATORS = {"logreg": _logistic_regression, "svm": _platt_svm}


class CachedFeatures(TrainingPath):
    name = "cached-features"

    @staticmethod
    def applies(ctx, built):
        return built.frozen_layers == len(built.base.layers) and ctx.cfg.use_feature_cache

    def head_phase(self, ctx):
        return Phase("head", ctx.cfg.epochs, _steps(len(ctx.train_items) * ctx.train_views, ctx.cfg.batch_size), True)

    def fit(self, ctx, built):
        cfg, views = ctx.cfg, ctx.train_views
        cache = ctx.feature_cache(built.extractor)
        x_train, x_val = ctx.feature_splits(cache)
        # the whole model's initial head weights, so both paths start alike
        kernel, bias = (np.array(w, np.float32) for w in built.model.get_layer("predictions").get_weights())
        initial_epoch, best = 0, np.inf
        if ctx.resumes("head"):
            kernel, bias = (np.array(w, np.float32) for w in ctx.run.artifacts.load_head_checkpoint())
            initial_epoch, best = ctx.resume_from["epoch"], ctx.resume_from.get("best", np.inf)
        head = HeadFit(kernel, bias)

        def checkpoint(epoch: int, phase: str) -> None:
            ctx.run.artifacts.save_head_checkpoint(head.kernel, head.bias, epoch, phase, progress.best)

        x_flat = x_train.reshape(-1, x_train.shape[-1])
        steps = int(np.ceil(len(x_flat) / cfg.batch_size))
        progress = PhaseProgress(ctx.reporter, "head", cfg.epochs, steps, on_improved=checkpoint)
        progress.best = best
        fit_head(
            head,
            x_flat,
            np.repeat(ctx.y_train, views),
            x_val,
            ctx.y_val,
            optimizer=cfg.optimizer,
            learning_rate=cfg.learning_rate,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            dropout=cfg.dropout,
            label_smoothing=cfg.label_smoothing,
            class_weight=ctx.class_weight,
            seed=cfg.seed,
            patience=cfg.patience if cfg.early_stopping else None,
            initial_epoch=initial_epoch,
            best=best,
            progress=progress,
        )
        built.model.get_layer("predictions").set_weights([head.kernel, head.bias])
        # the head on cached features computes exactly what the whole model would (tests check they agree)
        return Outcome(head.cancelled, head.probabilities(x_val), cache, train_probs=head.probabilities(x_train[:, 0]))


def fit_plain(
    ctx: TrainingContext,
    built: Built,
    phase: str,
    epochs: int,
    initial_epoch: int,
    lr: float,
    frozen: int,
    extra_callbacks: tuple = (),
    convert: bool = True,
    prepared: Optional[Prepared] = None,
) -> KerasProgress:
    """Fit the whole model (or, past a clean cut with augmentation off, the part above a prefix computed once);
    with ``prepared``, that part as it was made, compiled and traced already."""
    cfg, n = ctx.cfg, ctx.num_classes
    augment = cfg.augment and (phase != "fine-tune" or cfg.fine_tune_augment)
    if prepared is not None:
        split = None if prepared.prefix is None else (prepared.prefix, prepared.model)
    else:
        split = _prefix_split(ctx, built, frozen, augment)
    if split is not None:
        prefix, model = split
        forward = None if prepared is None else prepared.forward
        known = None if prepared is None else prepared.known
        x_train = ctx.activations(prefix, "train", convert, forward, known)
        x_val = ctx.activations(prefix, "validation", convert, forward)
        ctx.note(f"{phase}: frozen prefix computed once ({x_train.shape[1:]} per image); training the suffix only")
    else:
        model = built.model
        x_train, x_val = ctx.pixels("train"), ctx.pixels("validation")
    if prepared is None:
        compile_classifier(model, cfg.optimizer, lr, cfg.label_smoothing, n, jit_compile=cfg.xla or False)
    else:  # compiled and traced already: recompiling would trace its steps again
        model.optimizer.learning_rate.assign(lr)
    start, best = initial_epoch, np.inf
    if ctx.resumes(phase):
        ctx.run.artifacts.load_model_checkpoint(built.model)
        start, best = ctx.resume_from["epoch"], ctx.resume_from.get("best", np.inf)

    def checkpoint(epoch: int, phase: str) -> None:
        ctx.run.artifacts.save_model_checkpoint(built.model, epoch, phase, frozen, progress.best)

    steps = int(np.ceil(len(ctx.train_items) / cfg.batch_size))
    progress = KerasProgress(ctx.reporter, phase, initial_epoch + epochs, steps, on_improved=checkpoint)
    progress.best = best
    if start < initial_epoch + epochs:
        model.fit(
            ctx.pipeline(x_train, ctx.y_train, shuffle=True),
            validation_data=ctx.pipeline(x_val, ctx.y_val, shuffle=False),
            epochs=initial_epoch + epochs,
            initial_epoch=start,
            class_weight=ctx.class_weight,
            callbacks=with_early_stopping(cfg, progress, best) + list(extra_callbacks),
            verbose=0,
            shuffle=False,
        )  # tf.data shuffles
    return progress


def _prefix_split(ctx: TrainingContext, built: Built, frozen: int, augment: bool):
    """(prefix, suffix) models when the frozen prefix's output can be computed once, else None."""
    if not ctx.cfg.use_feature_cache:
        return None
    if augment:
        ctx.note(f"{frozen} frozen layers: augmentation is on, so images go through the whole base each epoch")
        return None
    split = suffix_model(built, frozen)
    if split is None:
        ctx.note(
            f"no clean cut after {frozen} base layers (inside a residual block?): training the whole model each epoch"
        )
    return split


class Plain(TrainingPath):
    name = "plain"

    @staticmethod
    def applies(ctx, built):
        return True

    def fit(self, ctx, built):
        progress = fit_plain(ctx, built, "train", ctx.cfg.epochs, 0, ctx.cfg.learning_rate, built.frozen_layers)
        return Outcome(progress.cancelled)


PATHS: list[type[TrainingPath]] = [ResumedFineTune, SklearnHead, CachedFeatures, Plain]


def choose(ctx: TrainingContext, built: Built) -> TrainingPath:
    return next(path for path in PATHS if path.applies(ctx, built))()


def fine_tune(
    ctx: TrainingContext,
    built: Built,
    extra_callbacks: tuple = (),
    convert: bool = True,
    prepared: Optional[Prepared] = None,
) -> bool:
    """Unfreeze the base down to the fine-tune depth and continue at its learning rate; True if cancelled."""
    cfg = ctx.cfg
    done = len([row for row in ctx.run.history() if row.get("phase") != "fine-tune"])
    frozen = freeze.apply(built.base, cfg.fine_tune_depth)
    ctx.note(f"fine-tune: {frozen} of {len(built.base.layers)} base layers frozen, lr={cfg.fine_tune_lr}")
    return fit_plain(
        ctx,
        built,
        "fine-tune",
        cfg.fine_tune_epochs,
        done,
        cfg.fine_tune_lr,
        frozen,
        extra_callbacks,
        convert,
        prepared,
    ).cancelled
