"""Training: run one ``TrainConfig`` into its run folder.

Two ways to train the Keras head, chosen per run and recorded in its log:
- *cached features*: the whole base is frozen, so each image's pooled base output (and a few
  augmented views of it) is computed once, cached (``features.py``) and the head trains on vectors;
- *plain*: images go through the (partly trainable) base every epoch, as in the Keras guide.
Either way the saved ``model.keras`` is the whole model, raw pixels in. A fine-tune phase unfreezes
the base down to a second depth and continues at a lower learning rate. The ``logreg``/``svm``
heads fit scikit-learn on the cached features instead. Progress goes to a plain callback and to
``progress.json``; a ``cancel`` file in the run folder stops training at the next batch.
"""
from __future__ import annotations

import io
import os
import time
import traceback
from typing import Callable, Optional

import keras
import numpy as np

from . import datasets as datasets_mod
from .config import TrainConfig
from .device import gpu_names
from .evaluate import Interpretation
from .features import FeatureCache
from .images import load_batch
from .modeling import (build_classifier, build_head, compile_classifier, compiled_forward, first_trainable_layer,
                       parameter_counts, set_freeze_depth, suffix_model)
from .runs import Run, now
from .workspace import TLError, atomic_write_bytes, read_json, write_json

ProgressFn = Optional[Callable[[dict], None]]


class Cancelled(Exception):
    pass


class Reporter:
    """Sends progress events to the caller's callback and (throttled) to the run's progress.json."""

    def __init__(self, run: Run, callback: ProgressFn, min_interval: float = 0.5):
        self.run, self.callback, self.min_interval = run, callback, min_interval
        self.last_write = 0.0
        self.started = time.time()

    def __call__(self, event: dict) -> None:
        event = {**event, "elapsed_s": round(time.time() - self.started, 2)}
        if self.callback:
            self.callback(event)
        if event["kind"] != "batch" or time.time() - self.last_write >= self.min_interval:
            self.run.write_progress(event)
            self.last_write = time.time()

    def should_stop(self) -> bool:
        return self.run.cancel_requested()


class KerasProgress(keras.callbacks.Callback):
    """Epoch and batch events for one ``fit`` call, plus cooperative cancellation."""

    def __init__(self, reporter: Reporter, phase: str, total_epochs: int, steps: int, lr_model=None,
                 on_improved: Optional[Callable[[int, str], None]] = None):
        super().__init__()
        self.reporter, self.phase, self.total_epochs, self.steps = reporter, phase, total_epochs, steps
        self.lr_model = lr_model
        self.on_improved = on_improved
        self.best = np.inf
        self.cancelled = False
        self.epoch_start = time.time()

    def _lr(self) -> float:
        model = self.lr_model or self.model
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()
        self.epoch_index = epoch  # absolute: fit passes initial_epoch-based indices

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.reporter({"kind": "batch", "phase": self.phase, "epoch": self.epoch_index + 1,
                       "total_epochs": self.total_epochs, "batch": batch + 1, "batches": self.steps,
                       "loss": float(logs.get("loss", np.nan)), "accuracy": float(logs.get("accuracy", np.nan)),
                       "learning_rate": self._lr()})
        if self.reporter.should_stop():
            self.cancelled = True
            self.model.stop_training = True

    epoch_index = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.cancelled:
            return  # a partial epoch: not a history row
        logs = logs or {}
        row = {"epoch": epoch + 1, "phase": self.phase, "seconds": round(time.time() - self.epoch_start, 3),
               "learning_rate": self._lr(),
               **{k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs}}
        self.reporter.run.append_history(row)
        self.reporter({"kind": "epoch", "total_epochs": self.total_epochs, **row})
        monitored = row.get("val_loss", row.get("loss", np.inf))
        if self.on_improved and monitored < self.best:
            self.best = monitored
            self.on_improved(epoch + 1, self.phase)
        if self.reporter.should_stop():
            self.cancelled = True
            self.model.stop_training = True


def _labels(y: np.ndarray, num_classes: int, smoothing: float):
    return keras.utils.to_categorical(y, num_classes) if smoothing else y


class HeadValidation(keras.callbacks.Callback):
    """val_loss and val_accuracy of a dropout + softmax-dense head, in NumPy, for the callbacks after it."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0):
        super().__init__()
        self.features = np.asarray(features, dtype=np.float64)
        self.labels = np.asarray(labels)
        self.label_smoothing = label_smoothing

    def probabilities(self) -> np.ndarray:
        kernel, bias = self.model.get_layer("predictions").get_weights()
        logits = self.features @ kernel.astype(np.float64) + bias.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        probs = self.probabilities()
        n = probs.shape[1]
        target = np.eye(n)[self.labels] * (1 - self.label_smoothing) + self.label_smoothing / n
        clipped = np.clip(probs, 1e-7, 1 - 1e-7)  # as Keras' crossentropy on probabilities
        logs["val_loss"] = float(-(target * np.log(clipped)).sum(axis=1).mean())
        logs["val_accuracy"] = float((probs.argmax(axis=1) == self.labels).mean())


def _callbacks(cfg: TrainConfig, progress: KerasProgress) -> list:
    callbacks = [progress]
    if cfg.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                                       restore_best_weights=True))
    return callbacks


def _pixel_dataset(x: np.ndarray, y, batch_size: int, shuffle: bool, seed: int):
    """uint8 arrays decoded once per run; batches are cast to float on the fly and prefetched."""
    import tensorflow as tf
    if isinstance(x, np.memmap):  # too large for memory: read shuffled batches from disk
        rng = np.random.default_rng(seed)

        def batches():
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            for start in range(0, len(x), batch_size):
                index = np.sort(order[start:start + batch_size])
                yield np.asarray(x[index], dtype=np.float32), y[index]

        spec = (tf.TensorSpec((None,) + x.shape[1:], tf.float32), tf.TensorSpec((None,) + y.shape[1:], y.dtype))
        return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)
    ds = tf.data.Dataset.from_tensor_slices((x, y))  # pixels (uint8) or prefix activations (float32)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class Trainer:
    def __init__(self, run: Run, progress: ProgressFn = None):
        self.run = run
        self.reporter = Reporter(run, progress)
        self.cfg = run.config.resolved()
        self.notes: list[str] = []
        # Validation probabilities from a head on cached features (set by those paths), which equal the
        # saved model's, so evaluation needs no second pass through the base.
        self.val_probs: Optional[np.ndarray] = None

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.run.log(message)

    # ------------------------------------------------------------ data
    def _load_data(self):
        cfg = self.cfg
        self.reporter({"kind": "stage", "stage": "loading dataset"})
        self.dataset = datasets_mod.resolve_dataset(cfg.data)
        if cfg.data != self.dataset.name:
            cfg.data = self.dataset.name
            self.run.path("config.json").write_text(cfg.to_json() + "\n", encoding="utf-8")
        self.class_names = self.dataset.classes
        val_split = self.dataset.validation_split
        self.train_items = self.dataset.split_items("train")
        self.val_items = self.dataset.split_items(val_split)
        if not self.val_items:
            raise TLError(f"Dataset {self.dataset.name!r} has no validation images; re-import it with a split.")
        index = {c: i for i, c in enumerate(self.class_names)}
        self.y_train = np.array([index[it["class"]] for it in self.train_items])
        self.y_val = np.array([index[it["class"]] for it in self.val_items])
        write_json(self.run.path("class_names.json"), self.class_names)
        self.note(f"dataset {self.dataset.name!r} ({self.dataset.fingerprint[:12]}): {len(self.train_items)} train, "
                  f"{len(self.val_items)} validation ({val_split}) images, {len(self.class_names)} classes")

    def _paths(self, items):
        return [self.dataset.root / it["path"] for it in items]

    def _pixels(self, items) -> np.ndarray:
        if not hasattr(self, "_pixel_memo"):
            self._pixel_memo = {}
        key = id(items)
        if key not in self._pixel_memo:
            self.reporter({"kind": "stage", "stage": f"decoding {len(items)} images"})
            self._pixel_memo[key] = load_batch(self._paths(items), self.cfg.size, resize=self.cfg.resize)
        return self._pixel_memo[key]

    def _features(self, cache: FeatureCache, items, views: int, what: str) -> np.ndarray:
        def report(done, total):
            self.reporter({"kind": "features", "what": what, "done": done, "total": total})
        return cache.features(self._paths(items), [it["sha256"] for it in items], views=views,
                              progress=report, should_stop=self.reporter.should_stop)

    # ------------------------------------------------------------ phases
    def _train_views(self) -> int:
        return 1 + (self.cfg.aug_views if self.cfg.augment else 0)

    def _fit_head_on_features(self, built, cache) -> KerasProgress:
        cfg, n = self.cfg, len(self.class_names)
        views = self._train_views()
        feature_dim = int(built.extractor.output_shape[-1])
        head = build_head(feature_dim, n, cfg.dropout)
        # Same initial weights and the same batches as the plain path would use, so both train alike.
        head.get_layer("predictions").set_weights(built.model.get_layer("predictions").get_weights())
        # A dense layer on vectors: batches take microseconds, so run 16 per graph call (1.3 s -> 0.9 s).
        compile_classifier(head, cfg.optimizer, cfg.learning_rate, cfg.label_smoothing, n, steps_per_execution=16)
        if views == 1:  # one pipeline for both splits: no second ramp-up
            both = self._features(cache, self.train_items + self.val_items, 1, "train + validation")
            x_train, x_val = both[:len(self.train_items)], both[len(self.train_items):, 0]
        else:
            x_train = self._features(cache, self.train_items, views, "train")
            x_val = self._features(cache, self.val_items, 1, "validation")[:, 0]
        x_flat = x_train.reshape(-1, x_train.shape[-1])
        y_flat = np.repeat(self.y_train, views)
        initial_epoch = 0
        if self.resume_from and self.resume_from["phase"] == "head":
            with np.load(self.run.path("checkpoint_head.npz")) as saved:
                head.get_layer("predictions").set_weights([saved["kernel"], saved["bias"]])
            initial_epoch = self.resume_from["epoch"]
        steps = int(np.ceil(len(x_flat) / cfg.batch_size))

        def checkpoint(epoch: int, phase: str) -> None:
            kernel, bias = head.get_layer("predictions").get_weights()
            buffer = io.BytesIO()
            np.savez(buffer, kernel=kernel, bias=bias)
            atomic_write_bytes(self.run.path("checkpoint_head.npz"), buffer.getvalue())
            write_json(self.run.path("checkpoint.json"), {"phase": phase, "epoch": epoch, "kind": "head"})

        progress = KerasProgress(self.reporter, "head", cfg.epochs, steps, on_improved=checkpoint)
        train = _pixel_dataset(x_flat, _labels(y_flat, n, cfg.label_smoothing), cfg.batch_size, True, cfg.seed)
        # validation of a softmax layer is one small matmul: done in NumPy, it spares Keras tracing and
        # running a test step (~0.4 s of a ~6 s run); training steps are Keras' own
        validation = HeadValidation(x_val, self.y_val, cfg.label_smoothing)
        validation.set_model(head)
        if initial_epoch < cfg.epochs:
            head.fit(train, epochs=cfg.epochs, initial_epoch=initial_epoch, shuffle=False,
                     callbacks=[validation] + _callbacks(cfg, progress), verbose=0)
        built.model.get_layer("predictions").set_weights(head.get_layer("predictions").get_weights())
        # The head on cached features computes exactly what the whole model would: reuse it for the
        # validation probabilities instead of a second pass through the base (tests check they agree).
        self.val_probs = validation.probabilities()
        return progress

    def _prefix_split(self, built, frozen: int):
        """(prefix, suffix) models when the frozen prefix's output can be computed once, else None."""
        cfg = self.cfg
        if not cfg.use_feature_cache:
            return None
        if cfg.augment:
            self.note(f"{frozen} frozen layers: augmentation is on, so images go through the whole base each epoch")
            return None
        split = suffix_model(built, frozen)
        if split is None:
            self.note(f"no clean cut after {frozen} base layers (inside a residual block?): "
                      "training the whole model each epoch")
        return split

    def _activations(self, prefix, items, what: str) -> np.ndarray:
        """The frozen prefix's output for every image: in memory, or in a disk memmap when too large."""
        pixels = self._pixels(items)
        shape = (len(items),) + tuple(prefix.output_shape[1:])
        nbytes = int(np.prod(shape)) * 4
        budget = float(os.environ.get("TL_ACTIVATION_BUDGET_MB", "2048")) * 1024**2
        if nbytes > budget:
            path = self.run.path(f"activations-{what}.f32")
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            self.note(f"{what} activations ({nbytes / 1024**2:.0f} MB) stream from disk: {path.name}")
        else:
            out = np.empty(shape, dtype=np.float32)
        forward = compiled_forward(prefix)
        for start in range(0, len(items), 64):
            if self.reporter.should_stop():
                raise Cancelled()
            out[start:start + 64] = forward(pixels[start:start + 64])
            self.reporter({"kind": "features", "what": f"{what} activations", "done": min(start + 64, len(items)),
                           "total": len(items)})
        return out

    def _fit_plain(self, built, phase: str, epochs: int, initial_epoch: int, lr: float, frozen: int) -> KerasProgress:
        cfg, n = self.cfg, len(self.class_names)
        split = self._prefix_split(built, frozen)
        if split is not None:
            prefix, model = split
            x_train, x_val = self._activations(prefix, self.train_items, "train"), \
                self._activations(prefix, self.val_items, "validation")
            self.note(f"{phase}: frozen prefix computed once ({x_train.shape[1:]} per image); "
                      f"training the suffix only")
        else:
            model = built.model
            x_train, x_val = self._pixels(self.train_items), self._pixels(self.val_items)
        compile_classifier(model, cfg.optimizer, lr, cfg.label_smoothing, n, jit_compile=cfg.xla or False)
        train = _pixel_dataset(x_train, _labels(self.y_train, n, cfg.label_smoothing), cfg.batch_size, True, cfg.seed)
        val = _pixel_dataset(x_val, _labels(self.y_val, n, cfg.label_smoothing), cfg.batch_size, False, cfg.seed)
        steps = int(np.ceil(len(self.train_items) / cfg.batch_size))

        def checkpoint(epoch: int, phase: str) -> None:
            tmp = self.run.path(".checkpoint.tmp.weights.h5")
            built.model.save_weights(tmp)
            os.replace(tmp, self.run.path("checkpoint.weights.h5"))
            write_json(self.run.path("checkpoint.json"), {"phase": phase, "epoch": epoch, "kind": "model",
                                                          "frozen": frozen})

        start = initial_epoch
        if self.resume_from and self.resume_from["phase"] == phase:
            built.model.load_weights(self.run.path("checkpoint.weights.h5"))
            start = self.resume_from["epoch"]
        progress = KerasProgress(self.reporter, phase, initial_epoch + epochs, steps, on_improved=checkpoint)
        if start < initial_epoch + epochs:
            model.fit(train, validation_data=val, epochs=initial_epoch + epochs, initial_epoch=start,
                      callbacks=_callbacks(cfg, progress), verbose=0, shuffle=False)  # tf.data shuffles
        return progress

    def _fit_sklearn(self, built, cache) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC
        import joblib
        cfg = self.cfg
        views = self._train_views()
        x_train = self._features(cache, self.train_items, views, "train")
        x_val = self._features(cache, self.val_items, 1, "validation")[:, 0]
        start = time.time()
        if cfg.head == "logreg":
            classifier = LogisticRegression(C=cfg.classifier_c, max_iter=5000, random_state=cfg.seed)
        else:
            from sklearn.calibration import CalibratedClassifierCV
            # Platt-calibrated probabilities, as SVC(probability=True) gave (deprecated in scikit-learn 1.9).
            folds = max(2, min(5, int(np.bincount(self.y_train).min())))
            classifier = CalibratedClassifierCV(SVC(C=cfg.classifier_c, kernel="rbf", random_state=cfg.seed),
                                                cv=folds, ensemble=False)
        pipeline = make_pipeline(StandardScaler(), classifier)
        pipeline.fit(x_train.reshape(-1, x_train.shape[-1]), np.repeat(self.y_train, views))
        joblib.dump(pipeline, self.run.path("head.joblib"))
        self.val_probs = pipeline.predict_proba(x_val).astype(np.float64)
        row = {"epoch": 1, "phase": cfg.head, "seconds": round(time.time() - start, 3),
               "accuracy": float(pipeline.score(x_train[:, 0], self.y_train)),
               "val_accuracy": float(pipeline.score(x_val, self.y_val))}
        self.run.append_history(row)
        self.reporter({"kind": "epoch", "total_epochs": 1, **row})

    def _resume_point(self) -> Optional[dict]:
        """Where a resumed run picks up: its best checkpoint; history after it is dropped."""
        if not self.run.status().get("resume"):
            return None
        point = read_json(self.run.path("checkpoint.json"))
        if not point:
            self.note("resume requested but no checkpoint was saved: training from the start")
            self.run.reset_history([])
            return None
        kept = [row for row in self.run.history()
                if row.get("phase") != point["phase"] or row["epoch"] <= point["epoch"]]
        if point["phase"] == "head":
            kept = [row for row in kept if row.get("phase") == "head"]
        self.run.reset_history(kept)
        self.note(f"resuming from the checkpoint after epoch {point['epoch']} ({point['phase']} phase)")
        return point

    # ------------------------------------------------------------ main
    def train(self) -> dict:
        cfg = self.cfg
        started = time.time()
        self._load_data()
        n = len(self.class_names)
        policy = _precision_policy(cfg)
        keras.mixed_precision.set_global_policy(policy)
        strategy = _strategy(cfg)
        try:
            with strategy.scope():
                return self._train_in_scope(started, n, policy, strategy)
        finally:
            keras.mixed_precision.set_global_policy("float32")

    def _train_in_scope(self, started, n, policy, strategy) -> dict:
        cfg = self.cfg
        self.reporter({"kind": "stage", "stage": "building model"})
        built = build_classifier(cfg, n)
        num_layers = len(built.base.layers)
        self.note(f"base {cfg.base} alpha={cfg.alpha} size={cfg.size}: {num_layers} layers, "
                  f"{built.frozen_layers} frozen; precision policy {policy}; "
                  f"{strategy.num_replicas_in_sync} replica(s) in sync")
        cancelled = False
        fully_frozen = built.frozen_layers == num_layers
        self.resume_from = self._resume_point()
        resume_fine_tune = bool(self.resume_from and self.resume_from["phase"] == "fine-tune")
        if resume_fine_tune:
            path = "resumed-fine-tune"
            cache = None
        elif cfg.head != "keras":
            cache = FeatureCache(cfg, built.extractor)
            self._fit_sklearn(built, cache)
            path = "sklearn-on-cached-features"
        elif fully_frozen and cfg.use_feature_cache:
            cache = FeatureCache(cfg, built.extractor)
            cancelled = self._fit_head_on_features(built, cache).cancelled
            path = "cached-features"
        else:
            cache = None
            cancelled = self._fit_plain(built, "train", cfg.epochs, 0, cfg.learning_rate,
                                        built.frozen_layers).cancelled
            path = "plain"
        if cache is not None:
            self.note(f"feature cache {cache.key}: {cache.computed} forward passes, {cache.reused} reused")
        self.note(f"training path: {path}")
        params = parameter_counts(built.model)
        first_trainable = first_trainable_layer(built.base)
        if cfg.fine_tune_depth is not None and not cancelled:
            done = len([row for row in self.run.history() if row.get("phase") != "fine-tune"])
            frozen = set_freeze_depth(built.base, cfg.fine_tune_depth)
            self.note(f"fine-tune: {frozen} of {num_layers} base layers frozen, lr={cfg.fine_tune_lr}")
            params_ft = parameter_counts(built.model)
            first_trainable = first_trainable_layer(built.base)
            cancelled = self._fit_plain(built, "fine-tune", cfg.fine_tune_epochs, done, cfg.fine_tune_lr,
                                        frozen).cancelled
        else:
            params_ft = None
        if cancelled:
            raise Cancelled()
        self.reporter({"kind": "stage", "stage": "evaluating"})
        model_to_save = built.extractor if cfg.head != "keras" else built.model
        save_model_atomically(model_to_save, self.run.model_path)
        write_json(self.run.path("model_info.json"), {
            "head": cfg.head, "input_size": cfg.size, "resize": cfg.resize, "class_names": self.class_names,
            "output": "probabilities" if cfg.head == "keras" else "features"})
        if self.val_probs is not None and cfg.fine_tune_depth is None:
            probs = self.val_probs
        else:
            from .predict import Predictor
            probs = Predictor.from_run(self.run).probabilities(self._pixels(self.val_items))
        interp = Interpretation(self.class_names, self.y_val, probs,
                                [it["path"] for it in self.val_items])
        interp.save(self.run.path("predictions.csv"))
        metrics = {**interp.summary(), "duration_s": round(time.time() - started, 2), "training_path": path,
                   "params": params, "params_fine_tune": params_ft, "first_trainable_layer": first_trainable,
                   "frozen_layers": built.frozen_layers, "num_base_layers": num_layers,
                   "dataset": self.dataset.name, "dataset_fingerprint": self.dataset.fingerprint,
                   "device": ", ".join(gpu_names()) or "CPU", "precision": policy,
                   "replicas": strategy.num_replicas_in_sync, "notes": self.notes}
        write_json(self.run.path("metrics.json"), metrics)
        return metrics


def save_model_atomically(model, path) -> None:
    """Write under a temporary name, then rename: a crash never leaves a half-written model.keras."""
    tmp = path.with_name(f".{path.stem}-{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _strategy(cfg: TrainConfig):
    """MirroredStrategy over all GPUs (or the devices named), else the default single-device one."""
    import tensorflow as tf
    gpus = tf.config.list_logical_devices("GPU")
    if cfg.distribute == "mirrored" or (cfg.distribute == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def _precision_policy(cfg: TrainConfig) -> str:
    if cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and gpu_names()):
        return "mixed_float16"
    return "float32"


def execute(run: Run, progress: ProgressFn = None) -> dict:
    """Train a queued run in this process; its status ends finished, failed or cancelled."""
    run.set_status("running", pid=os.getpid(), started=now(), message=None)
    run.log(f"started in process {os.getpid()}")
    try:
        trainer = Trainer(run, progress)
        metrics = trainer.train()
    except (Cancelled, InterruptedError):
        run.set_status("cancelled", message="Cancelled by the user; history so far is kept.")
        run.log("cancelled")
        return {}
    except TLError as exc:
        run.set_status("failed", message=str(exc))
        run.log(f"failed: {exc}")
        raise
    except Exception as exc:
        run.set_status("failed", message=f"{type(exc).__name__}: {exc}")
        run.log("failed:\n" + traceback.format_exc())
        raise
    finally:
        # Keras' global state goes; its full gc.collect() (~0.3 s with TensorFlow loaded) is left to
        # Python's own collector: the worker runs every job in a fresh process anyway
        keras.backend.clear_session(free_memory=False)
    run.set_status("finished", message=None, val_accuracy=metrics["val_accuracy"])
    run.log(f"finished: val_accuracy={metrics['val_accuracy']:.4f}")
    return metrics


def train(cfg: TrainConfig, run_dir=None, progress: ProgressFn = None) -> tuple[Run, dict]:
    """Create a run folder for ``cfg`` and train it here; returns the run and its metrics."""
    from .runs import new_run
    run = new_run(cfg.resolved(), run_dir)
    return run, execute(run, progress)
