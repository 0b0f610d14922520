"""Parity: an export run in its own runtime on the run's validation images, against the in-app model.

The in-app model is the run's calibrated one (its temperature is inside the model, ``LoadedModel``), and so
is every export: the probabilities compared are the ones users get everywhere.

Each runtime is loaded the way a deployment would load it (Keras, TensorFlow's SavedModel loader,
LiteRT's interpreter, onnxruntime), fed the same raw pixels the app feeds its model, and compared on
top-1 agreement, accuracy and the largest probability difference. The result goes to the run's
``export/parity.json``. Float formats must agree on at least ``FLOAT_AGREEMENT`` of the images;
full-integer quantization (``ExportFormat.quantized``) states its agreement and accuracy drop.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tl_core.clock import now_iso
from tl_core.device import cpu_cores
from tl_core.errors import TLError

if TYPE_CHECKING:
    from tl_core.deploy.formats import ExportFormat
    from tl_core.runs.loaded_model import LoadedModel
    from tl_core.runs.store import Run

FLOAT_AGREEMENT = 0.995
BATCH = 16
Forward = Callable[[np.ndarray], np.ndarray]  # float32 pixels (N, size, size, 3) -> probabilities (N, classes)


def _batched(call: Forward) -> Forward:
    def forward(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [np.asarray(call(pixels[i : i + BATCH]), dtype=np.float64) for i in range(0, len(pixels), BATCH)]
        )

    return forward


def _keras(path: Path) -> Forward:
    import keras

    model = keras.models.load_model(path, safe_mode=True, compile=False)
    return _batched(lambda x: model(x, training=False))


def _tensorflow(path: Path) -> Forward:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return _batched(lambda x: next(iter(serve(tf.constant(x)).values())).numpy())


def _litert(path: Path) -> Forward:
    from tl_core.models.litert import LiteRTModel

    model = LiteRTModel(path, cpu_cores())  # an integer model's pixels are quantized as the converter asked
    return lambda x: np.asarray(model.run(x), dtype=np.float64)


def _onnxruntime(path: Path) -> Forward:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _batched(lambda x: session.run(None, {name: x})[0])


RUNTIMES = {
    "keras": (_keras, "keras"),
    "tensorflow": (_tensorflow, "tensorflow"),
    "litert": (_litert, "ai-edge-litert"),
    "onnxruntime": (_onnxruntime, "onnxruntime"),
}


def load_runtime(runtime: str, path: Path) -> Forward:
    return RUNTIMES[runtime][0](path)


def validation_pixels(run: Run, loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The run's own validation images (as evaluated after training) and their labels."""
    from tl_core.data.datasets import load_dataset
    from tl_core.data.images import load_batch

    interp = run.interpretation()
    if interp is None or not len(interp.files):
        raise TLError(f"Run {run.id!r} has no validation predictions to check an export against.")
    dataset = load_dataset(run.config.data, missing="needed to check the export on its validation images")
    pixels = load_batch([dataset.root / f for f in interp.files], loaded.input_size, resize=loaded.resize)
    return pixels, np.asarray(interp.y_true)


def check_export(run: Run, spec: ExportFormat, path: Path, loaded: LoadedModel) -> dict:
    """Run the export at ``path`` in its runtime, compare with ``loaded``, record and return the result."""
    fmt = spec.name
    pixels, labels = validation_pixels(run, loaded)
    reference = loaded.probabilities(pixels)
    exported = load_runtime(spec.runtime, path)(pixels.astype(np.float32))
    if exported.shape != reference.shape:
        raise TLError(f"The {fmt} export returned shape {exported.shape}, expected {reference.shape}.")
    agreement = float(np.mean(exported.argmax(1) == reference.argmax(1)))
    accuracy, reference_accuracy = (
        float(np.mean(exported.argmax(1) == labels)),
        float(np.mean(reference.argmax(1) == labels)),
    )
    float_format = not spec.quantized
    entry = {
        "format": fmt,
        "runtime": spec.runtime,
        "runtime_version": metadata.version(RUNTIMES[spec.runtime][1]),
        "precision": spec.precision,
        "temperature": run.artifacts.metrics().get("temperature", 1.0),  # inside the export and the reference
        "images": int(len(labels)),
        "agreement": agreement,
        "accuracy": accuracy,
        "reference_accuracy": reference_accuracy,
        "accuracy_drop": reference_accuracy - accuracy,
        "max_abs_diff": float(np.max(np.abs(exported - reference))),
        "required_agreement": FLOAT_AGREEMENT if float_format else None,
        "passed": (agreement >= FLOAT_AGREEMENT) if float_format else None,
        "file_bytes": _size(path),
        "checked_at": now_iso(),
    }
    run.artifacts.record_parity(fmt, entry)
    return entry


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
