"""Pretrained classifiers used as they are, with their own ImageNet labels: no training.

Two kinds, one interface (``top_k(pixels_by_image)``): a ``keras.applications`` model with its top (weights
from ``$KERAS_HOME/models`` or downloaded; label names from ``imagenet_class_index.json`` beside them), or
a TFLite classifier with its labels file, run by LiteRT. A labels file one line longer than the model's
outputs, or a 1001-line file whose line 0 is "background" for a 1001-output model, works as it comes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tl_core.data.images import ImageSource, load_array, serve_pixel_cap
from tl_core.device import cpu_cores
from tl_core.errors import TLError
from tl_core.inference.topk import top_k as top_labels
from tl_core.models import architectures
from tl_core.models.litert import LiteRTModel

CLASS_INDEX = "imagenet_class_index.json"
FLOAT_TFLITE_PREPROCESSING = "tf"  # what float TFLite image classifiers (MobileNet's family) expect


def _softmax_if_logits(scores: np.ndarray) -> np.ndarray:
    """Probabilities as they come (renormalised: 8-bit outputs lose the mass of their smallest values), or
    softmax of logits."""
    sums = scores.sum(axis=1, keepdims=True)
    if np.all(scores >= 0) and np.all(scores <= 1) and np.all((sums > 0.75) & (sums < 1.25)):
        return scores / sums
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class PretrainedClassifier:
    labels: list[str]
    input_size: int

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def top_k(self, sources: Sequence[ImageSource], k: int = 3) -> list[list[dict]]:
        """Top-k labels for each image (raises ImageRejected on a bad one)."""
        cap = serve_pixel_cap()
        probs = self.probabilities(np.stack([load_array(s, self.input_size, "crop", cap) for s in sources]))
        return [top_labels(row, self.labels, k) for row in probs]


class TFLiteClassifier(PretrainedClassifier):
    def __init__(self, model: str | Path | bytes, labels: str | Path | bytes):
        self.model = LiteRTModel(model, cpu_cores())
        shape = self.model.input_shape
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise TLError(
                f"This TFLite model takes input of shape {list(shape)}; an image classifier taking "
                "square RGB images (1 x size x size x 3) is needed."
            )
        self.input_size = int(shape[1])
        text = labels.decode("utf-8", "replace") if isinstance(labels, bytes) else Path(labels).read_text("utf-8")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        outputs = self.model.outputs
        if len(names) == outputs + 1 and names[0].lower() == "background":
            names = names[1:]  # a background line the model has no output for
        if len(names) == outputs - 1:
            names = ["background"] + names  # the model's output 0 is background, the file lists 1000 classes
        if len(names) != outputs:
            raise TLError(
                f"The labels file has {len(names)} labels but the model has {outputs} outputs; use the "
                "labels file that came with the model (one label per line)."
            )
        self.labels = names
        self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8))  # runs at all?

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities; a model that loads but fails when run is a ``TLError`` that says so."""
        try:
            return self._probabilities(pixels)
        except (RuntimeError, ValueError) as exc:
            raise TLError(
                f"This TFLite model loaded but failed when run on an image ({type(exc).__name__}: "
                f"{str(exc)[:200]}). It may need operators or inputs this runtime lacks: check it with the tool "
                "that made it, or use another classifier."
            ) from None

    def _probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if self.model.input_dtype == np.float32:  # float MobileNet-style models take [-1, 1]
            from tl_core.models.preprocessing import preprocess_pixels  # imports Keras: only when needed

            data = preprocess_pixels(pixels, FLOAT_TFLITE_PREPROCESSING)
        else:  # quantized models take the pixels as they are; their own scale maps them
            data = np.asarray(pixels).astype(self.model.input_dtype)
        return _softmax_if_logits(np.asarray(self.model.run(data), dtype=np.float64))


class KerasApplicationClassifier(PretrainedClassifier):
    def __init__(self, base: str, alpha: Optional[float] = None):
        import keras

        arch = architectures.get(base)
        index_file = architectures.weights_dir() / CLASS_INDEX
        if not index_file.is_file():
            raise TLError(
                f"ImageNet label names are not on disk: put {CLASS_INDEX!r} in "
                f"{str(index_file.parent)!r} (beside the weights; set KERAS_HOME to use another folder)."
            )
        index = json.loads(index_file.read_text())
        self.labels = [index[str(i)][1] for i in range(len(index))]
        kwargs = dict(arch.constructor_kwargs(arch.check_alpha(alpha)), include_top=True, weights="imagenet")
        try:  # Keras looks in $KERAS_HOME/models first and downloads only what is missing
            self.model = getattr(keras.applications, arch.constructor)(**kwargs)
        except Exception as exc:
            raise TLError(
                f"ImageNet weights with the classification top for {arch.name} are not on disk and could "
                f"not be downloaded ({type(exc).__name__}: {str(exc)[:200]}). Put the file Keras names "
                f"there in {str(architectures.weights_dir())!r}, or use a TFLite classifier."
            ) from None
        self.input_size = int(self.model.input_shape[1])
        from tl_core.models.preprocessing import Preprocess

        self.preprocess = Preprocess(arch.preprocessing)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return _softmax_if_logits(
            np.asarray(self.model(self.preprocess(pixels.astype(np.float32)), training=False), dtype=np.float64)
        )


@dataclass(frozen=True)
class ServerClassifier:
    """A TFLite classifier an admin put on the server, with its labels file."""

    name: str
    model: Path
    labels: Path


def _labels_for(model: Path) -> Optional[Path]:
    """``<stem>.txt`` or ``<stem>_labels.txt`` beside the model, else the folder's one labels file."""
    for candidate in (model.with_suffix(".txt"), model.with_name(f"{model.stem}_labels.txt")):
        if candidate.is_file():
            return candidate
    shared = sorted(model.parent.glob("*labels*.txt"))
    return shared[0] if len(shared) == 1 else None


def server_classifiers() -> list[ServerClassifier]:
    """The TFLite classifiers in the folders ``TL_PRETRAINED_DIRS`` lists (separated like PATH), each with a
    labels file found beside it; a model without one is left out. Sorted by name."""
    found = []
    for folder in filter(None, os.environ.get("TL_PRETRAINED_DIRS", "").split(os.pathsep)):
        for model in sorted(Path(folder).expanduser().glob("*.tflite")):
            labels = _labels_for(model)
            if labels is not None:
                found.append(ServerClassifier(model.stem, model, labels))
    return sorted(found, key=lambda c: c.name)
