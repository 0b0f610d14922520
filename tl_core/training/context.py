"""What every training path works from: the run, its resolved config, the data, and the inputs it feeds.

``TrainingContext`` loads the dataset's splits once, decodes pixels once per split, reads cached
base features, computes frozen-prefix activations, builds tf.data pipelines, and knows where a
resumed run picks up. Training paths (``paths.py``) take what they need from it.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Optional

import keras
import numpy as np

from tl_core.data import datasets as datasets_mod
from tl_core.data.images import load_batch
from tl_core.errors import Cancelled, TLError
from tl_core.models import engine as engines
from tl_core.models.features import FeatureCache
from tl_core.models.head_fit import epoch_order
from tl_core.models.heads import head_kind
from tl_core.runs.store import Run
from tl_core.training.callbacks import ProgressFn, Reporter

AUTO_VIEWS = 2  # cached augmented views chosen for data that gains from them
AUGMENT_BELOW_PER_CLASS = 40  # fewer training images than this in a class: augment


class TrainingContext:
    def __init__(self, run: Run, progress: ProgressFn = None):
        self.run = run
        self.reporter = Reporter(run, progress)
        self.cfg = run.config.resolved()
        self.notes: list[str] = []
        self._pixel_memo: dict[str, np.ndarray] = {}
        self.resume_from: Optional[dict] = None
        self.engines_used: dict[str, str] = {}  # what ran each frozen part: recorded with the run's metrics
        self._prefetch: Optional[FeaturePrefetch] = None

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.run.log(message)

    def should_stop(self) -> bool:
        return self.reporter.should_stop()

    # ------------------------------------------------------------ data
    def load_data(self) -> None:
        cfg = self.cfg
        self.reporter({"kind": "stage", "stage": "loading dataset"})
        # a name, never a path: a queued run whose dataset was deleted must not import whatever that
        # name means as a folder (callers that take paths resolve them before the run is made)
        self.dataset = datasets_mod.load_dataset(cfg.data, missing="deleted")
        self.class_names = self.dataset.classes
        val_split = self.dataset.validation_split
        self.train_items = self.dataset.split_items("train")
        self.val_items = self.dataset.split_items(val_split)
        if not self.val_items:
            raise TLError(f"Dataset {self.dataset.name!r} has no validation images; re-import it with a split.")
        index = {c: i for i, c in enumerate(self.class_names)}
        self.y_train = np.array([index[it["class"]] for it in self.train_items])
        self.y_val = np.array([index[it["class"]] for it in self.val_items])
        self.run.artifacts.write_class_names(self.class_names)
        self.class_weight = self._class_weight()
        self.aug_views = self._augmentation_views()
        self.note(
            f"dataset {self.dataset.name!r} v{self.dataset.version} ({self.dataset.fingerprint[:12]}): {len(self.train_items)} train, "
            f"{len(self.val_items)} validation ({val_split}) images, {len(self.class_names)} classes"
        )

    def _class_weight(self):
        """{class index: weight} ('balanced': n / (classes x count)) when the config or the imbalance asks, else None."""
        from tl_core.data.datasets import IMBALANCE_RATIO

        counts = np.bincount(self.y_train, minlength=len(self.class_names))
        ratio = counts.max() / max(counts.min(), 1)
        wanted = self.cfg.class_weights == "on" or (self.cfg.class_weights == "auto" and ratio >= IMBALANCE_RATIO)
        if not wanted:
            if ratio >= IMBALANCE_RATIO:
                self.note(f"class weights off: classes differ {ratio:.0f}:1, so rare classes may be missed")
            return None
        weights = {i: float(len(self.y_train) / (len(counts) * max(c, 1))) for i, c in enumerate(counts)}
        rare, common = self.class_names[int(counts.argmin())], self.class_names[int(counts.argmax())]
        self.note(
            f"class weights on ({self.cfg.class_weights}): classes differ {ratio:.1f}:1 ({common!r} "
            f"{counts.max()} vs {rare!r} {counts.min()} training images); each class counts as much as the others"
        )
        return weights

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _augmentation_views(self) -> int:
        """Cached augmented views per training image: as configured, or chosen from the data. Upscaled
        images (smaller than the input) and small classes gain from augmentation; large photos at plenty per
        class gain too little for the extra forward passes, so they get none (docs/performance.md)."""
        cfg = self.cfg
        if cfg.aug_views is not None or not cfg.augment:
            return cfg.aug_views or 0
        sizes = self.dataset.manifest.get("image_size", {})
        short = min(sizes.get("width", {}).get("median", cfg.size), sizes.get("height", {}).get("median", cfg.size))
        smallest = int(np.bincount(self.y_train, minlength=len(self.class_names)).min())
        upscaled, few = short < cfg.size, smallest < AUGMENT_BELOW_PER_CLASS
        views = AUTO_VIEWS if (upscaled or few) else 0
        why = [
            f"images {short} px on the short side vs a {cfg.size} px input" + (" (upscaled)" if upscaled else ""),
            f"{smallest} training images in the smallest class" + (" (few)" if few else ""),
        ]
        self.note(f"augmentation: {views} cached view(s) per training image, chosen from the data: {'; '.join(why)}")
        return views

    @property
    def train_views(self) -> int:
        return 1 + (self.aug_views if self.cfg.augment else 0)

    def image_paths(self, items):
        return [self.dataset.root / it["path"] for it in items]

    def pixels(self, split: str) -> np.ndarray:
        """uint8 pixels of the 'train' or 'validation' split, decoded once per run."""
        if split not in self._pixel_memo:
            items = self.train_items if split == "train" else self.val_items
            self.reporter({"kind": "stage", "stage": f"decoding {len(items)} images"})
            self._pixel_memo[split] = load_batch(self.image_paths(items), self.cfg.size, resize=self.cfg.resize)
        return self._pixel_memo[split]

    def first_pixels(self, split: str, count: int) -> np.ndarray:
        """The first ``count`` images of a split, decoded once: from the decoded split when this run holds it."""
        if split in self._pixel_memo:
            return self._pixel_memo[split][:count]
        key = f"{split}[:{count}]"
        if key not in self._pixel_memo:
            items = (self.train_items if split == "train" else self.val_items)[:count]
            self._pixel_memo[key] = load_batch(self.image_paths(items), self.cfg.size, resize=self.cfg.resize)
        return self._pixel_memo[key]

    def features(self, cache: FeatureCache, items, views: int, what: str, should_stop=None) -> np.ndarray:
        def report(done, total):
            self.reporter({"kind": "features", "what": what, "done": done, "total": total})

        out = cache.features(
            self.image_paths(items),
            [it["sha256"] for it in items],
            views=views,
            progress=report,
            should_stop=should_stop or self.should_stop,
        )
        if cache.computed:
            self.engines_used["features"] = cache.engine.name
        return out

    # ------------------------------------------------------------ the feature pass (heads on cached features)
    def feature_cache(self, extractor) -> FeatureCache:
        """The run's feature cache: the one the prefetch already fills, or a new one."""
        if self._prefetch is not None:
            self._prefetch.cache.extractor = extractor
            return self._prefetch.cache
        return FeatureCache(self.cfg, extractor, log=self.note)

    def feature_splits(self, cache: FeatureCache) -> tuple[np.ndarray, np.ndarray]:
        """(train (N, views, D), validation (M, D)) pooled features of the run's images: the prefetch's, when
        ``cache`` is the one it fills."""
        if self._prefetch is not None and self._prefetch.cache is cache:
            return self._prefetch.result()
        return self.compute_feature_splits(cache)

    def compute_feature_splits(self, cache: FeatureCache, should_stop=None) -> tuple[np.ndarray, np.ndarray]:
        views = self.train_views
        if views == 1:  # one pass over both splits: no second ramp-up
            both = self.features(cache, self.train_items + self.val_items, 1, "train + validation", should_stop)
            return both[: len(self.train_items)], both[len(self.train_items) :, 0]
        return (
            self.features(cache, self.train_items, views, "train", should_stop),
            self.features(cache, self.val_items, 1, "validation", should_stop)[:, 0],
        )

    def start_feature_prefetch(self) -> bool:
        """Start the feature pass in a thread, before the Keras model is built, when the run certainly trains
        on cached features of the untouched base and the base's conversion is cached (the pass then needs no
        Keras model). Building the model is mostly single-threaded Python that the pass's decode and LiteRT
        threads run beside. True if started."""
        cfg = self.cfg
        on_features = not head_kind(cfg.head).in_model or (cfg.use_feature_cache and str(cfg.freeze_depth) == "all")
        if not on_features or self.run.status().get("resume"):
            return False
        cache = FeatureCache(cfg, None, log=self.note)
        if not cache.engine_ready():
            return False
        self._prefetch = FeaturePrefetch(self, cache)
        self.note("feature pass started beside the model build (the base's conversion is cached)")
        return True

    def stop_feature_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch.abandon()

    def activations(self, prefix, split: str, convert: bool = True, forward=None, known=None) -> np.ndarray:
        """The frozen prefix's output for every image: in memory, or in a disk memmap when too large. Without
        ``convert`` TensorFlow runs the prefix (converting it for a faster engine does not pay on few images).
        ``forward``: the prefix's engine, already made; ``known``: (rows, their outputs) computed already, not
        computed again (the autopilot's measurement)."""
        pixels = self.pixels(split)
        shape = (len(pixels),) + tuple(prefix.output_shape[1:])
        nbytes = int(np.prod(shape)) * 4
        budget = float(os.environ.get("TL_ACTIVATION_BUDGET_MB", "2048")) * 1024**2
        if nbytes > budget:
            path = self.run.artifacts.scratch_path(f"activations-{split}.f32")
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            self.note(f"{split} activations ({nbytes / 1024**2:.0f} MB) stream from disk: {path.name}")
        else:
            out = np.empty(shape, dtype=np.float32)
        if forward is None:
            forward = engines.engine_for(prefix, log=self.note) if convert else engines.TensorFlowEngine(prefix)
        self.engines_used[f"{split} activations"] = forward.name
        todo = np.arange(len(pixels))
        if known is not None:
            rows, values = known
            out[rows] = np.asarray(values, dtype=np.float32).reshape((-1,) + shape[1:])
            todo = np.setdiff1d(todo, rows)
        for start in range(0, len(todo), 64):
            if self.should_stop():
                raise Cancelled()
            chunk = todo[start : start + 64]
            out[chunk] = forward(pixels[chunk]).reshape((-1,) + shape[1:])
            self.reporter(
                {
                    "kind": "features",
                    "what": f"{split} activations",
                    "done": len(pixels) - len(todo) + min(start + 64, len(todo)),
                    "total": len(pixels),
                }
            )
        return out

    # ------------------------------------------------------------ pipelines
    def targets(self, y: np.ndarray) -> np.ndarray:
        """Integer labels, or one-hot rows when label smoothing needs them."""
        return keras.utils.to_categorical(y, self.num_classes) if self.cfg.label_smoothing else y

    def _shuffled_rows(self, count: int):
        """Row numbers in each epoch's ``head_fit.epoch_order``: one NumPy call per epoch (Keras iterates a
        pipeline anew each epoch), so the plain path draws batches as the head on cached features does."""
        import tensorflow as tf

        epochs = itertools.count()

        def order(_):
            return epoch_order(count, self.cfg.seed, next(epochs))

        rows = tf.data.Dataset.from_tensors(0).map(lambda dummy: tf.numpy_function(order, [dummy], tf.int64))
        return rows.unbatch().apply(tf.data.experimental.assert_cardinality(count))

    def pipeline(self, x: np.ndarray, y: np.ndarray, shuffle: bool, rows=None, batch_size: Optional[int] = None):
        """Batches of x (uint8 pixels, float activations or features; in memory or memory-mapped) as float32,
        shuffled per epoch and prefetched.

        The row numbers are shuffled, not the images, and each batch is gathered from ``x`` when it is
        needed: the data is never copied whole into TensorFlow (``from_tensor_slices`` plus a full
        shuffle buffer held it twice more). ``rows``: these row numbers in this order instead (the autopilot's
        measuring steps), in batches of ``batch_size``; the batches are alike whatever the rows."""
        import tensorflow as tf

        y = self.targets(y)
        if rows is not None:
            index = tf.data.Dataset.from_tensor_slices(np.asarray(rows, dtype=np.int64))
        else:
            index = self._shuffled_rows(len(x)) if shuffle else tf.data.Dataset.range(len(x))

        def gather(batch_index: np.ndarray):
            return np.asarray(x[batch_index], dtype=np.float32), y[batch_index]

        def load(batch_index):
            xb, yb = tf.numpy_function(gather, [batch_index], (tf.float32, tf.as_dtype(y.dtype)))
            xb.set_shape((None,) + tuple(x.shape[1:]))
            yb.set_shape((None,) + tuple(y.shape[1:]))
            return xb, yb

        return index.batch(batch_size or self.cfg.batch_size).map(load).prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------ resume
    def find_resume_point(self) -> Optional[dict]:
        """Where a resumed run picks up: its best checkpoint; history after it is dropped."""
        if not self.run.status().get("resume"):
            return None
        point = self.run.artifacts.checkpoint()
        if not point:
            self.note("resume requested but no checkpoint was saved: training from the start")
            self.run.reset_history([])
            return None
        kept = [
            row for row in self.run.history() if row.get("phase") != point["phase"] or row["epoch"] <= point["epoch"]
        ]
        if point["phase"] == "head":
            kept = [row for row in kept if row.get("phase") == "head"]
        self.run.reset_history(kept)
        self.note(f"resuming from the checkpoint after epoch {point['epoch']} ({point['phase']} phase)")
        self.resume_from = point
        return point

    def resumes(self, phase: str) -> bool:
        return bool(self.resume_from and self.resume_from["phase"] == phase)


class FeaturePrefetch:
    """The run's feature pass in a thread (``TrainingContext.start_feature_prefetch``). Its error, a
    cancellation included, is raised where the result is taken; abandoning it stops it at the next batch."""

    def __init__(self, ctx: TrainingContext, cache: FeatureCache):
        self.cache = cache
        self._abandoned = False
        self._result: Optional[tuple] = None
        self._error: Optional[BaseException] = None

        def work():
            try:
                self._result = ctx.compute_feature_splits(cache, lambda: self._abandoned or ctx.should_stop())
            except BaseException as exc:  # handed to the thread that takes the result
                self._error = exc

        self._thread = threading.Thread(target=work, name="feature-prefetch", daemon=True)
        self._thread.start()

    def result(self) -> tuple:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def abandon(self) -> None:
        self._abandoned = True
        self._thread.join()
