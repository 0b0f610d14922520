"""The model zoo: a registry of ``keras.applications`` bases.

Each entry names its constructor, the preprocessing its ImageNet weights expect, its default input
size, which width multipliers (alpha) it has, and the weights file Keras looks for. Nothing here
imports TensorFlow or touches the network: whether weights are available offline is a file check in
``$KERAS_HOME/models``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tl_core.errors import TLError

# what each preprocessing mode subtracts and divides by (keras.applications' preprocess_input)
CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR order
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def _mobilenet_file(alpha: float, size: int) -> str:
    text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    return f"mobilenet_{text}_{size}_tf_no_top.h5"


def _mobilenet_v2_file(alpha: float, size: int) -> str:
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"


def _fixed(name: str) -> Callable[[float, int], str]:
    return lambda alpha, size: name


@dataclass(frozen=True)
class Architecture:
    """One base model.

    ``preprocessing`` is the ``keras.applications`` preprocess mode its weights expect:
    'tf' (scale to [-1, 1]), 'torch' (ImageNet mean/std), 'caffe' (BGR, mean-subtracted) or
    'builtin' (the model rescales raw 0-255 pixels itself).
    """

    name: str
    constructor: str  # attribute of keras.applications
    preprocessing: str
    default_size: int
    weights_file: Callable[[float, int], str]
    alphas: tuple = ()  # width multipliers with ImageNet weights; () = no alpha
    weight_sizes: tuple = ()  # input sizes Keras has weight files for (alpha models)
    min_size: int = 32
    family: str = ""
    params: int = 0  # no-top parameters at the default alpha (for listings)

    @property
    def default_alpha(self) -> Optional[float]:
        return 1.0 if self.alphas else None

    def check_alpha(self, alpha: Optional[float]) -> Optional[float]:
        if not self.alphas:
            if alpha not in (None, 1.0):
                raise TLError(f"{self.name} has no width multiplier; got alpha={alpha!r}. Leave --alpha out.")
            return None
        alpha = self.default_alpha if alpha is None else float(alpha)
        if alpha not in self.alphas:
            raise TLError(f"{self.name} has ImageNet weights for alpha in {list(self.alphas)}; got alpha={alpha!r}.")
        return alpha

    def check_size(self, size: Optional[int]) -> int:
        size = self.default_size if size is None else int(size)
        if size < self.min_size or size > 1024:
            raise TLError(f"{self.name} needs an input size between {self.min_size} and 1024 pixels; got {size!r}.")
        return size

    def weights_filename(self, alpha: Optional[float], size: int) -> str:
        """The file name Keras looks for in ``$KERAS_HOME/models`` for this alpha and size."""
        if self.weight_sizes:
            size = size if size in self.weight_sizes else 224  # Keras falls back to its 224 file
        return self.weights_file(alpha, size)

    def constructor_kwargs(self, alpha: Optional[float]) -> dict:
        kwargs = {"include_top": False}
        if self.alphas:
            kwargs["alpha"] = alpha
        return kwargs


def _v3(kind: str) -> Callable[[float, int], str]:
    return lambda alpha, size: f"weights_mobilenet_v3_{kind}_224_{alpha}_float_no_top_v2.h5"


_MOBILENET_SIZES = (128, 160, 192, 224)
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
_ENTRIES = [
    Architecture(
        "MobileNetV2",
        "MobileNetV2",
        "tf",
        224,
        _mobilenet_v2_file,
        (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        _MOBILENET_V2_SIZES,
        params=2_257_984,
        family="MobileNet",
    ),
    Architecture(
        "MobileNet",
        "MobileNet",
        "tf",
        224,
        _mobilenet_file,
        (0.25, 0.5, 0.75, 1.0),
        _MOBILENET_SIZES,
        params=3_228_864,
        family="MobileNet",
    ),
    Architecture(
        "MobileNetV3Small",
        "MobileNetV3Small",
        "builtin",
        224,
        _v3("small"),
        (0.75, 1.0),
        params=939_120,
        family="MobileNet",
    ),
    Architecture(
        "MobileNetV3Large",
        "MobileNetV3Large",
        "builtin",
        224,
        _v3("large"),
        (0.75, 1.0),
        params=2_996_352,
        family="MobileNet",
    ),
    Architecture(
        "EfficientNetB0",
        "EfficientNetB0",
        "builtin",
        224,
        _fixed("efficientnetb0_notop.h5"),
        params=4_049_571,
        family="EfficientNet",
    ),
    Architecture(
        "EfficientNetB1",
        "EfficientNetB1",
        "builtin",
        240,
        _fixed("efficientnetb1_notop.h5"),
        params=6_575_239,
        family="EfficientNet",
    ),
    Architecture(
        "EfficientNetB2",
        "EfficientNetB2",
        "builtin",
        260,
        _fixed("efficientnetb2_notop.h5"),
        params=7_768_569,
        family="EfficientNet",
    ),
    Architecture(
        "EfficientNetB3",
        "EfficientNetB3",
        "builtin",
        300,
        _fixed("efficientnetb3_notop.h5"),
        params=10_783_535,
        family="EfficientNet",
    ),
    Architecture(
        "EfficientNetV2B0",
        "EfficientNetV2B0",
        "builtin",
        224,
        _fixed("efficientnetv2-b0_notop.h5"),
        params=5_919_312,
        family="EfficientNet",
    ),
    Architecture(
        "ResNet50",
        "ResNet50",
        "caffe",
        224,
        _fixed("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        params=23_587_712,
        family="ResNet",
    ),
    Architecture(
        "ResNet50V2",
        "ResNet50V2",
        "tf",
        224,
        _fixed("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        params=23_564_800,
        family="ResNet",
    ),
    Architecture(
        "VGG16",
        "VGG16",
        "caffe",
        224,
        _fixed("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        params=14_714_688,
        family="VGG",
    ),
    Architecture(
        "VGG19",
        "VGG19",
        "caffe",
        224,
        _fixed("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        params=20_024_384,
        family="VGG",
    ),
    Architecture(
        "InceptionV3",
        "InceptionV3",
        "tf",
        299,
        _fixed("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        min_size=75,
        params=21_802_784,
        family="Inception",
    ),
    Architecture(
        "Xception",
        "Xception",
        "tf",
        299,
        _fixed("xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        min_size=71,
        params=20_861_480,
        family="Inception",
    ),
    Architecture(
        "DenseNet121",
        "DenseNet121",
        "torch",
        224,
        _fixed("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        params=7_037_504,
        family="DenseNet",
    ),
    Architecture(
        "ConvNeXtTiny",
        "ConvNeXtTiny",
        "builtin",
        224,
        _fixed("convnext_tiny_notop.h5"),
        params=27_820_128,
        family="ConvNeXt",
    ),
]
REGISTRY: dict[str, Architecture] = {entry.name.lower(): entry for entry in _ENTRIES}


def names() -> list[str]:
    return [entry.name for entry in _ENTRIES]


def get(name: str) -> Architecture:
    """Look up a base by its keras.applications name, case-insensitively."""
    try:
        return REGISTRY[str(name).lower().replace("_", "").replace("-", "")]
    except KeyError:
        raise TLError(f"Unknown base model {name!r}. Choose one of: {', '.join(names())}.") from None


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()


def weights_dir() -> Path:
    return keras_home() / "models"


def find_weights(arch: Architecture, alpha: Optional[float], size: int) -> Optional[Path]:
    """The ImageNet weights file on disk for this base, or None. No network call.

    No-top convolution weights do not depend on the input size, so an alpha model whose file for
    this size is missing may use the file saved for another size.
    """
    folder = weights_dir()
    exact = folder / arch.weights_filename(alpha, size)
    if exact.is_file():
        return exact
    for other in (224,) + tuple(s for s in arch.weight_sizes if s != 224):
        candidate = folder / arch.weights_filename(alpha, other)
        if candidate.is_file():
            return candidate
    return None


def availability() -> list[dict]:
    """Each base's metadata and whether some alpha of it has weights on disk."""
    rows = []
    for entry in _ENTRIES:
        alphas = entry.alphas or (None,)
        offline = [a for a in alphas if find_weights(entry, a, entry.default_size)]
        rows.append(
            {
                "name": entry.name,
                "family": entry.family,
                "default_size": entry.default_size,
                "params": entry.params,
                "default_alpha": entry.default_alpha,
                "preprocessing": entry.preprocessing,
                "alphas": list(entry.alphas),
                "offline_alphas": offline if entry.alphas else [],
                "weights_offline": bool(offline),
            }
        )
    return rows
