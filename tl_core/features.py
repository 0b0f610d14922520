"""The feature cache: a frozen base's pooled output, computed once per image and reused.

Entries are keyed by what determines them: the base, alpha, input size, a hash of the weights file
and Keras version (the *model key*), the image's content hash, and for augmented views the view
number and augmentation settings. A changed image, weights file or size gives a new key, so a stale
entry is never read. Augmented views are drawn deterministically from (image hash, view number, seed).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import keras
import numpy as np
from PIL import Image, ImageOps

from .config import TrainConfig
from .images import load_rgb, to_array
from .modeling import compiled_forward, weights_identity
from .workspace import atomic_write_bytes, cache_dir

Progress = Optional[Callable[[int, int], None]]


def model_key(cfg: TrainConfig) -> str:
    ident = {"base": cfg.base, "alpha": cfg.alpha, "size": cfg.size, "weights": weights_identity(cfg),
             "keras": keras.__version__, "pooling": "avg", "resize": cfg.resize}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def augmentation_key(cfg: TrainConfig) -> str:
    ident = {"flip": cfg.flip, "rotation": cfg.rotation, "zoom": cfg.zoom, "seed": cfg.seed, "v": 1}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def augmented_view(image: Image.Image, size: int, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """One random flip / rotation / zoom of an image, like the Keras layers the plain path uses."""
    if cfg.flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if cfg.rotation:
        angle = float(rng.uniform(-cfg.rotation, cfg.rotation)) * 360.0
        width, height = image.size
        pad = max(width, height) // 4
        padded = Image.fromarray(np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
        image = padded.rotate(angle, resample=Image.Resampling.BILINEAR).crop(
            (pad, pad, pad + width, pad + height))
    if cfg.zoom:
        scale = float(rng.uniform(1.0 - cfg.zoom, 1.0))
        width, height = image.size
        crop_w, crop_h = max(1, int(width * scale)), max(1, int(height * scale))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        image = image.crop((left, top, left + crop_w, top + crop_h))
    return to_array(image, size, cfg.resize)


class FeatureCache:
    """Pooled features of one frozen base, on disk under ``$TL_HOME/cache/features/<model key>/``."""

    def __init__(self, cfg: TrainConfig, extractor, batch_size: int = 64):
        self.cfg = cfg
        self.extractor = extractor
        self.forward = compiled_forward(extractor)
        self.batch_size = batch_size
        self.key = model_key(cfg)
        self.aug_key = augmentation_key(cfg)
        self.root = cache_dir() / "features" / self.key
        self.computed = 0   # forward passes this object ran (cache misses)
        self.reused = 0     # entries read from disk

    def _path(self, sha: str, view: int) -> Path:
        name = f"{sha}.v0.npy" if view == 0 else f"{sha}.{self.aug_key}.v{view}.npy"
        return self.root / sha[:2] / name

    def _pixels(self, source: Path, sha: str, view: int) -> np.ndarray:
        image = load_rgb(source)
        if view == 0:
            return to_array(image, self.cfg.size, self.cfg.resize)
        seed = int(sha[:12], 16) ^ (view * 7919) ^ self.cfg.seed
        return augmented_view(image, self.cfg.size, np.random.default_rng(seed), self.cfg)

    def features(self, sources: Sequence[Path], shas: Sequence[str], views: int = 1,
                 progress: Progress = None, should_stop: Optional[Callable[[], bool]] = None) -> np.ndarray:
        """Array (N, views, D): view 0 is the plain image, views 1.. augmented."""
        jobs = [(i, v) for i in range(len(sources)) for v in range(views)]
        result: dict[tuple[int, int], np.ndarray] = {}
        missing = []
        for job in jobs:
            path = self._path(shas[job[0]], job[1])
            if path.is_file():
                try:
                    result[job] = np.load(path)
                    self.reused += 1
                    continue
                except (OSError, ValueError):
                    pass  # unreadable entry: recompute it
            missing.append(job)
        done = len(jobs) - len(missing)
        if progress:
            progress(done, len(jobs))
        from concurrent.futures import ThreadPoolExecutor
        chunks = [missing[start:start + self.batch_size] for start in range(0, len(missing), self.batch_size)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            decode = lambda chunk: [pool.submit(self._pixels, sources[i], shas[i], v) for i, v in chunk]
            pending = decode(chunks[0]) if chunks else []
            for index, chunk in enumerate(chunks):
                if should_stop and should_stop():
                    raise InterruptedError("cancelled while computing features")
                pixels = np.stack([future.result() for future in pending])
                # decode the next batch while the base runs on this one
                pending = decode(chunks[index + 1]) if index + 1 < len(chunks) else []
                output = np.asarray(self.forward(pixels), dtype=np.float32)
                for job, vector in zip(chunk, output):
                    result[job] = vector
                    self._store(self._path(shas[job[0]], job[1]), vector)
                self.computed += len(chunk)
                done += len(chunk)
                if progress:
                    progress(done, len(jobs))
        dim = next(iter(result.values())).shape[-1] if result else 0
        out = np.zeros((len(sources), views, dim), dtype=np.float32)
        for (i, v), vector in result.items():
            out[i, v] = vector
        return out

    @staticmethod
    def _store(path: Path, vector: np.ndarray) -> None:
        import io
        buffer = io.BytesIO()
        np.save(buffer, vector.astype(np.float32))
        atomic_write_bytes(path, buffer.getvalue(), durable=False)
