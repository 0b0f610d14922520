"""Preprocessing: raw RGB pixels (0-255) to what a base's ImageNet weights expect, one definition per mode.

Every mode is a per-channel affine map, optionally after reordering the channels: ``out[..., c] =
pixels[..., order[c]] * scale[c] + offset[c]``. ``MODES`` holds that table; everything that preprocesses
derives from it: the Keras ``Preprocess`` layer saved inside every trained model, ``pixel_affine`` (the
same map as a built-in ``Dense(3)`` for exports), and ``preprocess_pixels`` (NumPy, for classifiers run
outside Keras, such as float TFLite models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from tl_core.errors import TLError
from tl_core.models.architectures import CAFFE_MEAN, TORCH_MEAN, TORCH_STD

RGB = (0, 1, 2)


@dataclass(frozen=True)
class PixelMap:
    """``out[..., c] = pixels[..., order[c]] * scale[c] + offset[c]`` (keras.applications' preprocess_input)."""

    order: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    @property
    def identity(self) -> bool:
        return self.order == RGB and self.scale == (1.0,) * 3 and self.offset == (0.0,) * 3


MODES: dict[str, PixelMap] = {
    "tf": PixelMap(RGB, (1 / 127.5,) * 3, (-1.0,) * 3),  # to [-1, 1]
    "torch": PixelMap(  # to [0, 1], then ImageNet's mean and standard deviation
        RGB, tuple(1 / (255.0 * s) for s in TORCH_STD), tuple(-m / s for m, s in zip(TORCH_MEAN, TORCH_STD))
    ),
    "caffe": PixelMap((2, 1, 0), (1.0,) * 3, tuple(-m for m in CAFFE_MEAN)),  # RGB -> BGR, ImageNet's mean off
    "builtin": PixelMap(RGB, (1.0,) * 3, (0.0,) * 3),  # the base rescales raw pixels itself
}


def pixel_map(mode: str) -> PixelMap:
    if mode not in MODES:
        raise TLError(f"Unknown preprocessing mode {mode!r}; choose one of {tuple(MODES)}.")
    return MODES[mode]


@keras.saving.register_keras_serializable(package="tl_core")
class Preprocess(keras.layers.Layer):
    """The mode's ``PixelMap`` as a saveable layer (no Lambda, safe-mode loadable). Its class name and
    config (``mode``) are what saved models name, so run folders of every age load."""

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        spec = MODES[self.mode]
        if spec.identity:
            return x
        if spec.order != RGB:
            x = keras.ops.take(x, list(spec.order), axis=-1)
        scale = keras.ops.convert_to_tensor(spec.scale, self.compute_dtype)
        return x * scale + keras.ops.convert_to_tensor(spec.offset, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def pixel_affine(mode: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The mode's map as ``pixels @ kernel + bias`` on the channel axis (None: the identity, the base takes
    raw pixels itself)."""
    spec = pixel_map(mode)
    if spec.identity:
        return None
    kernel = np.zeros((3, 3))
    for out, source in enumerate(spec.order):
        kernel[source, out] = spec.scale[out]
    return kernel, np.array(spec.offset)


def preprocess_pixels(pixels: np.ndarray, mode: str) -> np.ndarray:
    """The mode's map in NumPy: (..., 3) raw pixels -> float32, what the Keras layer computes."""
    spec = pixel_map(mode)
    x = np.asarray(pixels, dtype=np.float32)
    if spec.order != RGB:
        x = x[..., list(spec.order)]
    return x * np.asarray(spec.scale, np.float32) + np.asarray(spec.offset, np.float32)
