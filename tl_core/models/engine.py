"""The inference engine for frozen parts: LiteRT with XNNPACK on CPU hosts, TensorFlow on GPU hosts.

Everything that only runs a model forward (the feature cache, frozen-prefix activations, prediction,
evaluation) asks ``engine_for(model)`` for a callable ``pixels -> outputs``. On a CPU host the Keras
model is converted once to a LiteRT flatbuffer (its variables frozen to constants), cached under
``$TL_HOME/cache/engines/<key>.tflite``. The key is the feature cache's model key for a base that training
leaves untouched (base, weights file, size, decoding: so the feature pass can start before the Keras model
is built), else a digest of the graph's layers, input and output shapes and every weight, so a base, size,
cut or fine-tuned model never reads another's conversion.
A model that does not convert falls back to TensorFlow and says why (the engine's ``note``).
``agreement`` measures an engine against TensorFlow's own output on the same pixels.

``TL_ENGINE`` = auto (default: LiteRT unless a GPU is present) | litert | tensorflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from tl_core import device
from tl_core.errors import TLError
from tl_core.models.litert import LiteRTModel
from tl_core.workspace import atomic_write_bytes, cache_dir

SETTINGS = ("auto", "litert", "tensorflow")
TF_BATCH = 64


def setting() -> str:
    value = os.environ.get("TL_ENGINE", "auto").strip().lower() or "auto"
    if value not in SETTINGS:
        raise TLError(f"TL_ENGINE={value!r} is not an engine; use one of {SETTINGS}.")
    return value


def wanted() -> str:
    """The engine this host should use: LiteRT on CPU hosts (much faster than TensorFlow there), TensorFlow on GPUs."""
    choice = setting()
    if choice == "auto":
        return "tensorflow" if device.gpu_names() else "litert"
    return choice


class TensorFlowEngine:
    """Batches of TF_BATCH through one compiled function; on a GPU the device is the one lane."""

    name = "tensorflow"
    lane_count = 1

    def __init__(self, model, note: Optional[str] = None):
        from tl_core.models.modeling import compiled_forward

        self._forward = compiled_forward(model)
        self.note = note

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        outputs = [
            self._forward(np.asarray(pixels[i : i + TF_BATCH], dtype=np.float32))
            for i in range(0, len(pixels), TF_BATCH)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


class LiteRTEngine:
    """Batch-1 interpreters (``litert.LiteRTModel``). A single image runs on one interpreter using every
    core (lowest latency: Predict, the REST server). Batches run on *lanes*, one single-threaded interpreter
    per core, each taking its own images: XNNPACK's thread pool splits every layer between the cores and
    waits for both at each one, so a decoding thread on either core stalls every layer; beside decoding (the
    feature pass) the lanes are faster, alone the same (docs/performance.md). Many app sessions share a
    loaded model: the interpreter is locked and a lane serves one caller at a time."""

    name = "litert-xnnpack"

    def __init__(self, path: Path, threads: Optional[int] = None):
        self.note = None
        self._path = path
        self.lane_count = threads or device.cpu_cores()
        self._interpreter = LiteRTModel(path, self.lane_count)
        self._lock = threading.Lock()
        self._lanes: Optional[queue.Queue] = None  # made at the first batch
        self._lanes_lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The conversion this engine runs."""
        return self._path

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, dtype=np.float32)
        if len(pixels) == 0:
            return np.zeros((0,), np.float32)
        if len(pixels) == 1 or self.lane_count == 1:
            with self._lock:
                return self._interpreter.run(pixels)
        parts = np.array_split(pixels, min(self.lane_count, len(pixels)))
        with ThreadPoolExecutor(len(parts)) as pool:
            return np.concatenate(list(pool.map(self.in_lane, parts)))

    def in_lane(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` through a free single-threaded lane, in the calling thread (waits while all are busy)."""
        with self._lanes_lock:
            if self._lanes is None:
                self._lanes = queue.Queue()
                for _ in range(self.lane_count):
                    self._lanes.put(LiteRTModel(self._path, 1))
        lane = self._lanes.get()
        try:
            return lane.run(np.asarray(pixels, dtype=np.float32))
        finally:
            self._lanes.put(lane)


def digest(model) -> str:
    """What determines a model's outputs: its layers, shapes and weights."""
    hasher = hashlib.sha256()
    shape = lambda tensor: [int(d) if d is not None else None for d in tensor.shape]
    hasher.update(
        json.dumps(
            {
                "layers": [layer.name for layer in model.layers],
                "inputs": [shape(t) for t in model.inputs],
                "outputs": [shape(t) for t in model.outputs],
            }
        ).encode()
    )
    for weight in model.weights:
        hasher.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return hasher.hexdigest()[:24]


def convert(model) -> bytes:
    """A LiteRT flatbuffer of ``model`` (raw float pixels of any batch size in). Variables are frozen to
    constants first: converting the traced function directly was several times slower and lost the weights."""
    import tensorflow as tf

    # TensorFlow's private module, used here only; test_engine fails (LiteRT expected) if an upgrade moves it
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()


def conversion_path(key: str) -> Path:
    return cache_dir() / "engines" / f"{key}.tflite"


def cached_conversion(key: str) -> Optional[Path]:
    """The LiteRT conversion named ``key``, when this host runs LiteRT and it is on disk."""
    path = conversion_path(key)
    return path if wanted() == "litert" and path.is_file() else None


def engine_for(model, log=None, key: Optional[str] = None):
    """The fastest engine for this host running ``model``; ``log`` hears the fallback note, if any.
    ``key`` names the conversion when the caller knows what determines the model's outputs (the feature
    cache's model key): hashing the weights is skipped, and a cached conversion needs no model at all."""
    if wanted() == "tensorflow":
        return TensorFlowEngine(model)
    path = conversion_path(key or digest(model))
    try:
        if not path.is_file():
            atomic_write_bytes(path, convert(model), durable=False)
        return LiteRTEngine(path)
    except Exception as exc:  # any converter or runtime failure: TensorFlow computes the same thing
        note = (
            f"engine: {model.name!r} did not convert to LiteRT ({type(exc).__name__}: {str(exc)[:200]}); "
            "running it with TensorFlow"
        )
        if log:
            log(note)
        return TensorFlowEngine(model, note=note)


def reference_outputs(model, pixels: np.ndarray) -> np.ndarray:
    """TensorFlow's own outputs of ``model`` on ``pixels``: what an engine is measured against."""
    return np.asarray(model(np.asarray(pixels, dtype=np.float32), training=False), dtype=np.float64)


def agreement(engine, model, pixels: np.ndarray, head=None, reference: Optional[np.ndarray] = None) -> dict:
    """How closely ``engine`` reproduces TensorFlow on ``pixels``: the largest difference of any output
    relative to that image's largest output, and with ``head`` (outputs -> class probabilities) the
    share of images whose top class is the same. ``reference``: TensorFlow's outputs, if already computed."""
    reference = reference_outputs(model, pixels) if reference is None else reference
    got = np.asarray(engine(pixels), dtype=np.float64)
    axes = tuple(range(1, reference.ndim))
    scale = np.maximum(np.abs(reference).max(axis=axes), 1e-12)
    result = {
        "engine": engine.name,
        "images": int(len(pixels)),
        "max_rel_diff": float((np.abs(got - reference).max(axis=axes) / scale).max()) if len(pixels) else 0.0,
    }
    if head is not None and len(pixels):
        result["top1_agreement"] = float((head(got).argmax(axis=1) == head(reference).argmax(axis=1)).mean())
    return result
