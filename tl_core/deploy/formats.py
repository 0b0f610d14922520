"""Export formats, one registry: each format's file name, the runtime that checks it, its precision and
its writer.

A writer takes the inference model (``export.inference_model``), the target path and the run (the int8
writer calibrates on the run's training images). **A new format** is one ``ExportFormat`` entry here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tl_core.errors import TLError
from tl_core.runs.artifacts import EXPORT_FILES

if TYPE_CHECKING:
    import keras

    from tl_core.runs.store import Run

REPRESENTATIVE_IMAGES = 100  # training images that calibrate full-integer quantization
ONNX_OPSET = 17


@dataclass(frozen=True)
class ExportFormat:
    name: str
    filename: str  # the model's file (or folder) inside the export folder
    runtime: str  # where parity.py runs it
    description: str
    write: Callable[[keras.Model, Path, Run], None]
    precision: str = "float32"  # of its weights and activations; "int8": full-integer, uint8 pixels in and out

    @property
    def quantized(self) -> bool:
        """Integer arithmetic: it states its agreement with the float model instead of having to reach one."""
        return self.precision != "float32"


def _saved_model(model, target: Path, run=None) -> None:
    model.export(str(target), format="tf_saved_model", verbose=False)


def _keras(model, target: Path, run=None) -> None:
    model.save(target)


def _tflite_converter(model, scratch: Path):
    import tensorflow as tf

    _saved_model(model, scratch)  # Keras 3 models convert through their SavedModel
    return tf.lite.TFLiteConverter.from_saved_model(str(scratch))


def _tflite(model, target: Path, run=None) -> None:
    with tempfile.TemporaryDirectory(prefix="tl-export-") as scratch:
        target.write_bytes(_tflite_converter(model, Path(scratch) / "sm").convert())


def representative_pixels(run: Run, size: int, resize: str) -> np.ndarray:
    """Up to REPRESENTATIVE_IMAGES training images of the run's dataset, spread over its classes."""
    from tl_core.data.datasets import load_dataset
    from tl_core.data.images import load_batch

    dataset = load_dataset(run.config.data, missing="needed to calibrate the int8 export")
    items = dataset.split_items("train")
    step = max(1, len(items) // REPRESENTATIVE_IMAGES)
    chosen = items[::step][:REPRESENTATIVE_IMAGES]
    return load_batch([dataset.root / item["path"] for item in chosen], size, resize=resize)


def _tflite_int8(model, target: Path, run) -> None:
    """Full-integer: int8 weights and activations, uint8 pixels in, uint8 probabilities out (scale 1/256)."""
    import tensorflow as tf

    size = int(model.input_shape[1])
    calibration = representative_pixels(run, size, run.artifacts.model_info().get("resize", "crop"))

    def representative():
        for pixels in calibration:
            yield [pixels[None].astype(np.float32)]

    with tempfile.TemporaryDirectory(prefix="tl-export-") as scratch:
        converter = _tflite_converter(model, Path(scratch) / "sm")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        target.write_bytes(converter.convert())


def _onnx(model, target: Path, run=None) -> None:
    import tensorflow as tf
    import tf2onnx

    size = int(model.input_shape[1])
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=ONNX_OPSET, output_path=str(target))


FORMATS = {
    f.name: f
    for f in (
        ExportFormat("keras", EXPORT_FILES["keras"], "keras", "Keras 3 model, built-in layers only", _keras),
        ExportFormat(
            "saved_model", EXPORT_FILES["saved_model"], "tensorflow", "TensorFlow SavedModel (TF Serving)", _saved_model
        ),
        ExportFormat("tflite", EXPORT_FILES["tflite"], "litert", "TFLite, float32", _tflite),
        ExportFormat(
            "tflite-int8",
            EXPORT_FILES["tflite-int8"],
            "litert",
            "TFLite, full-integer (uint8 in and out)",
            _tflite_int8,
            precision="int8",
        ),
        ExportFormat("onnx", EXPORT_FILES["onnx"], "onnxruntime", f"ONNX (opset {ONNX_OPSET})", _onnx),
    )
}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise TLError(f"Unknown export format {name!r}; choose one of {', '.join(FORMATS)}.")
    return FORMATS[name]
