"""Model building: raw pixels in, preprocessing inside, a (partly) frozen base, a new head.

The model takes float pixels in 0..255, so training and prediction cannot disagree on
preprocessing. The base is called with ``training=False`` and its BatchNorm layers stay frozen at
every freeze depth, so they keep ImageNet statistics (inference mode) also while fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tl_core.errors import TLError
from tl_core.models import architectures, freeze
from tl_core.models.bases import build_base
from tl_core.models.config import OPTIMIZERS, TrainConfig
from tl_core.models.preprocessing import Preprocess


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
    model: keras.Model  # raw pixels -> class probabilities (what gets saved)
    base: keras.Model
    extractor: keras.Model  # raw pixels -> pooled features, sharing the base's layers
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


_OPTIMIZER_FACTORIES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
    "rmsprop": keras.optimizers.RMSprop,
}


def make_optimizer(name: str, learning_rate: float):
    if name not in OPTIMIZERS:
        raise TLError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
    return _OPTIMIZER_FACTORIES[name](learning_rate=learning_rate)


def compile_classifier(
    model, optimizer: str, learning_rate: float, label_smoothing: float = 0.0, num_classes: int = 2, jit_compile=False
) -> None:
    metrics = ["accuracy"]
    if num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    loss = (
        keras.losses.SparseCategoricalCrossentropy()
        if not label_smoothing
        else keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    )
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=metrics, jit_compile=jit_compile
    )


def parameter_counts(model) -> dict:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def suffix_model(built: Built, frozen: int):
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
        self._function = tf.function(lambda x: model(x, training=False), input_signature=[spec], reduce_retracing=True)

    def __call__(self, batch) -> np.ndarray:
        import tensorflow as tf

        return self._function(tf.convert_to_tensor(batch, tf.float32)).numpy()

    @property
    def traces(self) -> int:
        return self._function.experimental_get_tracing_count()


def compiled_forward(model) -> CompiledForward:
    return CompiledForward(model)
