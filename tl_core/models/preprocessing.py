"""Preprocessing: raw RGB pixels (0-255) to what a base's ImageNet weights expect, inside the model."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from tl_core.models.architectures import CAFFE_MEAN, TORCH_MEAN, TORCH_STD


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
            return (
                x / 255.0 - keras.ops.convert_to_tensor(TORCH_MEAN, self.compute_dtype)
            ) / keras.ops.convert_to_tensor(TORCH_STD, self.compute_dtype)
        if self.mode == "caffe":
            return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(CAFFE_MEAN, self.compute_dtype)
        return x  # builtin: the base rescales raw pixels itself

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def pixel_affine(mode: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The base's preprocessing as ``pixels @ kernel + bias`` on the channel axis (None: the base takes
    raw pixels itself)."""
    if mode == "tf":
        return np.eye(3) / 127.5, -np.ones(3)
    if mode == "torch":
        std, mean = np.array(TORCH_STD), np.array(TORCH_MEAN)
        return np.diag(1.0 / (255.0 * std)), -mean / std
    if mode == "caffe":  # RGB -> BGR, then the mean subtracted
        return np.eye(3)[::-1], -np.array(CAFFE_MEAN)
    return None
