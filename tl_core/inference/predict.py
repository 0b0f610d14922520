"""Prediction: load a finished run once, then classify files, bytes or PIL images in batches.

Images are decoded exactly as in training (``images.py``); preprocessing is inside the saved model.
One compiled forward function per loaded model is reused for every call, so a single image costs
one graph execution, not a fresh ``model.predict`` set-up. The probabilities are the loaded model's,
calibrated as in every other use of the run (``LoadedModel``): no temperature step here. A loaded
predictor is shared by every user of the app, so it remembers the probabilities of the last images it
saw (by content): a page rerun that shows the same uploads again, or adds one, computes only what is new.

Each answer also says whether the image falls outside what the run was trained on (``runs/scope.py``):
``"unknown"`` true or false, with its ``"distance"`` from the training images, both null for a run trained
before scopes existed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Optional

import numpy as np

from tl_core.data.images import ImageRejected, ImageSource, load_array, load_batch, serve_pixel_cap
from tl_core.inference.topk import top_k as top_labels
from tl_core.runs.loaded_model import LoadedModel
from tl_core.runs.scope import Scope, scope_for
from tl_core.runs.store import Run, get_run


class Predictor:
    remembered = 4096  # images whose probabilities are kept (a few floats each)

    def __init__(self, loaded: LoadedModel, scope: Optional[Scope] = None):
        self.loaded = loaded
        self.scope = scope  # None: a run without a scope, whose answers' unknown flag is null
        self.class_names = loaded.class_names
        self.input_size = loaded.input_size
        self.resize = loaded.resize
        loaded.warm_up()
        self._seen: OrderedDict[str, tuple] = OrderedDict()  # key -> (probabilities, distance)
        self._seen_lock = threading.Lock()  # many Streamlit sessions share one predictor

    @classmethod
    def from_run(cls, run) -> Predictor:
        run = run if isinstance(run, Run) else get_run(run)
        return cls(run.load_model(), scope_for(run))

    def probabilities(self, pixels: np.ndarray, tta: str = "none") -> np.ndarray:
        """(N, size, size, 3) raw pixels -> (N, classes) calibrated probabilities (averaged over test-time
        augmentation views when ``tta`` asks)."""
        from tl_core.inference import tta as test_time

        return test_time.averaged(self.loaded.probabilities, pixels, tta)

    def probabilities_and_distances(self, pixels: np.ndarray, tta: str = "none") -> tuple[np.ndarray, list]:
        """(probabilities as ``probabilities`` gives them, each image's distance from the training images or
        None without a scope), from one forward pass when there is no test-time augmentation."""
        if self.scope is None:
            return self.probabilities(pixels, tta=tta), [None] * len(pixels)
        features = self.loaded.features(pixels)
        probs = (
            self.loaded.head_probabilities(features).astype(np.float64)
            if tta == "none"
            else self.probabilities(pixels, tta=tta)
        )
        return probs, [float(d) for d in self.scope.distances(features)]

    def unknown(self, distance: Optional[float], keep: Optional[float] = None) -> Optional[bool]:
        """Whether an image at ``distance`` is outside the run's scope (beyond the threshold keeping ``keep`` of
        the validation images; default the run's own); None when not measured."""
        if distance is None or self.scope is None:
            return None
        threshold = self.scope.threshold if keep is None else self.scope.threshold_for(keep)
        return bool(distance > threshold)

    def _top(self, row: np.ndarray, top_k: int) -> list[dict]:
        return top_labels(row, self.class_names, top_k)

    def predict(self, sources: Sequence[ImageSource], top_k: int = 3, tta: str = "none") -> list[list[dict]]:
        """Top-k labels with probabilities for each image (raises ImageRejected on a bad image)."""
        pixels = load_batch(sources, self.input_size, resize=self.resize, max_pixels=serve_pixel_cap())
        probs = self.probabilities(pixels, tta=tta)
        return [self._top(row, top_k) for row in probs]

    def predict_each(
        self, sources: Sequence[ImageSource], top_k: int = 3, tta: str = "none", keep: Optional[float] = None
    ) -> list[dict]:
        """Like ``predict`` but one bad image does not sink the batch: each result has ``top_k``, ``unknown``
        and ``distance`` (``keep``: the share of validation images the unknown threshold keeps), or ``error``."""
        results: list[dict] = [{} for _ in sources]
        keys = [
            f"{tta}:{hashlib.sha256(s).hexdigest()}" if isinstance(s, (bytes, bytearray)) else None for s in sources
        ]
        with self._seen_lock:
            known = {i: self._seen[k] for i, k in enumerate(keys) if k in self._seen}
        pixels, new = [], []
        for index, source in enumerate(sources):
            if index in known:
                continue
            try:
                pixels.append(load_array(source, self.input_size, self.resize, serve_pixel_cap()))
                new.append(index)
            except ImageRejected as exc:
                results[index] = {"error": str(exc)}
        if new:
            rows, distances = self.probabilities_and_distances(np.stack(pixels), tta=tta)
            with self._seen_lock:
                for index, row, distance in zip(new, rows, distances):
                    known[index] = (row, distance)
                    if keys[index] is not None:
                        self._seen[keys[index]] = (row, distance)
                        self._seen.move_to_end(keys[index])
                while len(self._seen) > self.remembered:
                    self._seen.popitem(last=False)
        for index, (row, distance) in known.items():
            results[index] = {
                "top_k": self._top(row, top_k),
                "unknown": self.unknown(distance, keep),
                "distance": None if distance is None else round(distance, 6),
            }
        return results
