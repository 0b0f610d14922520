"""Running one queued run: build the model, train it along the path that applies, then save and evaluate.

``execute`` is what the worker's child process calls; ``train`` makes a run folder and executes it
here (the CLI's ``train``). The run's status ends finished, failed or cancelled.
"""

from __future__ import annotations

import errno
import os
import time
import traceback
from pathlib import Path
from typing import Optional

import keras

from tl_core import device
from tl_core.clock import now_iso
from tl_core.data import datasets
from tl_core.errors import Cancelled, TLError
from tl_core.models import engine as engines
from tl_core.models import freeze
from tl_core.models.config import TrainConfig
from tl_core.models.heads import head_kind
from tl_core.models.modeling import build_classifier, parameter_counts
from tl_core.runs.evaluate import evaluate
from tl_core.runs.loaded_model import LoadedModel
from tl_core.runs.store import Run, new_run
from tl_core.tracking.mlflow_runs import LiveLog
from tl_core.training import autopilot, paths
from tl_core.training.calibration import calibrate
from tl_core.training.callbacks import ProgressFn
from tl_core.training.context import TrainingContext
from tl_core.training.scope_fit import learn_scope
from tl_core.workspace import datasets_dir, home


def _train(ctx: TrainingContext) -> dict:
    cfg = ctx.cfg
    started = time.time()
    device.share_gpu_memory()  # several training processes (TL_MAX_JOBS) and the app share a GPU
    ctx.load_data()
    policy = device.precision_policy(cfg.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    strategy = device.strategy(cfg.distribute)
    prefetching = ctx.start_feature_prefetch()
    reference = None  # TensorFlow's features of the engine check's images, while the prefetch runs
    try:
        with strategy.scope():
            ctx.reporter({"kind": "stage", "stage": "building model"})
            built = build_classifier(cfg, ctx.num_classes)
            if prefetching and not cfg.fine_tunes:  # the base stays as built: check it now
                reference = engines.reference_outputs(built.extractor, ctx.first_pixels("validation", AGREEMENT_IMAGES))
            num_layers = len(built.base.layers)
            ctx.note(
                f"base {cfg.base} alpha={cfg.alpha} size={cfg.size}: {num_layers} layers, "
                f"{built.frozen_layers} frozen; precision policy {policy}; "
                f"{strategy.num_replicas_in_sync} replica(s) in sync"
            )
            ctx.find_resume_point()
            path = paths.choose(ctx, built)
            ctx.reporter.plan(paths.phases(path, ctx), cfg.batch_size)
            outcome = path.fit(ctx, built)
            if outcome.cache is not None:
                ctx.note(
                    f"feature cache {outcome.cache.key}: {outcome.cache.computed} forward passes, "
                    f"{outcome.cache.reused} reused"
                )
            ctx.note(f"training path: {path.name}")
            params, params_ft = parameter_counts(built.model), None
            cancelled, pilot = outcome.cancelled, None
            if cfg.fine_tunes and not cancelled:
                cancelled = paths.fine_tune(ctx, built)
                params_ft = parameter_counts(built.model)
            elif autopilot.applies(ctx, outcome):  # the budget's fine-tune phase, if it pays: its own module
                pilot = autopilot.run(ctx, built, outcome)
                cancelled, cfg = pilot.cancelled, ctx.cfg
                params_ft = parameter_counts(built.model) if pilot.fine_tuned else None
                reference = None if pilot.fine_tuned else reference
            if cancelled:
                raise Cancelled()
    finally:
        ctx.stop_feature_prefetch()
        keras.mixed_precision.set_global_policy("float32")
        ctx.run.artifacts.clear_scratch()

    ctx.reporter({"kind": "stage", "stage": "evaluating"})
    artifacts = ctx.run.artifacts
    # a base that training left untouched runs on the feature cache's conversion, also when loaded later
    engine_key = outcome.cache.engine_key if outcome.cache is not None and not cfg.fine_tunes else None
    kind = head_kind(cfg.head)
    saved = built.model if kind.in_model else built.extractor
    # heads on cached features already computed what the saved model gives; otherwise ask the model
    val_probs = outcome.val_probs if not cfg.fine_tunes else None
    loaded = LoadedModel(saved, ctx.class_names, cfg.size, cfg.resize, cfg.head, outcome.sklearn_head, engine_key)
    if val_probs is None:
        val_probs = loaded.probabilities(ctx.pixels("validation"))
    engine_check = _engine_agreement(ctx, loaded, reference)
    evaluation = evaluate(artifacts, ctx.class_names, ctx.y_val, val_probs, [it["path"] for it in ctx.val_items])
    calibration = calibrate(val_probs, ctx.y_val)
    # one model, one answer: the saved model gives the calibrated probabilities wherever it runs
    loaded.calibrate(calibration["temperature"])
    artifacts.save_model(
        saved,
        cfg.head,
        cfg.size,
        cfg.resize,
        ctx.class_names,
        sklearn_head=outcome.sklearn_head,
        engine_key=engine_key,
        temperature=calibration["temperature"],
        temperature_folded=kind.folds_temperature,
    )
    # the training's own feature pass, counted before the scope reads the cached features once more
    feature_counts = (outcome.cache.computed, outcome.cache.reused) if outcome.cache is not None else None
    scope = learn_scope(ctx, outcome, loaded, val_probs, calibration["temperature"])  # "unknown" answers
    metrics = {
        **evaluation,
        **calibration,
        "duration_s": round(time.time() - started, 2),
        "training_path": path.name,
        "params": params,
        "params_fine_tune": params_ft,
        "first_trainable_layer": freeze.first_trainable_layer(built.base),
        "frozen_layers": built.frozen_layers,
        "num_base_layers": num_layers,
        "dataset": ctx.dataset.name,
        "dataset_version": ctx.dataset.version,
        "dataset_fingerprint": ctx.dataset.fingerprint,
        "device": ", ".join(device.gpu_names()) or "CPU",
        "precision": policy,
        "replicas": strategy.num_replicas_in_sync,
        "notes": ctx.notes,
        "model_bytes": artifacts.model_bytes(),
        "engine": engine_check,
        "scope": scope,
        "autopilot": pilot.record if pilot is not None else autopilot.off_record(cfg),
    }
    if feature_counts is not None:  # the tables say when a fast run only reused features an earlier one computed
        computed, reused = feature_counts
        metrics["feature_pass"] = {"computed": computed, "reused": reused}
        metrics["features_cached"] = computed == 0 and reused > 0
    artifacts.write_metrics(metrics)
    return metrics


AGREEMENT_IMAGES = 16


def _engine_agreement(ctx: TrainingContext, loaded: LoadedModel, reference=None) -> dict:
    """The engine that ran this run's frozen parts, checked against TensorFlow on its own validation images
    (``reference``: TensorFlow's features of them, if already computed)."""
    check = loaded.agreement(ctx.first_pixels("validation", AGREEMENT_IMAGES), reference)
    check["used"] = ctx.engines_used
    ctx.note(
        f"engine {check['engine']}: largest feature difference {check['max_rel_diff']:.1e} of TensorFlow's "
        f"(relative), top-1 agreement {check['top1_agreement']:.0%} on {check['images']} validation images"
    )
    return check


class RunFailed(TLError):
    """A run failed for a reason outside its settings: the disk filled up, or its dataset was deleted while it
    trained. Its message says what happened and what to do; the CLI exits 1 for it (2 is for bad input)."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _explained(exc: BaseException) -> Optional[RunFailed]:
    """A clear RunFailed for an error the user did not cause by their settings, or None for any other."""
    for cause in _causes(exc):
        # h5py and TensorFlow report a full disk in their own exception types, with the OS's words
        if (isinstance(cause, OSError) and cause.errno in _DISK_FULL) or "No space left on device" in str(cause):
            return RunFailed(
                f"The disk is full: this run could not write its files in the workspace {str(home())!r}. Free "
                "disk space, then resume the run or train again; files written before (datasets, other runs, this "
                "run's settings and history so far) are intact."
            )
        if isinstance(cause, FileNotFoundError) and cause.filename:
            try:
                missing = Path(cause.filename).resolve().relative_to(datasets_dir().resolve())
            except ValueError:
                continue
            return RunFailed(
                f"Dataset {missing.parts[0]!r} was deleted or changed while this run was using it: its file "
                f"{'/'.join(missing.parts[1:])!r} is gone. Import the dataset again, then start a new run."
            )
    return None


def _record_failure(run: Run, message: str, log: str) -> None:
    """The run marked failed, even on a full disk (where the log may not take another line)."""
    run.set_status("failed", message=message)
    try:
        run.log(log)
    except OSError:
        pass


def execute(run: Run, progress: ProgressFn = None) -> dict:
    """Train a queued run in this process; its status ends finished, failed or cancelled. A failure from outside
    the run's settings (full disk, dataset deleted meanwhile) is raised as ``RunFailed``."""
    run.set_status(
        "running", pid=os.getpid(), pid_start=device.process_start_time(os.getpid()), started=now_iso(), message=None
    )
    run.log(f"started in process {os.getpid()}")
    mlflow_log = LiveLog.start(run)  # off unless a tracking URI is configured; never holds training up
    try:
        metrics = _train(TrainingContext(run, mlflow_log.progress(progress)))
    except Cancelled:
        run.set_status("cancelled", message="Cancelled by the user; history so far is kept.")
        run.log("cancelled")
        mlflow_log.end("cancelled")
        return {}
    except TLError as exc:
        _record_failure(run, str(exc), f"failed: {exc}")
        mlflow_log.end("failed")
        raise
    except Exception as exc:
        explained = _explained(exc)
        if explained is None:
            _record_failure(run, f"{type(exc).__name__}: {exc}", "failed:\n" + traceback.format_exc())
            mlflow_log.end("failed")
            raise
        _record_failure(run, str(explained), f"failed: {explained}\n" + traceback.format_exc())
        mlflow_log.end("failed")
        raise explained from None
    finally:
        # Keras' global state goes; its full gc.collect() (costly with TensorFlow loaded) is left to
        # Python's own collector: the worker runs every job in a fresh process anyway
        keras.backend.clear_session(free_memory=False)
    run.set_status("finished", message=None, val_accuracy=metrics["val_accuracy"])
    run.log(f"finished: val_accuracy={metrics['val_accuracy']:.4f}")
    mlflow_log.end("finished")  # the run is finished already: its model and files go to MLflow now
    return metrics


def train(cfg: TrainConfig, run_dir: Optional[Path] = None, progress: ProgressFn = None) -> tuple[Run, dict]:
    """Create a run folder for ``cfg`` and train it here; returns the run and its metrics."""
    cfg = cfg.resolved()
    freeze.check_config(cfg)
    cfg.data = datasets.resolve_dataset(cfg.data).ref  # a folder or zip is imported first
    try:
        run = new_run(cfg, run_dir)
    except OSError as exc:
        explained = _explained(exc)
        if explained is None:
            raise
        raise explained from None
    return run, execute(run, progress)
