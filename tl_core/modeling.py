"""Model building: raw pixels in, preprocessing inside, a (partly) frozen base, a new head.

The model takes float pixels in 0..255, so training and prediction cannot disagree on
preprocessing. The base is called with ``training=False`` and its BatchNorm layers stay frozen at
every freeze depth, so they keep ImageNet statistics (inference mode) also while fine-tuning.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from . import architectures, freeze
from .config import OPTIMIZERS, TrainConfig
from .workspace import TLError, atomic_write_bytes, cache_dir, read_json, write_json

CAFFE_MEAN, TORCH_MEAN, TORCH_STD = architectures.CAFFE_MEAN, architectures.TORCH_MEAN, architectures.TORCH_STD


@keras.saving.register_keras_serializable(package="tl_core")
class Preprocess(keras.layers.Layer):
    """``keras.applications`` preprocess_input as a saveable layer (no Lambda, safe-mode loadable)."""

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "torch", "caffe", "builtin"):
            raise ValueError(f"Unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x / 255.0 - keras.ops.convert_to_tensor(TORCH_MEAN, self.compute_dtype)) / \
                keras.ops.convert_to_tensor(TORCH_STD, self.compute_dtype)
        if self.mode == "caffe":
            return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(CAFFE_MEAN, self.compute_dtype)
        return x  # builtin: the base rescales raw pixels itself

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class WeightsUnavailable(TLError):
    pass


def build_base(name: str, alpha: Optional[float], size: int, weights: Optional[str] = "imagenet"):
    """The headless base with its ImageNet weights from ``$KERAS_HOME/models`` (downloaded if missing
    and the network allows)."""
    arch = architectures.get(name)
    alpha = arch.check_alpha(alpha)
    constructor = getattr(keras.applications, arch.constructor)
    kwargs = dict(arch.constructor_kwargs(alpha), input_shape=(size, size, 3))
    if weights is None:
        return constructor(weights=None, **kwargs)
    local = architectures.find_weights(arch, alpha, size)
    if local is not None:
        return _with_local_weights(constructor, kwargs, local)
    wanted = architectures.weights_dir() / arch.weights_filename(alpha, size)
    try:
        return constructor(weights="imagenet", **kwargs)
    except Exception as exc:  # network failure, refused host, bad hash: all mean "not available"
        raise WeightsUnavailable(
            f"ImageNet weights for {arch.name}"
            f"{f' alpha={alpha}' if alpha else ''} are not on disk and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:200]}). Put the file {wanted.name!r} in {str(wanted.parent)!r} "
            "(set KERAS_HOME to use another folder) and try again.") from None


def _with_local_weights(constructor, kwargs: dict, local: Path):
    """The base with a weights file's values, set from a NumPy copy of them cached per file, base and Keras
    version (0.07 s for MobileNetV2 0.35; Keras' h5 loader took 0.3-0.4 s), made on first use."""
    key = hashlib.sha256(json.dumps([_file_hash(local), constructor.__name__, repr(sorted(kwargs.items())),
                                     keras.__version__]).encode()).hexdigest()[:20]
    copy = cache_dir() / "weights" / f"{key}.npz"
    base = constructor(weights=None, **kwargs)
    try:
        with np.load(copy) as saved:
            base.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
        return base
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, torn or stale: from the file
        pass
    base.load_weights(str(local))
    buffer = io.BytesIO()
    np.savez(buffer, **{f"w{i}": w for i, w in enumerate(base.get_weights())})
    atomic_write_bytes(copy, buffer.getvalue(), durable=False)
    return base


def weights_identity(cfg: TrainConfig) -> str:
    """What identifies the base's weights for caching: the file's hash, or 'random-<seed>'."""
    if cfg.weights is None:
        return f"random-{cfg.seed}"
    arch = architectures.get(cfg.base)
    local = architectures.find_weights(arch, cfg.alpha, cfg.size)
    if local is None:
        return "imagenet-download"
    return _file_hash(local)


def _file_hash(local: Path) -> str:
    """sha256 of a weights file, remembered per path, size and modification time."""
    stat = local.stat()
    memo_path = cache_dir() / "weights_hashes.json"
    memo = read_json(memo_path, {})
    key = f"{local}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        digest = hashlib.sha256()
        with open(local, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        memo[key] = digest.hexdigest()
        write_json(memo_path, memo)
    return memo[key]


def augmentation(cfg: TrainConfig, seed: int):
    steps = []
    if cfg.flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        steps.append(keras.layers.RandomRotation(cfg.rotation, seed=seed + 1))
    if cfg.zoom:
        steps.append(keras.layers.RandomZoom(cfg.zoom, seed=seed + 2))
    return keras.Sequential(steps, name="augmentation") if steps else None


@dataclass
class Built:
    model: "keras.Model"        # raw pixels -> class probabilities (what gets saved)
    base: "keras.Model"
    extractor: "keras.Model"    # raw pixels -> pooled features, sharing the base's layers
    frozen_layers: int


def build_classifier(cfg: TrainConfig, num_classes: int, with_augmentation: bool = True) -> Built:
    """The end-to-end classifier for a resolved config."""
    arch = architectures.get(cfg.base)
    keras.utils.set_random_seed(cfg.seed)
    base = build_base(arch.name, cfg.alpha, cfg.size, cfg.weights)
    frozen = freeze.apply(base, cfg.freeze_depth)
    preprocess = Preprocess(arch.preprocessing, name="preprocess")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")

    inputs = keras.Input(shape=(cfg.size, cfg.size, 3), name="pixels")
    x = inputs
    aug = augmentation(cfg, cfg.seed) if (with_augmentation and cfg.augment) else None
    if aug is not None:
        x = aug(x)
    x = pool(base(preprocess(x), training=False))
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"{arch.name}_classifier")

    ex_inputs = keras.Input(shape=(cfg.size, cfg.size, 3), name="pixels")
    extractor = keras.Model(ex_inputs, pool(base(preprocess(ex_inputs), training=False)), name="extractor")
    return Built(model, base, extractor, frozen)


def probabilities_by_class(classifier, features: np.ndarray, num_classes: int) -> np.ndarray:
    """A scikit-learn head's probabilities with one column per class of the run: ``predict_proba``'s
    columns follow the label indices the classifier saw (``classes_``), which can miss a class."""
    out = np.zeros((len(features), num_classes))
    if len(features):
        out[:, np.asarray(classifier.classes_, dtype=int)] = classifier.predict_proba(features)
    return out


_OPTIMIZER_FACTORIES = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
                        "rmsprop": keras.optimizers.RMSprop}


def make_optimizer(name: str, learning_rate: float):
    if name not in OPTIMIZERS:
        raise TLError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
    return _OPTIMIZER_FACTORIES[name](learning_rate=learning_rate)


def compile_classifier(model, optimizer: str, learning_rate: float, label_smoothing: float = 0.0,
                       num_classes: int = 2, jit_compile=False) -> None:
    metrics = ["accuracy"]
    if num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    loss = keras.losses.SparseCategoricalCrossentropy() if not label_smoothing else \
        keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=metrics,
                  jit_compile=jit_compile)


def parameter_counts(model) -> dict:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def suffix_model(built: "Built", frozen: int):
    """(prefix, suffix) models for a base cut after ``frozen`` layers, or None without a clean cut there.

    The prefix maps raw pixels to the cut tensor; the suffix maps it to class probabilities through
    the classifier's own layers (weights shared, so training the suffix trains the saved model)."""
    split = freeze.split_base(built.base, frozen)
    if split is None:
        return None
    prefix, cut = split
    inputs = keras.Input(shape=tuple(cut.shape[1:]), name="activations")
    x = freeze.replay_above(built.base, frozen, cut, inputs)
    x = built.model.get_layer("pool")(x)
    x = built.model.get_layer("dropout")(x)
    suffix = keras.Model(inputs, built.model.get_layer("predictions")(x), name="suffix")
    pixels = keras.Input(shape=built.model.input_shape[1:], name="pixels")
    prefix_full = keras.Model(pixels, prefix(built.model.get_layer("preprocess")(pixels)), name="prefix")
    return prefix_full, suffix


class CompiledForward:
    """One traced inference function for any batch size (``predict_on_batch`` retraces per new shape,
    about a second each on CPU). Numpy in, numpy out."""

    def __init__(self, model):
        import tensorflow as tf
        spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32)
        self._function = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                     reduce_retracing=True)

    def __call__(self, batch) -> np.ndarray:
        import tensorflow as tf
        return self._function(tf.convert_to_tensor(batch, tf.float32)).numpy()

    @property
    def traces(self) -> int:
        return self._function.experimental_get_tracing_count()


def compiled_forward(model) -> CompiledForward:
    return CompiledForward(model)
