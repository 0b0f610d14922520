"""Export: a finished run's model in the formats teams deploy, each one raw RGB pixels in, probabilities out.

Every format is written from one *inference model* built here from the loaded-model handle: a per-pixel
affine layer that does the base's preprocessing (a plain ``Dense(3)``, so the file loads with stock Keras
and converts to any runtime), the base, global pooling and a softmax ``Dense`` head. A logistic-regression
head is baked into that dense layer (its scaler folded in); a kernel SVM cannot be a layer, so such a run
exports in no format. Beside each model: ``labels.txt`` and the model card. ``parity.py`` then checks the
export in its own runtime.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from . import model_card
from .architectures import CAFFE_MEAN, TORCH_MEAN, TORCH_STD
from .artifacts import EXPORT_FILES, EXPORT_LABELS
from .workspace import TLError

if TYPE_CHECKING:
    import keras

    from .model_handle import LoadedModel
    from .runs import Run

REPRESENTATIVE_IMAGES = 100   # training images that calibrate full-integer quantization
ONNX_OPSET = 17


@dataclass(frozen=True)
class ExportFormat:
    name: str
    filename: str       # the model's file (or folder) inside the export folder
    runtime: str        # where parity.py runs it
    description: str
    write: Callable[["keras.Model", Path, "Run"], None]


# ---------------------------------------------------------------- the inference model

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


def baked_head(loaded: "LoadedModel") -> tuple[np.ndarray, np.ndarray]:
    """The head as (kernel, bias) of a softmax dense layer over pooled features."""
    if loaded.sklearn_head is None:
        kernel, bias = loaded.model.get_layer("predictions").get_weights()
        return kernel, bias
    steps = getattr(loaded.sklearn_head, "named_steps", {})
    classifier = steps.get("logisticregression")
    if classifier is None:
        raise TLError("This run's head is an SVM (RBF kernel), which no export format can hold as a layer: "
                      "keras, saved_model, tflite, tflite-int8 and onnx all need a linear head. Retrain with the "
                      "Keras head or logistic regression, or use 'Download model (zip)' (model.keras + head.joblib) "
                      "from Python.")
    scaler = steps.get("standardscaler")
    coef, intercept = classifier.coef_.astype(np.float64), classifier.intercept_.astype(np.float64)
    if coef.shape[0] == 1:  # binary: softmax([0, z]) is (1 - sigmoid(z), sigmoid(z))
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    if scaler is not None:  # (x - mean) / scale, folded into the weights
        coef, intercept = coef / scaler.scale_, intercept - (coef / scaler.scale_) @ scaler.mean_
    num_classes = len(loaded.class_names)
    kernel = np.zeros((coef.shape[1], num_classes))
    bias = np.full(num_classes, -1e4)  # a class the classifier never saw gets probability 0, as in the app
    seen = np.asarray(classifier.classes_, dtype=int)
    kernel[:, seen], bias[seen] = coef.T, intercept
    return kernel.astype(np.float32), bias.astype(np.float32)


def inference_model(loaded: "LoadedModel") -> "keras.Model":
    """Raw RGB pixels (float32, 0-255, size x size x 3) -> class probabilities, in built-in layers only."""
    import keras
    kernel, bias = baked_head(loaded)
    size = loaded.input_size
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="pixels")
    x = inputs
    affine = pixel_affine(loaded.preprocess.mode)
    if affine is not None:
        layer = keras.layers.Dense(3, name="preprocess_pixels")
        x = layer(x)
        layer.set_weights([affine[0].astype(np.float32), affine[1].astype(np.float32)])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(loaded.base(x, training=False))
    head = keras.layers.Dense(len(loaded.class_names), activation="softmax", dtype="float32", name="predictions")
    outputs = head(x)
    head.set_weights([kernel, bias])
    return keras.Model(inputs, outputs, name=f"{loaded.base.name}_export")


# ---------------------------------------------------------------- writers

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


def representative_pixels(run: "Run", size: int, resize: str) -> np.ndarray:
    """Up to REPRESENTATIVE_IMAGES training images of the run's dataset, spread over its classes."""
    from .datasets import load_dataset
    from .images import load_batch
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


FORMATS = {f.name: f for f in (
    ExportFormat("keras", EXPORT_FILES["keras"], "keras", "Keras 3 model, built-in layers only", _keras),
    ExportFormat("saved_model", EXPORT_FILES["saved_model"], "tensorflow", "TensorFlow SavedModel (TF Serving)",
                 _saved_model),
    ExportFormat("tflite", EXPORT_FILES["tflite"], "litert", "TFLite, float32", _tflite),
    ExportFormat("tflite-int8", EXPORT_FILES["tflite-int8"], "litert", "TFLite, full-integer (uint8 in and out)",
                 _tflite_int8),
    ExportFormat("onnx", EXPORT_FILES["onnx"], "onnxruntime", f"ONNX (opset {ONNX_OPSET})", _onnx),
)}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise TLError(f"Unknown export format {name!r}; choose one of {', '.join(FORMATS)}.")
    return FORMATS[name]


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def export_run(run: "Run", fmt: str, out: Optional[Path] = None, check: bool = True) -> dict:
    """Write ``fmt`` for a finished run into ``out`` (default: the run's ``export/<fmt>``), with labels and
    model card; then, unless ``check`` is off, its parity. Returns what was written."""
    spec = get_format(fmt)
    if run.state != "finished" or not run.artifacts.has_model():
        raise TLError(f"Run {run.id!r} is {run.state}; only a finished run can be exported.")
    with run.artifacts.export_lock():
        loaded = run.artifacts.load()
        model = inference_model(loaded)
        folder = Path(out) if out else run.artifacts.export_dir(fmt)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / spec.filename
        staging = folder / f".partial-{spec.filename}"  # keeps the extension Keras checks
        _remove(staging)
        try:
            spec.write(model, staging, run)
            _remove(target)
            staging.rename(target)   # a failed conversion leaves the previous export in place
        finally:
            _remove(staging)
        (folder / EXPORT_LABELS).write_text("\n".join(loaded.class_names) + "\n", encoding="utf-8")
        result = {"run": run.id, "format": fmt, "path": str(target), "folder": str(folder)}
        if check:
            from .parity import check_export
            result["parity"] = check_export(run, fmt, target, loaded)
        model_card.write(run, folder, fmt, spec.description, loaded, result.get("parity"))
    return result
